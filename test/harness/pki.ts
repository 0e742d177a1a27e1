// Test harness: certificates that break the mesh's SPIFFE leaf rules on purpose, built with forge directly, for end-to-end mTLS refusal tests.
import forge from 'node-forge';
import { CLOCK_SKEW_MS, createCa, forgeSigner, randomSerial, type CertificateAuthority } from '../../certs/ca.js';
import { signCsr } from '../../certs/issue.js';
import { createCsr, createWorkloadKey } from '../../certs/workload.js';

export interface KeyAndCert {
  readonly keyPem: string;
  readonly certPem: string;
}

export interface BadCertificates {
  /** A well-formed leaf for the same trust domain, issued by a different CA: TLS must refuse it. */
  readonly otherCa: KeyAndCert;
  /** Signed by the mesh CA, notAfter an hour ago. */
  readonly expired: KeyAndCert;
  /** Signed by the mesh CA, two valid SPIFFE URI SANs. */
  readonly twoUriSans: KeyAndCert;
  /** Signed by the mesh CA, basicConstraints cA=true, one valid URI SAN and server/client EKUs. */
  readonly caAsLeaf: KeyAndCert;
  /** Signed by the mesh CA, SAN `spiffe://evil.local/ns/default/sa/<service>`. */
  readonly wrongTrustDomain: KeyAndCert;
  /** The CA behind `otherCa`, for tests where the peer is the one with the foreign trust anchor. */
  readonly foreignCa: CertificateAuthority;
  /** A correct leaf from the mesh CA (through the real signCsr path), valid for an hour. */
  valid(service: string, namespace?: string): KeyAndCert;
}

const HOUR = 3_600_000;

interface LeafSpec {
  readonly uris: readonly string[];
  readonly cn: string;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  readonly isCa?: boolean;
}

/** The production leaf profile with the fields a spec overrides; everything else stays valid so only one rule is broken. */
function forgeLeaf(ca: CertificateAuthority, spec: LeafSpec): KeyAndCert {
  const { keyPem } = createWorkloadKey();
  const key = forge.pki.privateKeyFromPem(keyPem);
  const signer = forgeSigner(ca);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(spec.notBeforeMs);
  cert.validity.notAfter = new Date(spec.notAfterMs);
  cert.setSubject([{ shortName: 'CN', value: spec.cn }]);
  cert.setIssuer(signer.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: spec.isCa === true, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: spec.isCa === true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: spec.uris.map((value) => ({ type: 6, value })) },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: signer.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(signer.key, forge.md.sha256.create());
  return Object.freeze({ keyPem, certPem: forge.pki.certificateToPem(cert) });
}

function issueValid(ca: CertificateAuthority, trustDomain: string, service: string, namespace: string): KeyAndCert {
  const key = createWorkloadKey();
  const id = { trustDomain, namespace, service };
  return Object.freeze({ keyPem: key.keyPem, certPem: signCsr(ca, createCsr(key, id), { id, ttlMs: HOUR }) });
}

/**
 * One of each kind of certificate a strict inbound listener must refuse, plus `valid()` for the
 * control case. `service` names the identity the bad certificates claim (default "x"); pass a
 * service an AccessPolicy allows to show the refusal is about the certificate, not the policy.
 */
export function badCertificates(ca: CertificateAuthority, trustDomain: string, service = 'x'): BadCertificates {
  const now = Date.now();
  const uri = (td: string, svc: string): string => `spiffe://${td}/ns/default/sa/${svc}`;
  const current = { notBeforeMs: now - CLOCK_SKEW_MS, notAfterMs: now + HOUR };
  const foreignCa = createCa({ trustDomain });
  return Object.freeze({
    otherCa: issueValid(foreignCa, trustDomain, service, 'default'),
    expired: forgeLeaf(ca, { uris: [uri(trustDomain, service)], cn: service, notBeforeMs: now - 2 * HOUR, notAfterMs: now - HOUR }),
    twoUriSans: forgeLeaf(ca, { uris: [uri(trustDomain, service), uri(trustDomain, `${service}-2`)], cn: service, ...current }),
    caAsLeaf: forgeLeaf(ca, { uris: [uri(trustDomain, service)], cn: service, isCa: true, ...current }),
    wrongTrustDomain: forgeLeaf(ca, { uris: [uri('evil.local', service)], cn: service, ...current }),
    foreignCa,
    valid: (svc: string, namespace = 'default') => issueValid(ca, trustDomain, svc, namespace),
  });
}
