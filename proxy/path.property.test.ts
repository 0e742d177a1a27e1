// Property tests for normalizePath (HARDENING.md bad input #4): what the listener authorizes is what it forwards, for any spelling.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Snapshot } from '../api/snapshot.js';
import { authorize, compileAccess, foldPath } from './authz.js';
import { normalizePath } from './path.js';

const RUNS = 3_000;

/** Counterexamples fast-check found against the code before its fixes: always tried first. */
const FOUND = {
  utf8: [['/%e2%80%25%80']] as [string][],
  deny: [['/%2e%2e;/admin/.'], ['/;x=1./admin/.'], ['/;/admin/F']] as [string][],
  allow: [['/public/..;x=1/admin']] as [string][],
  // Found by http1-roundtrip.property.test.ts: forwarded raw by undici, refused by the next hop's parser.
  ascii: [['/cù1Y?@%00%20Y%2F'], ['/ok?q=ÿ']] as [string][],
};

/** Pieces that normalization accepts: dots, slashes, escapes of every case, UTF-8 (whole and torn), path parameters. */
const BENIGN = [
  '/', '/', '/', '.', '..', '%2e', '%2E', '%2e%2e', '%25', '%3b', '%3B', '%41', '%61', '%7e', '%7E', '%2d', '%5f', '%20',
  '%c3%a9', '%C3%A9', '%c3', '%a9', '%e2%82%ac', '%f0%9f%98%80', ';', ';x=1', '?', '~', 'a', 'b', 'admin',
  'ADMIN', 'Admin', 'public', 'x', '0', 'f', 'F', '9', '=', '&',
];
/**
 * Pieces a hostile client adds: encoded separators, NUL, fragments, backslashes, controls, overlong and broken escapes,
 * and raw non-ASCII (an HTTP/2 :path carries it as is; Node's HTTP/1 parser refuses it).
 */
const HOSTILE = [
  'é', '😀', '\u00ff',
  '%', '%2f', '%2F', '%5c', '%5C', '%00', '%23', '%c0%af', '%C0%AE', '%e0%80%ae', '%c1%bf', '%ff', '%zz', '%4', '#',
  '\\', '\u0000', '\t', ' ', '\u007f',
];
const hexish = fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF%./'), maxLength: 4 });
/** Most runs use only accepted pieces (so the properties about accepted paths get exercised); the rest mix in attacks. */
const PIECE = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...BENIGN) },
  { weight: 1, arbitrary: fc.constantFrom(...HOSTILE) },
  { weight: 1, arbitrary: hexish },
);

const rawTarget = fc.tuple(fc.boolean(), fc.array(PIECE, { maxLength: 14 })).map(([slash, parts]) => (slash ? '/' : '') + parts.join(''));

/** Whole segments, so that structure (a dot segment with parameters, `admin` after a climb) is common, not a fluke. */
const SEGMENT = fc.oneof(
  fc.constantFrom('admin', 'ADMIN', '%61dmin', 'public', 'x', '', '.', '..', '%2e', '%2E%2e', '.%2e', '..;', '.;', '..;x=1', '%2e%2e;', 'a;b', 'admin;v=1'),
  fc.array(fc.constantFrom(...BENIGN.filter((b) => b !== '/' && b !== '?')), { minLength: 1, maxLength: 3 }).map((p) => p.join('')),
);
const segmented = fc.tuple(fc.array(SEGMENT, { minLength: 1, maxLength: 6 }), fc.constantFrom('', '?', '?a=1', '?p=/admin/%2f', '?x#y'))
  .map(([segs, q]) => `/${segs.join('/')}${q}`);

const target = fc.oneof(
  { weight: 5, arbitrary: rawTarget.map((t) => (t.startsWith('/') ? t : `/${t}`)) },
  { weight: 4, arbitrary: segmented },
  { weight: 1, arbitrary: rawTarget },
);

const pathPart = (t: string): string => (t.includes('?') ? t.slice(0, t.indexOf('?')) : t);
const queryPart = (t: string): string => (t.includes('?') ? t.slice(t.indexOf('?')) : '');

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

