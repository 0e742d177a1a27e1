// Leaf issuance: verify a workload's CSR with node:crypto, then sign an X509-SVID for the identity the caller (not the CSR) names.
import { X509Certificate, createPublicKey, verify, type KeyObject } from 'node:crypto';
import forge from 'node-forge';
import { CLOCK_SKEW_MS, forgeSigner, randomSerial, type CertificateAuthority } from './ca.js';
import { checkLeaf, spiffeUri, type SpiffeId } from './spiffe.js';

/** A request the CA refuses; the message is meant for the workload's operator. */
export class CsrError extends Error {
  override name = 'CsrError';
}

const MIN_RSA_BITS = 2048;
// RSA PKCS#1 v1.5 signatures we accept on a CSR; SHA-1 is refused so a weak digest never vouches for a key.
const CSR_SIGNATURE_HASHES: Record<string, string> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
};

// Present in node-forge, missing from @types/node-forge.
const pki = forge.pki as typeof forge.pki & {
  getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1;
};

function parseCsr(csrPem: string): forge.pki.CertificateSigningRequest {
  if (!csrPem.includes('-----BEGIN CERTIFICATE REQUEST-----')) {
    throw new CsrError('not a PEM certificate request (no "-----BEGIN CERTIFICATE REQUEST-----" line)');
  }
  try {
    return pki.certificationRequestFromPem(csrPem);
  } catch (err) {
    // forge can only read RSA keys, so an EC or Ed25519 CSR ends up here too.
    throw new CsrError(`unreadable certificate request (an RSA key of at least ${MIN_RSA_BITS} bits is required): ${(err as Error).message}`);
  }
}

function checkKey(key: KeyObject): void {
  const type = key.asymmetricKeyType;
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (type !== 'rsa') throw new CsrError(`certificate request key is ${type ?? 'unknown'}; an RSA key of at least ${MIN_RSA_BITS} bits is required`);
  if (bits < MIN_RSA_BITS) throw new CsrError(`certificate request key is RSA-${bits}; at least RSA-${MIN_RSA_BITS} is required`);
  if (key.asymmetricKeyDetails?.publicExponent !== 0x10001n) throw new CsrError('certificate request key must use the public exponent 65537');
}

/**
 * Proof of possession, checked by node:crypto rather than forge. The bytes verified are the
 * CertificationRequestInfo exactly as received (forge keeps the parsed original); re-encoding from
 * forge's fields is only the fallback, since a re-encoding can differ from what the workload signed.
 */
export function verifyCsr(csrPem: string): forge.pki.PublicKey {
  const csr = parseCsr(csrPem);
  const oid = csr.signatureOid ?? '';
  const hash = CSR_SIGNATURE_HASHES[oid];
  if (hash === undefined) throw new CsrError(`certificate request signature algorithm ${oid || '(none)'} is not accepted; sign with SHA-256 and RSA`);

  let key: KeyObject;
  try {
    key = createPublicKey(pki.publicKeyToPem(csr.publicKey as forge.pki.rsa.PublicKey));
  } catch (err) {
    throw new CsrError(`certificate request public key is unreadable: ${(err as Error).message}`);
  }
  checkKey(key);

  const received = (csr as { certificationRequestInfo?: forge.asn1.Asn1 | null }).certificationRequestInfo;
  const info = received ?? pki.getCertificationRequestInfo(csr);
  const signed = Buffer.from(forge.asn1.toDer(info).getBytes(), 'binary');
  const signature = Buffer.from(String(csr.signature ?? ''), 'binary');
  let ok: boolean;
  try {
    ok = verify(hash, signed, key, signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new CsrError('certificate request signature does not verify with its own public key');
  return csr.publicKey as forge.pki.PublicKey;
}

export function signCsr(
  ca: CertificateAuthority,
  csrPem: string,
  opts: { id: SpiffeId; ttlMs: number; nowMs?: number },
): string {
  const { id, ttlMs } = opts;
  const nowMs = opts.nowMs ?? Date.now();
  if (!Number.isFinite(ttlMs) || ttlMs <= 0) throw new CsrError(`certificate ttl must be a positive duration, got ${ttlMs} ms`);
  if (id.trustDomain !== ca.trustDomain) {
    throw new CsrError(`identity is in trust domain "${id.trustDomain}" but this CA issues for "${ca.trustDomain}"`);
  }
  let uri: string;
  try {
    uri = spiffeUri(id);
  } catch (err) {
    throw new CsrError((err as Error).message);
  }
  const publicKey = verifyCsr(csrPem);

  const signer = forgeSigner(ca);
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(nowMs - CLOCK_SKEW_MS);
  // A leaf cannot usefully outlive its CA: peers would reject it after the CA expires anyway,
  // and a truthful notAfter lets rotation renew before that happens.
  cert.validity.notAfter = new Date(Math.min(nowMs + ttlMs, signer.cert.validity.notAfter.getTime()));
  cert.setSubject([{ shortName: 'CN', value: id.service }]);
  cert.setIssuer(signer.cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 6, value: uri }] },
    { name: 'subjectKeyIdentifier' },
    // Lets TLS stacks pick the issuing CA by key id once there is more than one (CA rotation).
    { name: 'authorityKeyIdentifier', keyIdentifier: signer.cert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(signer.key, forge.md.sha256.create());
  const pem = pki.certificateToPem(cert);
  assertIssued(ca, pem, uri);
  return pem;
}

/** forge built it; node:crypto must agree it is a valid SVID before anyone else sees it. */
function assertIssued(ca: CertificateAuthority, pem: string, uri: string): void {
  const leaf = new X509Certificate(pem);
  const check = checkLeaf(leaf, ca.trustDomain, Date.parse(leaf.validFrom));
  if (!leaf.verify(ca.cert.publicKey) || !leaf.checkIssued(ca.cert) || !check.ok) {
    throw new Error(`issued certificate for "${uri}" failed its own check${check.ok ? '' : `: ${check.detail}`}`);
  }
}
