// SPIFFE identities: the `spiffe://<td>/ns/<ns>/sa/<service>` form, URI SAN extraction, and the X509-SVID leaf profile check.
import type { X509Certificate } from 'node:crypto';

export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly service: string;
}

// The SPIFFE spec allows these characters in trust domains and path segments; anything else
// (upper case in the trust domain, percent-encoding, userinfo, ports, queries) is not a SPIFFE ID.
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const SEGMENT = /^[A-Za-z0-9._-]{1,253}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
// Kept below the 2048-byte SPIFFE ID limit with room to spare for any namespace and service.
const MAX_URI = 2048;

function isSegment(s: string): boolean {
  // "." and ".." would be resolved away by anything that normalizes the URI, changing the identity.
  return SEGMENT.test(s) && s !== '.' && s !== '..';
}

function isTrustDomain(s: string): boolean {
  return TRUST_DOMAIN.test(s);
}

/**
 * The stricter rule for trust domains this mesh creates: a lowercase DNS name, so the
 * same string works as a certificate O, a SPIFFE authority and a MeshConfig hostname.
 */
export function isValidTrustDomain(s: string): boolean {
  return s.length <= 253 && s.split('.').every((label) => label.length <= 63 && DNS_LABEL.test(label));
}

export function spiffeUri(id: SpiffeId): string {
  // Throwing here means no code path can mint a certificate whose SAN would not parse back.
  if (!isTrustDomain(id.trustDomain)) throw new Error(`invalid SPIFFE trust domain "${id.trustDomain}"`);
  if (!isSegment(id.namespace)) throw new Error(`invalid SPIFFE namespace "${id.namespace}"`);
  if (!isSegment(id.service)) throw new Error(`invalid SPIFFE service name "${id.service}"`);
  return `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.service}`;
}

export function parseSpiffeUri(uri: string): SpiffeId | undefined {
  if (uri.length > MAX_URI || !uri.startsWith('spiffe://')) return undefined;
  const rest = uri.slice('spiffe://'.length);
  const parts = rest.split('/');
  if (parts.length !== 5 || parts[1] !== 'ns' || parts[3] !== 'sa') return undefined;
  const [trustDomain, , namespace, , service] = parts;
  if (!isTrustDomain(trustDomain) || !isSegment(namespace) || !isSegment(service)) return undefined;
  return Object.freeze({ trustDomain, namespace, service });
}

/**
 * Node renders SANs as `TYPE:value, TYPE:value`, and since CVE-2021-44532 quotes any value holding
 * `,` `"` `\` `'` or control characters as a JSON string. Splitting on ", " blindly would let a
 * single crafted SAN like `spiffe://a, URI:spiffe://b` pass as two identities, so this tokenizes.
 */
export function parseSubjectAltName(text: string | undefined): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  if (!text) return out;
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) throw new Error(`malformed subjectAltName near "${text.slice(i, i + 40)}"`);
    const type = text.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      if (k >= text.length) throw new Error('malformed subjectAltName: unterminated quoted value');
      value = JSON.parse(text.slice(j, k + 1)) as string;
      j = k + 1;
    } else {
      const comma = text.indexOf(', ', j);
      const end = comma < 0 ? text.length : comma;
      value = text.slice(j, end);
      j = end;
    }
    out.push({ type, value });
    if (j < text.length) {
      if (!text.startsWith(', ', j)) throw new Error(`malformed subjectAltName near "${text.slice(j, j + 40)}"`);
      j += 2;
    }
    i = j;
  }
  return out;
}

export function uriSans(cert: X509Certificate): string[] {
  return parseSubjectAltName(cert.subjectAltName)
    .filter((san) => san.type === 'URI')
    .map((san) => san.value);
}

// Node's validFrom/validTo strings always parse, but a NaN must still fail closed rather than throw.
const iso = (ms: number): string => (Number.isFinite(ms) ? new Date(ms).toISOString() : 'an unreadable date');

export type LeafProblem =
  | 'no-uri-san'
  | 'multiple-uri-sans'
  | 'bad-spiffe-id'
  | 'ca-certificate'
  | 'foreign-trust-domain'
  | 'expired'
  | 'not-yet-valid';

export type LeafCheck = { ok: true; id: SpiffeId } | { ok: false; reason: LeafProblem; detail: string };

/**
 * The SPIFFE X509-SVID leaf profile. Chain verification is TLS's job; this adds what TLS does not
 * know: one identity per certificate, no CA acting as a workload, and only our trust domain.
 */
export function checkLeaf(cert: X509Certificate, trustDomain: string, nowMs: number): LeafCheck {
  let uris: string[];
  try {
    uris = uriSans(cert);
  } catch (err) {
    return { ok: false, reason: 'bad-spiffe-id', detail: (err as Error).message };
  }
  if (uris.length === 0) return { ok: false, reason: 'no-uri-san', detail: 'certificate has no URI subject alternative name' };
  if (uris.length > 1) {
    return { ok: false, reason: 'multiple-uri-sans', detail: `certificate has ${uris.length} URI SANs (${uris.join(', ')}); exactly one is allowed` };
  }
  const id = parseSpiffeUri(uris[0]);
  if (!id) return { ok: false, reason: 'bad-spiffe-id', detail: `URI SAN "${uris[0]}" is not spiffe://<trust domain>/ns/<namespace>/sa/<service>` };
  if (cert.ca) return { ok: false, reason: 'ca-certificate', detail: `certificate for "${uris[0]}" is a CA certificate (basicConstraints cA=true)` };
  if (id.trustDomain !== trustDomain) {
    return { ok: false, reason: 'foreign-trust-domain', detail: `identity "${uris[0]}" is not in trust domain "${trustDomain}"` };
  }
  const notBefore = Date.parse(cert.validFrom);
  const notAfter = Date.parse(cert.validTo);
  if (!(nowMs >= notBefore)) {
    return { ok: false, reason: 'not-yet-valid', detail: `certificate for "${uris[0]}" is not valid before ${iso(notBefore)}` };
  }
  if (!(nowMs <= notAfter)) {
    return { ok: false, reason: 'expired', detail: `certificate for "${uris[0]}" expired at ${iso(notAfter)}` };
  }
  return { ok: true, id };
}
