// The mesh CA: created once with node-forge (keys from node:crypto), stored in --dir, and loaded by the control plane and standalone sidecars.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';
import { isValidTrustDomain, parseSubjectAltName } from './spiffe.js';

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPem: string;
  readonly trustDomain: string;
  readonly cert: X509Certificate;
}

export const CA_FILES = { cert: 'ca.crt', key: 'ca.key', token: 'admin.token' } as const;

export const CA_COMMON_NAME = 'Trellis mesh CA';
const DEFAULT_VALIDITY_DAYS = 3650;
const DAY_MS = 86_400_000;
// Peers whose clocks run a little behind must not see a brand-new certificate as not yet valid.
export const CLOCK_SKEW_MS = 60_000;

/**
 * 16 random bytes as a positive DER INTEGER. The top bit is cleared so the value is not negative,
 * and bit 6 is set so there is never a leading zero byte that would make the encoding non-minimal
 * (OpenSSL rejects both).
 */
export function randomSerial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x40;
  return b.toString('hex');
}

/** RSA-2048 via node:crypto: forge's pure-JS key generation takes seconds. */
export function generateRsaKeyPem(): string {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicExponent: 0x10001,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  }).privateKey;
}

export function createCa(opts: { trustDomain: string; nowMs?: number; validityDays?: number }): CertificateAuthority {
  const { trustDomain } = opts;
  if (!isValidTrustDomain(trustDomain)) throw new Error(`invalid trust domain "${trustDomain}": must be a lowercase DNS name like mesh.local`);
  const nowMs = opts.nowMs ?? Date.now();
  const validityDays = opts.validityDays ?? DEFAULT_VALIDITY_DAYS;
  if (!(validityDays > 0)) throw new Error(`CA validity must be a positive number of days, got ${validityDays}`);

  const keyPem = generateRsaKeyPem();
  const key = forge.pki.privateKeyFromPem(keyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(nowMs - CLOCK_SKEW_MS);
  cert.validity.notAfter = new Date(nowMs + validityDays * DAY_MS);
  const subject = [
    { shortName: 'CN', value: CA_COMMON_NAME },
    { shortName: 'O', value: trustDomain },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    // pathLen 0: this CA signs workload leaves only, never another CA.
    { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'subjectAltName', altNames: [{ type: 6, value: `spiffe://${trustDomain}` }] },
  ]);
  cert.sign(key, forge.md.sha256.create());
  const certPem = forge.pki.certificateToPem(cert);
  return Object.freeze({ certPem, keyPem, trustDomain, cert: new X509Certificate(certPem) });
}

export interface ForgeSigner {
  readonly cert: forge.pki.Certificate;
  readonly key: forge.pki.rsa.PrivateKey;
}

// Converting PEM to forge objects costs a few milliseconds; a sidecar fleet's CSRs should not pay it each time.
const signers = new WeakMap<CertificateAuthority, ForgeSigner>();

/** The CA as forge objects, for code that creates certificates (issue.ts, test fixtures). */
export function forgeSigner(ca: CertificateAuthority): ForgeSigner {
  let s = signers.get(ca);
  if (!s) {
    s = { cert: forge.pki.certificateFromPem(ca.certPem), key: forge.pki.privateKeyFromPem(ca.keyPem) };
    signers.set(ca, s);
  }
  return s;
}

/** The URI SAN `spiffe://<td>` if present (what we write), else the subject O (what older CAs carry). */
function trustDomainOf(cert: X509Certificate): string | undefined {
  for (const san of parseSubjectAltName(cert.subjectAltName)) {
    const m = san.type === 'URI' ? /^spiffe:\/\/([^/]+)\/?$/.exec(san.value) : null;
    if (m && isValidTrustDomain(m[1])) return m[1];
  }
  const o = cert.subject.split('\n').find((line) => line.startsWith('O='));
  const td = o?.slice(2);
  return td !== undefined && isValidTrustDomain(td) ? td : undefined;
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function loadCa(dir: string): Promise<CertificateAuthority> {
  const hint = `run "mesh certs init --dir ${dir}"`;
  const certPem = await readIfPresent(join(dir, CA_FILES.cert));
  if (certPem === undefined) throw new Error(`no mesh CA in "${dir}" (${CA_FILES.cert} missing): ${hint}`);
  const keyPem = await readIfPresent(join(dir, CA_FILES.key));
  if (keyPem === undefined) throw new Error(`mesh CA in "${dir}" has no private key (${CA_FILES.key} missing): restore it or move ${CA_FILES.cert} away and ${hint}`);

  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch {
    throw new Error(`"${join(dir, CA_FILES.cert)}" is not a PEM certificate`);
  }
  if (!cert.ca) throw new Error(`"${join(dir, CA_FILES.cert)}" is not a CA certificate (basicConstraints cA is not true)`);
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    throw new Error(`"${join(dir, CA_FILES.key)}" is not a PEM private key`);
  }
  // A mismatched pair would sign leaves that nothing trusting ca.crt accepts: fail at start instead.
  if (!matches) throw new Error(`"${join(dir, CA_FILES.key)}" does not belong to "${join(dir, CA_FILES.cert)}"`);
  const trustDomain = trustDomainOf(cert);
  if (trustDomain === undefined) throw new Error(`"${join(dir, CA_FILES.cert)}" names no trust domain (no spiffe://<td> URI SAN or O=<td>)`);
  return Object.freeze({ certPem, keyPem, trustDomain, cert });
}

/**
 * `wx` so a concurrent init (two control planes, or the CLI racing one) can never replace a key that
 * another process already handed out certificates under; chmod because `mode` is filtered by umask.
 */
async function writeNew(path: string, data: string, mode: number): Promise<void> {
  await writeFile(path, data, { flag: 'wx', mode });
  await chmod(path, mode);
}

export async function initCa(dir: string, trustDomain: string): Promise<{ created: boolean; ca: CertificateAuthority }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const certPath = join(dir, CA_FILES.cert);
  if ((await readIfPresent(certPath)) !== undefined) return { created: false, ca: await loadCa(dir) };

  const ca = createCa({ trustDomain });
  const written: string[] = [];
  try {
    // The key goes first and the certificate last: ca.crt's presence is what marks a complete CA.
    const keyPath = join(dir, CA_FILES.key);
    try {
      await writeNew(keyPath, ca.keyPem, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      throw new Error(`"${keyPath}" exists but "${certPath}" does not: refusing to overwrite a CA key; restore ${CA_FILES.cert} or move ${CA_FILES.key} away`);
    }
    written.push(keyPath);
    const tokenPath = join(dir, CA_FILES.token);
    // An operator may have provisioned the admin token already; keeping it is the "never overwrite" rule too.
    if ((await readIfPresent(tokenPath)) === undefined) {
      await writeNew(tokenPath, randomBytes(32).toString('base64url'), 0o600);
      written.push(tokenPath);
    }
    await writeNew(certPath, ca.certPem, 0o644);
  } catch (err) {
    // A half-written CA would block every later init with "exists": remove only what this call created.
    await Promise.all(written.map((p) => unlink(p).catch(() => undefined)));
    throw err;
  }
  return { created: true, ca };
}