describe('normalizePath properties', () => {
  // Guards against a second normalization (a retry, the next sidecar) seeing a different path than authz saw.
  it('is idempotent', () => {
    fc.assert(fc.property(target, (t) => {
      const once = normalizePath(t);
      if (!once.ok) return;
      expect(normalizePath(once.path + once.query)).toEqual(once);
    }), { numRuns: RUNS });
  });

  // Guards against `..` reaching a backend that resolves it after our AccessPolicy matched the unresolved path.
  it('never leaves dot segments or empty segments', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      expect(n.path.startsWith('/')).toBe(true);
      expect(n.path).not.toMatch(/\/\.\.?(\/|$)/);
      expect(n.path).not.toMatch(/\/\/./);
    }), { numRuns: RUNS });
  });

  // Guards against encoded separators, NUL and fragments being forwarded to a backend that decodes them differently.
  it('never forwards an encoded separator, NUL, a fragment or a backslash, and rejects inputs whose path has one', () => {
    const forbidden = /%2f|%5c|%00|%23|[\u0000#\\]/i;
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (pathPart(t).match(forbidden) || t.includes('#') || t.includes('\u0000')) expect(n.ok).toBe(false);
      if (!n.ok) return;
      expect(n.path).not.toMatch(forbidden);
      expect(n.path).not.toMatch(/[\u0000-\u0020\u007f]/);
    }), { numRuns: RUNS });
  });

  // Guards against two spellings of one resource (`%61dmin`, `admin`) being treated as different paths.
  it('decodes unreserved escapes, upper-cases the rest, and leaves only valid escapes', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      for (const m of n.path.matchAll(/%(.{0,2})/g)) {
        expect(m[1]).toMatch(/^[0-9A-F]{2}$/);
        expect(String.fromCharCode(parseInt(m[1], 16))).not.toMatch(UNRESERVED);
      }
    }), { numRuns: RUNS });
  });

  // Guards against overlong or truncated UTF-8 (`%c0%af` for "/") reaching a lenient decoder as a path we never checked.
  it('accepts only paths whose escapes are valid UTF-8, and rejects overlong forms', () => {
    // Escaped bytes only (lead, continuation, overlong, and `%25` and `/` between them): torn sequences are common here.
    const escapes = fc.array(fc.constantFrom('%c3', '%C3', '%a9', '%A9', '%e2', '%82', '%ac', '%f0', '%9f', '%98', '%80', '%c0', '%af', '%25', 'a', '/'), { maxLength: 10 });
    fc.assert(fc.property(fc.oneof(target, escapes.map((e) => `/${e.join('')}`)), (t) => {
      const n = normalizePath(t);
      if (/%c0|%c1|%e0%80|%f0%80/i.test(pathPart(t))) expect(n.ok).toBe(false);
      if (!n.ok) return;
      expect(() => decodeURIComponent(n.path)).not.toThrow();
    }), { numRuns: RUNS, examples: FOUND.utf8 });
  });

  // Guards against raw non-ASCII (which an HTTP/2 :path carries as is) being forwarded to an HTTP/1 upstream that
  // refuses it: Node's parser answers 400 to any byte outside printable ASCII in a request target.
  it('accepts only targets made of printable ASCII', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      expect(n.path + n.query).toMatch(/^[\x21-\x7e]*$/);
    }), { numRuns: RUNS, examples: FOUND.ascii });
  });

  // Guards against the query being rewritten (it is the application's business) or losing a request's parameters.
  it('keeps the query exactly as sent', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      expect(n.query).toBe(queryPart(t));
    }), { numRuns: RUNS });
  });
});

/** One deny policy on `/admin/*` and one allow policy on `/public/*` and `/admin/*`, for service "app", from anyone. */
function table(action: 'allow' | 'deny', paths: string[]) {
  const snapshot = {
    accessPolicies: [{ name: `p-${action}`, namespace: 'default', spec: { service: 'app', action, rules: [{ from: ['*'], to: [{ methods: [], paths }] }] } }],
  } as unknown as Snapshot;
  return compileAccess(snapshot, 'app', 'default');
}
const PEER = { uri: 'spiffe://mesh.local/ns/default/sa/web', namespace: 'default', service: 'web' };
const DENY_ADMIN = table('deny', ['/admin/*']);
const ALLOW_PUBLIC = table('allow', ['/public/*']);

