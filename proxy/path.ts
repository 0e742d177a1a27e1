// Path normalization, done once per request before routing and authorization; the result is what gets forwarded.

export type NormalizedPath = { ok: true; path: string; query: string } | { ok: false; reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = '0123456789ABCDEF';

/**
 * Normalizes an origin-form request target (RFC 3986 §6.2.2): decodes percent-encoded unreserved characters,
 * upper-cases the remaining escapes, merges repeated slashes and removes dot segments. Encoded `/`, `\`, NUL and
 * `#`, raw `\`, control bytes, invalid escapes and parameters on empty or dot segments (`..;x`) are rejected, because
 * a backend that reads them differently from us could see a path our AccessPolicy never checked.
 */
export function normalizePath(target: string): NormalizedPath {
  if (target.length === 0 || target.charCodeAt(0) !== 0x2f /* / */) return bad('path must start with "/"');
  const q = target.indexOf('?');
  const raw = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q);
  if (query.includes('#')) return bad('fragment in request target');
  for (let i = 0; i < query.length; i++) {
    const c = query.charCodeAt(i);
    if (c < 0x21 || c === 0x7f) return bad('control character in query');
    if (c > 0x7f) return bad('non-ASCII character in query');
  }
  // Fast path: the common case has nothing to decode or collapse.
  if (isPlain(raw)) return { ok: true, path: raw, query };

  let decoded = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i];
    const code = raw.charCodeAt(i);
    if (code < 0x21 || code === 0x7f) return bad('control character in path');
    // Raw bytes above 0x7F must be percent-encoded (RFC 3986). Node's HTTP/1 parser refuses them, but an HTTP/2 :path
    // brings them as they are, undici would write them raw, and the next sidecar's parser would answer 400.
    if (code > 0x7f) return bad('non-ASCII character in path');
    if (ch === '\\') return bad('backslash in path');
    if (ch === '#') return bad('fragment in request target');
    if (ch !== '%') {
      decoded += ch;
      continue;
    }
    const h = raw.slice(i + 1, i + 3).toUpperCase();
    if (h.length !== 2 || HEX.indexOf(h[0]) < 0 || HEX.indexOf(h[1]) < 0) return bad('invalid percent-encoding in path');
    const byte = parseInt(h, 16);
    if (byte === 0x2f || byte === 0x5c || byte === 0x00 || byte === 0x23) return bad(`encoded "%${h}" in path`);
    const c = String.fromCharCode(byte);
    decoded += byte < 0x80 && UNRESERVED.test(c) ? c : `%${h}`;
    i += 2;
  }
  // A backend that cuts path parameters before resolving dots and merging slashes (Tomcat, Spring) reads `..;x` as `..`
  // and `;x` as an empty segment; we and AccessPolicy read plain segments: `/public/..;/admin` would pass an allow rule
  // on /public/* and `/;x/admin` a deny rule on /admin/*, and both reach /admin.
  // `%3B` too: Spring, for one, decodes it before cutting parameters.
  if (/\/\.{0,2}(?:;|%3B)/.test(decoded)) return bad('path parameters on an empty or dot segment');
  // Overlong or truncated UTF-8 (`%C0%AE` for ".") is how a lenient decoder downstream could see a path we did not.
  if (hasHighEscape(decoded) && !isValidUtf8Escapes(decoded)) return bad('invalid UTF-8 in path');
  return { ok: true, path: removeDotSegments(decoded.replace(/\/{2,}/g, '/')), query };
}

function hasHighEscape(p: string): boolean {
  return /%[89A-F][0-9A-F]/.test(p);
}

function isValidUtf8Escapes(p: string): boolean {
  try {
    // Only the escapes matter here; the raw characters are already validated above. `%25` stays in: cutting it out
    // joined the bytes around it, so `%E2%80%25%80` (E2 80 "%" 80, invalid) passed as if it were E2 80 80.
    decodeURIComponent(p);
    return true;
  } catch {
    return false;
  }
}

function isPlain(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p.charCodeAt(i);
    if (c === 0x25 /* % */ || c === 0x5c /* \ */ || c === 0x23 /* # */ || c < 0x21 || c >= 0x7f) return false;
    // `//`, `/.` and `/;` may need merging, resolving or refusing: the slow path decides.
    const next = p.charCodeAt(i + 1);
    if (c === 0x2f && (next === 0x2f || next === 0x2e || next === 0x3b)) return false;
  }
  return true;
}

/** RFC 3986 §5.2.4, on an absolute path; `..` never climbs above the root. */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i];
    if (s === '.') {
      if (i === segments.length - 1) out.push('');
    } else if (s === '..') {
      out.pop();
      if (i === segments.length - 1) out.push('');
    } else {
      out.push(s);
    }
  }
  return '/' + out.join('/');
}

function bad(reason: string): NormalizedPath {
  return { ok: false, reason };
}
