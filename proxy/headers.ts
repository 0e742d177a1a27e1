// Header hygiene (DESIGN.md §5): what may cross the sidecar in each direction, and the headers the sidecar adds.
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still see. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings',
]);

/** Request fields the sidecar recomputes itself: host (rewrite), expect (answered here), framing (undici sets it). */
const RECOMPUTED = new Set(['host', 'expect', 'content-length']);

export type HeaderRecord = Record<string, string | string[]>;

/** Names listed in Connection are hop-by-hop for this one connection only. */
function connectionNamed(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined;
  const joined = Array.isArray(value) ? value.join(',') : value;
  let set: Set<string> | undefined;
  for (const token of joined.split(',')) {
    const t = token.trim().toLowerCase();
    if (t && t !== 'close' && t !== 'keep-alive') (set ??= new Set()).add(t);
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
