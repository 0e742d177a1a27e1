// Tests for leaf issuance: the SVID profile as node:crypto sees it, proof of possession, refused CSRs, and a real mTLS handshake.
import { describe, it, expect, beforeAll } from 'vitest';
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import forge from 'node-forge';
import { createCa, type CertificateAuthority } from './ca.js';
import { CsrError, signCsr } from './issue.js';
import { checkLeaf, uriSans, type SpiffeId } from './spiffe.js';
import { createCsr, createWorkloadKey, describeCertificate, type WorkloadKey } from './workload.js';
import { badCertificates } from '../test/harness/pki.js';

// Whole seconds, because certificate times have no milliseconds; real time, because the TLS test uses the real clock.
const NOW = Math.floor(Date.now() / 1000) * 1000;
const HOUR = 3_600_000;
const billing: SpiffeId = { trustDomain: 'mesh.local', namespace: 'default', service: 'billing' };

let ca: CertificateAuthority;
let key: WorkloadKey;
let csr: string;
beforeAll(() => {
  ca = createCa({ trustDomain: 'mesh.local', nowMs: NOW - HOUR });
  key = createWorkloadKey();
  csr = createCsr(key, billing);
});

/** A CSR whose CertificationRequestInfo carries `publicKey` but is signed with `signer` (forge does not mind). */
function forgeCsr(publicKeyPem: string, signerPem: string, md: forge.md.MessageDigest = forge.md.sha256.create()): string {
  const c = forge.pki.createCertificationRequest();
  c.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
  c.setSubject([{ shortName: 'CN', value: 'billing' }]);
  c.sign(forge.pki.privateKeyFromPem(signerPem), md);
  return forge.pki.certificationRequestToPem(c);
}

const publicPem = (privatePem: string): string => createPublicKey(privatePem).export({ type: 'spki', format: 'pem' }).toString();

/** An ECDSA CSR assembled by hand: forge cannot make one, and the CA must still refuse it cleanly. */
function ecCsr(): string {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const a = forge.asn1;
  const subject = forge.pki.createCertificationRequest().subject;
  subject.addField({ shortName: 'CN', value: 'billing' });
  const spki = a.fromDer(forge.util.createBuffer(publicKey.export({ type: 'spki', format: 'der' }).toString('binary')));
  const cri = a.create(a.Class.UNIVERSAL, a.Type.SEQUENCE, true, [
    a.create(a.Class.UNIVERSAL, a.Type.INTEGER, false, a.integerToDer(0).getBytes()),
    forge.pki.distinguishedNameToAsn1(subject),
    spki,
    a.create(a.Class.CONTEXT_SPECIFIC, 0, true, []),
  ]);
  const criDer = a.toDer(cri).getBytes();
  const sig = sign('sha256', Buffer.from(criDer, 'binary'), privateKey).toString('binary');
  const req = a.create(a.Class.UNIVERSAL, a.Type.SEQUENCE, true, [
    cri,
    a.create(a.Class.UNIVERSAL, a.Type.SEQUENCE, true, [a.create(a.Class.UNIVERSAL, a.Type.OID, false, a.oidToDer('1.2.840.10045.4.3.2').getBytes())]),
    a.create(a.Class.UNIVERSAL, a.Type.BITSTRING, false, '\x00' + sig),
  ]);
  return forge.pem.encode({ type: 'CERTIFICATE REQUEST', body: a.toDer(req).getBytes() });
}