/** RFC 3986 §5.2.4 as a backend applies it, written independently of path.ts: `.` dropped, `..` climbs, never above `/`. */
function resolveDots(path: string): string {
  const out: string[] = [];
  const segs = path.split('/').slice(1);
  segs.forEach((s, i) => {
    const last = i === segs.length - 1;
    if (s === '..') out.pop();
    if (s === '.' || s === '..') {
      if (last) out.push('');
    } else if (s !== '' || last) out.push(s);
  });
  return `/${out.join('/')}`;
}

/**
 * How a backend reads a path we forward: path parameters cut at the raw `;` (Tomcat, Spring), then every escape
 * decoded and dot segments resolved. Encoded separators cannot appear by decoding: normalization rejects them.
 */
const backendView = (path: string): string => resolveDots(decodeURIComponent(path.split('/').map((s) => s.split(';')[0]).join('/')));

/** Spellings of one path that a backend treats alike: escaped unreserved characters, dot segments, doubled slashes. */
function obfuscate(segments: string[], choices: number[]): string {
  let i = 0;
  const next = () => choices[i++ % choices.length];
  let out = '';
  for (const seg of segments) {
    const c = next();
    if (c % 5 === 0) out += '/.';
    if (c % 7 === 0) out += '/zz/..';
    if (c % 11 === 0) out += '/%2e';
    out += c % 3 === 0 ? '//' : '/';
    for (const ch of seg) {
      const e = next();
      out += e % 4 === 0 ? `%${ch.charCodeAt(0).toString(16).padStart(2, '0')}` : e % 4 === 1 ? `%${ch.charCodeAt(0).toString(16).toUpperCase()}` : ch;
    }
  }
  return out;
}

describe('normalizePath with AccessPolicy path rules', () => {
  // Guards against a deny rule being dodged by any spelling a backend would still read as /admin/... (0 bypasses).
  it('a deny rule on /admin/* refuses a path iff the backend would read it as under /admin/', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      const denied = !authorize(DENY_ADMIN, PEER, 'GET', n.path).allowed;
      expect(denied).toBe(backendView(n.path).toLowerCase().startsWith('/admin/'));
      // The rule sees what is forwarded: normalizing the forwarded path again changes nothing for it.
      expect(!authorize(DENY_ADMIN, PEER, 'GET', normalizePath(n.path).ok ? n.path : '').allowed).toBe(denied);
    }), { numRuns: RUNS, examples: FOUND.deny });
  });

  // Guards against an allow rule admitting a path the backend reads as outside /public/.
  it('an allow rule on /public/* admits only paths the backend reads as under /public/', () => {
    fc.assert(fc.property(target, (t) => {
      const n = normalizePath(t);
      if (!n.ok) return;
      if (authorize(ALLOW_PUBLIC, PEER, 'GET', n.path).allowed) expect(backendView(n.path).startsWith('/public/')).toBe(true);
    }), { numRuns: RUNS, examples: FOUND.allow });
  });

  // Guards against encoded, dotted or doubled spellings of an /admin/ path getting past the deny rule.
  it('every accepted spelling of an /admin/ path is denied like the plain one', () => {
    const seg = fc.string({ unit: fc.constantFrom(...'abcxyz019-_~.'), minLength: 1, maxLength: 6 }).filter((s) => s !== '.' && s !== '..');
    const adminCase = fc.constantFrom('admin', 'ADMIN', 'aDmIn');
    fc.assert(fc.property(adminCase, fc.array(seg, { minLength: 1, maxLength: 4 }), fc.array(fc.nat(1000), { minLength: 1, maxLength: 40 }), (a, rest, choices) => {
      const spelled = obfuscate([a, ...rest], choices);
      const n = normalizePath(spelled);
      expect(n.ok).toBe(true);
      if (!n.ok) return;
      expect(foldPath(n.path)).toBe(foldPath(`/${[a, ...rest].join('/')}`));
      expect(authorize(DENY_ADMIN, PEER, 'GET', n.path).allowed).toBe(false);
    }), { numRuns: RUNS });
  });
});
