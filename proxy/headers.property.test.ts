// Property tests for the header sanitizer (HARDENING.md bad input #6, #7, #8): what crosses the sidecar, for any header map.
import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { requestHeadersForUpstream, responseHeadersForClient } from './headers.js';

const RUNS = 2_000;

/** RFC 9110 §7.6.1 and the RFC 2616 §13.5.1 list proxies still honour (proxy-authorization must never leak upstream). */
const HOP_BY_HOP = [
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization',
  'proxy-authenticate', 'http2-settings',
];
/** Fields the sidecar recomputes for the upstream request. */
const RECOMPUTED = ['host', 'expect', 'content-length'];

const TCHAR = '!#$%&\'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const token = fc.string({ unit: fc.constantFrom(...TCHAR), minLength: 1, maxLength: 12 });

/** A name as a client might spell it, before Node's parser lower-cases it. */
const rawName = fc.oneof(
  fc.constantFrom(...HOP_BY_HOP, ...RECOMPUTED, 'close', 'x-forwarded-client-cert', 'x-request-id', 'accept', 'cookie', 'set-cookie', 'x-secret', '__proto__', 'constructor'),
  token.map((t) => `x-mesh-${t}`),
  fc.tuple(token, token).map(([a, b]) => `${a}_${b}`),
  token,
).chain((n) => fc.array(fc.boolean(), { minLength: n.length, maxLength: n.length })
  .map((up) => [...n].map((c, i) => (up[i] ? c.toUpperCase() : c)).join('')));

/** Field values as Node hands them over: no CR, LF or NUL; leading and trailing whitespace already trimmed. */
const value = fc.string({ unit: fc.oneof(fc.constantFrom(' ', '\t', ',', ';', '=', '"', 'é', '\u0080', '\u00ff'), fc.integer({ min: 1, max: 0x2fff }).map((c) => String.fromCharCode(c))), maxLength: 20 })
  .map((v) => v.replace(/[\r\n\0]/g, '').trim());
const values = fc.oneof({ weight: 4, arbitrary: value }, { weight: 1, arbitrary: fc.array(value, { minLength: 1, maxLength: 4 }) });

/** A Connection value naming a random subset of the fields, in any case, with odd spacing, empty items and extra options. */
function connectionValue(names: readonly string[]) {
  const item = fc.oneof(
    names.length ? fc.constantFrom(...names) : fc.constant('close'),
    fc.constantFrom('close', 'keep-alive', 'Keep-Alive', 'upgrade', 'x-forwarded-client-cert', 'X-Mesh-Error', ''),
    token,
  ).chain((n) => fc.tuple(fc.constantFrom('', ' ', '  ', '\t', ' \t '), fc.constantFrom('', ' ', '\t')).map(([a, b]) => `${a}${n}${b}`));
  const flip = (s: string, up: boolean[]) => [...s].map((c, i) => (up[i % up.length] ? c.toUpperCase() : c)).join('');
  return fc.tuple(fc.array(item, { minLength: 1, maxLength: 6 }), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.constantFrom(',', ', ', ' ,', ',,'))
    .map(([items, up, sep]) => flip(items.join(sep), up));
}

/**
 * A header map as the sanitizers receive it: names lower-cased (Node's parsers and undici do it, so mixed case can only
 * reach the sanitizer inside Connection's value), repeated fields as arrays (set-cookie, HTTP/2, undici responses).
 * Like node:http2's and undici's maps, a `__proto__` field (fast-check generates that name) is an own property.
 */
const headerMap = fc.uniqueArray(fc.tuple(rawName, values), { selector: ([n]) => n.toLowerCase(), maxLength: 14 })
  .chain((pairs) => {
    const names = pairs.map(([n]) => n);
    return fc.tuple(fc.constant(pairs), fc.option(fc.oneof(connectionValue(names), fc.array(connectionValue(names), { minLength: 1, maxLength: 2 })), { nil: undefined }));
  })
  .map(([pairs, connection]) => {
    const h: Record<string, string | string[]> = {};
    const set = (n: string, v: string | string[]) => Object.defineProperty(h, n, { value: v, enumerable: true, writable: true, configurable: true });
    for (const [n, v] of pairs) set(n.toLowerCase(), v);
    if (connection !== undefined) set('connection', connection);
    return h as IncomingHttpHeaders;
  });