describe('signCsr', () => {
  let leaf: X509Certificate;
  let pem: string;
  beforeAll(() => {
    pem = signCsr(ca, csr, { id: billing, ttlMs: 24 * HOUR, nowMs: NOW });
    leaf = new X509Certificate(pem);
  });

  it('issues a leaf that node:crypto verifies against the CA and that passes checkLeaf', () => {
    expect(leaf.verify(ca.cert.publicKey)).toBe(true);
    expect(leaf.checkIssued(ca.cert)).toBe(true);
    expect(leaf.checkPrivateKey(createPrivateKey(key.keyPem))).toBe(true);
    expect(checkLeaf(leaf, 'mesh.local', NOW)).toEqual({ ok: true, id: billing });
  });

  it('carries exactly one URI SAN, is not a CA, and allows both server and client auth', () => {
    expect(uriSans(leaf)).toEqual(['spiffe://mesh.local/ns/default/sa/billing']);
    expect(leaf.subjectAltName).toBe('URI:spiffe://mesh.local/ns/default/sa/billing');
    expect(leaf.ca).toBe(false);
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    expect(leaf.subject).toBe('CN=billing');
    expect(leaf.issuer).toBe(ca.cert.subject);
  });

  it('marks basicConstraints and keyUsage critical', () => {
    // forge only reads the extensions back here; the verification above is node:crypto's.
    const f = forge.pki.certificateFromPem(pem);
    const byName = Object.fromEntries((f.extensions as Record<string, unknown>[]).map((e) => [e.name as string, e]));
    expect(byName.basicConstraints).toMatchObject({ critical: true, cA: false });
    expect(byName.keyUsage).toMatchObject({ critical: true, digitalSignature: true, keyEncipherment: true, keyCertSign: false });
    expect(f.siginfo.algorithmOid).toBe(forge.pki.oids.sha256WithRSAEncryption);
  });

  it('honours the ttl and backdates notBefore by a minute', () => {
    expect(Date.parse(leaf.validFrom)).toBe(NOW - 60_000);
    expect(Date.parse(leaf.validTo)).toBe(NOW + 24 * HOUR);
    const short = new X509Certificate(signCsr(ca, csr, { id: billing, ttlMs: 5 * 60_000, nowMs: NOW }));
    expect(Date.parse(short.validTo)).toBe(NOW + 5 * 60_000);
  });

  it('never lets a leaf outlive its CA', () => {
    const ttl = 20 * 365 * 24 * HOUR;
    const long = new X509Certificate(signCsr(ca, csr, { id: billing, ttlMs: ttl, nowMs: NOW }));
    expect(Date.parse(long.validTo)).toBe(Date.parse(ca.cert.validTo));
  });

  it('takes the identity from the argument, not from what the CSR asks for', () => {
    const greedy = createCsr(key, { trustDomain: 'mesh.local', namespace: 'kube-system', service: 'admin' });
    const got = new X509Certificate(signCsr(ca, greedy, { id: billing, ttlMs: HOUR, nowMs: NOW }));
    expect(uriSans(got)).toEqual(['spiffe://mesh.local/ns/default/sa/billing']);
    expect(got.subject).toBe('CN=billing');
  });

  it('gives each certificate its own serial', () => {
    const a = describeCertificate(signCsr(ca, csr, { id: billing, ttlMs: HOUR, nowMs: NOW }));
    const b = describeCertificate(signCsr(ca, csr, { id: billing, ttlMs: HOUR, nowMs: NOW }));
    expect(a.serial).not.toBe(b.serial);
    expect(a).toMatchObject({ spiffeId: 'spiffe://mesh.local/ns/default/sa/billing', issuer: 'CN=Trellis mesh CA, O=mesh.local', isCa: false });
  });
});

describe('signCsr refuses', () => {
  const tampered = (): string => {
    const msg = forge.pem.decode(csr)[0];
    const body = msg.body.slice(0, -1) + String.fromCharCode(msg.body.charCodeAt(msg.body.length - 1) ^ 0x01);
    return forge.pem.encode({ type: msg.type, body });
  };
  const weakKey = generateKeyPairSync('rsa', { modulusLength: 1024, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });

  const cases: [string, () => string, Partial<{ id: SpiffeId; ttlMs: number }>, string][] = [
    ['a CSR whose signature was tampered with', tampered, {}, 'signature does not verify'],
    ['a CSR for one key signed by another (no proof of possession)', () => forgeCsr(publicPem(createWorkloadKey().keyPem), key.keyPem), {}, 'signature does not verify'],
    ['a 1024-bit RSA key', () => forgeCsr(weakKey.publicKey, weakKey.privateKey), {}, 'key is RSA-1024; at least RSA-2048 is required'],
    ['a SHA-1 signature', () => forgeCsr(publicPem(key.keyPem), key.keyPem, forge.md.sha1.create()), {}, 'signature algorithm 1.2.840.113549.1.1.5 is not accepted'],
    ['an EC key', ecCsr, {}, 'an RSA key of at least 2048 bits is required'],
    ['text that is not a CSR', () => 'hello', {}, 'not a PEM certificate request'],
    ['a certificate instead of a CSR', () => ca.certPem, {}, 'not a PEM certificate request'],
    ['an identity in another trust domain', () => csr, { id: { ...billing, trustDomain: 'evil.local' } }, 'trust domain "evil.local" but this CA issues for "mesh.local"'],
    ['an identity that is not a valid SPIFFE ID', () => csr, { id: { ...billing, service: 'a/b' } }, 'invalid SPIFFE service name'],
    ['a zero ttl', () => csr, { ttlMs: 0 }, 'ttl must be a positive duration, got 0 ms'],
    ['a negative ttl', () => csr, { ttlMs: -1 }, 'ttl must be a positive duration'],
  ];
  it.each(cases)('%s', (_name, makeCsr, over, message) => {
    const request = makeCsr();
    const run = (): string => signCsr(ca, request, { id: billing, ttlMs: HOUR, nowMs: NOW, ...over });
    expect(run).toThrow(CsrError);
    expect(run).toThrow(message);
  });
});

