// The workload's side of issuance: its key (generated in-process, never written or sent), its CSR, and reading back a certificate.
import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { generateRsaKeyPem } from './ca.js';
import { parseSubjectAltName, spiffeUri, type SpiffeId } from './spiffe.js';

export interface WorkloadKey {
  /** PKCS#8 PEM: accepted by node:tls as `key` and readable by forge. Keep it in memory only. */
  readonly keyPem: string;
}

export function createWorkloadKey(): WorkloadKey {
  return Object.freeze({ keyPem: generateRsaKeyPem() });
}

/**
 * A PKCS#10 request signed with the workload key. The requested URI SAN is informational: the CA
 * takes the identity from the caller's authenticated token, so asking for another one gains nothing.
 */
export function createCsr(key: WorkloadKey, id: SpiffeId): string {
  const privateKey = forge.pki.privateKeyFromPem(key.keyPem);
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e);
  csr.setSubject([{ shortName: 'CN', value: id.service }]);
  csr.setAttributes([
    {
      name: 'extensionRequest',
      extensions: [{ name: 'subjectAltName', altNames: [{ type: 6, value: spiffeUri(id) }] }],
    },
  ]);
  // forge defaults to SHA-1, which the CA refuses.
  csr.sign(privateKey, forge.md.sha256.create());
  return forge.pki.certificationRequestToPem(csr);
}

export interface CertificateSummary {
  /** The first `spiffe://` URI SAN; checkLeaf is what decides whether the certificate is acceptable. */
  spiffeId: string | undefined;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  /** The issuer DN on one line, e.g. `CN=Trellis mesh CA, O=mesh.local`. */
  issuer: string;
  isCa: boolean;
}

const PEM_CERT = '-----BEGIN CERTIFICATE-----';

/** Reads the first certificate of a PEM (a chain file is fine). Throws a one-line reason for anything else. */
export function describeCertificate(pem: string): CertificateSummary {
  if (!pem.includes(PEM_CERT)) throw new Error(`not a PEM certificate (no "${PEM_CERT}" line)`);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch (err) {
    throw new Error(`unreadable PEM certificate: ${(err as Error).message}`);
  }
  let spiffeId: string | undefined;
  try {
    spiffeId = parseSubjectAltName(cert.subjectAltName).find((san) => san.type === 'URI' && san.value.startsWith('spiffe://'))?.value;
  } catch {
    spiffeId = undefined;
  }
  return {
    spiffeId,
    serial: cert.serialNumber,
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
    issuer: cert.issuer.split('\n').join(', '),
    isCa: cert.ca,
  };
}