/** The Connection options, as RFC 9110 §7.6.1 defines them: comma-separated tokens, optional whitespace, any case. */
function connectionOptions(h: IncomingHttpHeaders): Set<string> {
  const v = h.connection as string | string[] | undefined;
  if (v === undefined) return new Set();
  return new Set((Array.isArray(v) ? v.join(',') : v).split(',').map((t) => t.replace(/^[ \t]+|[ \t]+$/g, '').toLowerCase()).filter(Boolean));
}

/** Counterexamples fast-check found against the code before its fixes: always tried first. */
const ownProto = (v: string | string[]) => Object.defineProperty({}, '__proto__', { value: v, enumerable: true }) as IncomingHttpHeaders;
const FOUND = {
  request: [[{ 'proxy-authenticate': '', '!_!': '', '!_-': [''] }, false], [{ close: '', connection: ['close'] }, false]] as [IncomingHttpHeaders, boolean][],
  response: [[{ 'proxy-authorization': [''], 'x-mesh-!': [''] }], [ownProto([''])]] as [IncomingHttpHeaders][],
};

const isClientIdentity = (n: string): boolean => n.startsWith('x-mesh-') || n === 'x-forwarded-client-cert';

describe('requestHeadersForUpstream properties', () => {
  // Guards against hop-by-hop, Connection-named, spoofed identity and `_` fields (HARDENING #6-#8) reaching the upstream.
  it('never forwards a hop-by-hop field, a field named in Connection, a client x-mesh-* or XFCC, or a name with "_"', () => {
    fc.assert(fc.property(headerMap, fc.boolean(), (h, keepLength) => {
      const out = requestHeadersForUpstream(h, keepLength);
      const named = connectionOptions(h);
      for (const name of Object.keys(out)) {
        expect(HOP_BY_HOP).not.toContain(name);
        expect(named.has(name)).toBe(false);
        expect(isClientIdentity(name)).toBe(false);
        expect(name).not.toContain('_');
      }
    }), { numRuns: RUNS, examples: FOUND.request });
  });

  // Guards against the sanitizer dropping, rewriting or reordering anything it has no reason to touch.
  it('passes every other field through byte-identical, repeated values in order', () => {
    fc.assert(fc.property(headerMap, fc.boolean(), (h, keepLength) => {
      const out = requestHeadersForUpstream(h, keepLength);
      const named = connectionOptions(h);
      const expected: Record<string, string | string[]> = {};
      for (const [name, v] of Object.entries(h)) {
        if (v === undefined || HOP_BY_HOP.includes(name) || named.has(name) || isClientIdentity(name) || name.includes('_')) continue;
        if (name === 'host' || name === 'expect' || (name === 'content-length' && !keepLength)) continue;
        expected[name] = v;
      }
      expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
      expect(out).toStrictEqual(expected);
    }), { numRuns: RUNS, examples: FOUND.request });
  });
});

describe('responseHeadersForClient properties', () => {
  // Guards against an upstream's hop-by-hop or Connection-named fields reaching the client, and against losing the rest.
  it('drops exactly the hop-by-hop and Connection-named fields', () => {
    fc.assert(fc.property(headerMap, (h) => {
      const out = responseHeadersForClient(h);
      const named = connectionOptions(h);
      // `__proto__` is the one name dropped on purpose (headers.ts says why).
      const expected = Object.fromEntries(Object.entries(h).filter(([n]) => !HOP_BY_HOP.includes(n) && !named.has(n) && n !== '__proto__'));
      expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
      expect(out).toStrictEqual(expected);
    }), { numRuns: RUNS, examples: FOUND.response });
  });
});