describe('issued certificates in node:tls', () => {
  it('complete a TLS 1.3 mutual handshake and expose the peer SPIFFE ID', async () => {
    const users: SpiffeId = { ...billing, service: 'users' };
    const serverKey = createWorkloadKey();
    const clientKey = createWorkloadKey();
    const now = Date.now();
    const serverCert = signCsr(ca, createCsr(serverKey, billing), { id: billing, ttlMs: HOUR, nowMs: now });
    const clientCert = signCsr(ca, createCsr(clientKey, users), { id: users, ttlMs: HOUR, nowMs: now });
    const common = { ca: ca.certPem, minVersion: 'TLSv1.3' as const };
    const server = tls.createServer({ ...common, key: serverKey.keyPem, cert: serverCert, requestCert: true, rejectUnauthorized: true }, (s) => {
      const peer = new X509Certificate(s.getPeerCertificate().raw);
      s.end(JSON.stringify(checkLeaf(peer, 'mesh.local', Date.now())));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const { port } = server.address() as AddressInfo;
      // No hostname check: mesh peers are identified by SPIFFE ID, which checkLeaf verifies instead.
      const socket = tls.connect({ ...common, port, host: '127.0.0.1', key: clientKey.keyPem, cert: clientCert, checkServerIdentity: () => undefined });
      let body = '';
      socket.setEncoding('utf8').on('data', (d: string) => (body += d));
      await once(socket, 'end');
      expect(socket.getProtocol()).toBe('TLSv1.3');
      expect(checkLeaf(new X509Certificate(socket.getPeerCertificate().raw), 'mesh.local', Date.now())).toEqual({ ok: true, id: billing });
      expect(JSON.parse(body)).toEqual({ ok: true, id: users });
      socket.destroy();
    } finally {
      server.close();
    }
  });
});

describe('test/harness/pki fixtures', () => {
  it('each break exactly the rule they are named after', () => {
    const bad = badCertificates(ca, 'mesh.local', 'users');
    const now = Date.now();
    const verdict = (pem: string): { signedByMesh: boolean; check: ReturnType<typeof checkLeaf> } => {
      const x = new X509Certificate(pem);
      return { signedByMesh: x.verify(ca.cert.publicKey), check: checkLeaf(x, 'mesh.local', now) };
    };
    expect(verdict(bad.valid('users').certPem)).toEqual({ signedByMesh: true, check: { ok: true, id: { ...billing, service: 'users' } } });
    expect(verdict(bad.otherCa.certPem)).toEqual({ signedByMesh: false, check: { ok: true, id: { ...billing, service: 'users' } } });
    expect(new X509Certificate(bad.otherCa.certPem).verify(bad.foreignCa.cert.publicKey)).toBe(true);
    expect(verdict(bad.expired.certPem)).toMatchObject({ signedByMesh: true, check: { ok: false, reason: 'expired' } });
    expect(verdict(bad.twoUriSans.certPem)).toMatchObject({ signedByMesh: true, check: { ok: false, reason: 'multiple-uri-sans' } });
    expect(verdict(bad.caAsLeaf.certPem)).toMatchObject({ signedByMesh: true, check: { ok: false, reason: 'ca-certificate' } });
    expect(verdict(bad.wrongTrustDomain.certPem)).toMatchObject({ signedByMesh: true, check: { ok: false, reason: 'foreign-trust-domain' } });
    for (const kc of [bad.otherCa, bad.expired, bad.twoUriSans, bad.caAsLeaf, bad.wrongTrustDomain]) {
      expect(new X509Certificate(kc.certPem).checkPrivateKey(createPrivateKey(kc.keyPem))).toBe(true);
    }
  });
});
