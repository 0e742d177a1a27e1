// Header hygiene (DESIGN.md §5): what may cross the sidecar in each direction, and the headers the sidecar adds.
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/**
 * RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still see. The proxy-auth pair is hop-by-hop
 * in RFC 2616 §13.5.1: credentials a client meant for a proxy must not reach the service behind it.
 */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings',
  'proxy-authorization', 'proxy-authenticate',
]);

/** Request fields the sidecar recomputes itself: host (rewrite), expect (answered here), framing (undici sets it). */
const RECOMPUTED = new Set(['host', 'expect', 'content-length']);

export type HeaderRecord = Record<string, string | string[]>;

/**
 * Names listed in Connection are hop-by-hop for this one connection only. Every option counts, `close` included
 * (RFC 9110 §7.6.1): a field named `close` next to `Connection: close` is one the sender wanted dropped.
 */
function connectionNamed(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const joined = Array.isArray(value) ? value.join(',') : value;
  let set: Set<string> | undefined;
  for (const token of joined.split(',')) {
    const t = token.trim().toLowerCase();
    if (t) (set ??= new Set()).add(t);
  }
  return set;
}

/**
 * The request headers to send upstream: hop-by-hop and Connection-named fields, client-sent `x-mesh-*` and
 * `x-forwarded-client-cert`, and names containing `_` (which some servers fold into `-`) are dropped. The sidecar's
 * own headers are added by the caller afterwards, so a client cannot remove them through Connection.
 */
export function requestHeadersForUpstream(h: IncomingHttpHeaders, keepContentLength: boolean): HeaderRecord {
  const named = connectionNamed(h.connection);
  const out: HeaderRecord = {};
  for (const name in h) {
    const v = h[name];
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) are framing, never regular fields upstream.
    if (v === undefined || name.charCodeAt(0) === 0x3a) continue;
    if (HOP_BY_HOP.has(name) || (RECOMPUTED.has(name) && !(keepContentLength && name === 'content-length'))) continue;
    if (named?.has(name)) continue;
    if (name.startsWith('x-mesh-') || name === 'x-forwarded-client-cert' || name.includes('_')) continue;
    out[name] = v;
  }
  return out;
}

/** The response headers to send downstream: hop-by-hop and Connection-named fields removed. */
export function responseHeadersForClient(h: Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const named = connectionNamed(h.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in h) {
    const v = h[name];
    if (v === undefined || name.charCodeAt(0) === 0x3a || HOP_BY_HOP.has(name) || named?.has(name)) continue;
    // undici keeps an upstream's `__proto__` field as an own property; assigned here it would set out's prototype (to
    // an array when repeated, whose items Node's writeHead then sends as fields "0", "1"). Node's own parser drops it too.
    if (name === '__proto__') continue;
    out[name] = v;
  }
  return out;
}

export function newRequestId(): string {
  return randomUUID();
}

/** Value of a header as one string (repeated fields joined), for matching. */
export function headerValue(h: IncomingHttpHeaders, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v.join(', ') : v;
}
