// Tests for the mesh CA: the certificate profile, the files `initCa` writes (and never overwrites), and `loadCa`'s errors.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { CA_FILES, createCa, initCa, loadCa, randomSerial, type CertificateAuthority } from './ca.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'certs-ca-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;

describe('createCa', () => {
  const NOW = Date.parse('2030-01-01T00:00:00Z');
  let ca: CertificateAuthority;
  beforeAll(() => {
    ca = createCa({ trustDomain: 'mesh.local', nowMs: NOW });
  });

  it('is a self-signed RSA-2048 CA that node:crypto verifies', () => {
    expect(ca.cert.ca).toBe(true);
    expect(ca.cert.verify(ca.cert.publicKey)).toBe(true);
    expect(ca.cert.checkIssued(ca.cert)).toBe(true);
    expect(ca.cert.publicKey.asymmetricKeyType).toBe('rsa');
    expect(ca.cert.publicKey.asymmetricKeyDetails?.modulusLength).toBeGreaterThanOrEqual(2048);
    expect(ca.cert.subject).toBe('CN=Trellis mesh CA\nO=mesh.local');
    expect(ca.cert.subjectAltName).toBe('URI:spiffe://mesh.local');
    expect(ca.trustDomain).toBe('mesh.local');
  });

  it('is valid for ten years from a minute before now', () => {
    expect(Date.parse(ca.cert.validFrom)).toBe(NOW - 60_000);
    expect(Date.parse(ca.cert.validTo)).toBe(NOW + 3650 * 86_400_000);
  });

  it('marks basicConstraints and keyUsage critical, with keyCertSign and cRLSign only', () => {
    // forge only reads the extensions back here; nothing is verified with it.
    const exts = forge.pki.certificateFromPem(ca.certPem).extensions as Record<string, unknown>[];
    const byName = Object.fromEntries(exts.map((e) => [e.name as string, e]));
    expect(byName.basicConstraints).toMatchObject({ critical: true, cA: true, pathLenConstraint: 0 });
    expect(byName.keyUsage).toMatchObject({ critical: true, keyCertSign: true, cRLSign: true, digitalSignature: false, keyEncipherment: false });
    expect(forge.pki.certificateFromPem(ca.certPem).siginfo.algorithmOid).toBe(forge.pki.oids.sha256WithRSAEncryption);
  });

  it('uses positive, minimally encoded, 16-byte random serials', () => {
    const serials = new Set(Array.from({ length: 200 }, randomSerial));
    expect(serials.size).toBe(200);
    for (const s of serials) expect(s).toMatch(/^[4-7][0-9a-f]{31}$/);
    expect(ca.cert.serialNumber).toMatch(/^[4-7][0-9A-F]{31}$/);
  });

  it('rejects a trust domain that is not a lowercase DNS name', () => {
    expect(() => createCa({ trustDomain: 'Mesh Local' })).toThrow('invalid trust domain "Mesh Local"');
  });
});

describe('initCa / loadCa', () => {
  it('writes ca.crt 0644, ca.key 0600, admin.token 0600 in a 0700 directory', async () => {
    const dir = join(root, 'fresh', '.mesh');
    const { created, ca } = await initCa(dir, 'mesh.local');
    expect(created).toBe(true);
    expect(await mode(dir)).toBe(0o700);
    expect(await mode(join(dir, CA_FILES.cert))).toBe(0o644);
    expect(await mode(join(dir, CA_FILES.key))).toBe(0o600);
    expect(await mode(join(dir, CA_FILES.token))).toBe(0o600);
    expect(await readFile(join(dir, CA_FILES.cert), 'utf8')).toBe(ca.certPem);
    expect(await readFile(join(dir, CA_FILES.key), 'utf8')).toBe(ca.keyPem);
    const token = await readFile(join(dir, CA_FILES.token), 'utf8');
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(token, 'base64url')).toHaveLength(32);
  });

  it('never overwrites: a second init loads the existing CA, whatever trust domain it is given', async () => {
    const dir = join(root, 'twice');
    const first = await initCa(dir, 'mesh.local');
    const before = await Promise.all(Object.values(CA_FILES).map((f) => readFile(join(dir, f), 'utf8')));
    const second = await initCa(dir, 'other.local');
    expect(second.created).toBe(false);
    expect(second.ca.trustDomain).toBe('mesh.local');
    expect(second.ca.certPem).toBe(first.ca.certPem);
    expect(await Promise.all(Object.values(CA_FILES).map((f) => readFile(join(dir, f), 'utf8')))).toEqual(before);
  });

  it('refuses to replace a CA key whose certificate is missing', async () => {
    const dir = join(root, 'orphan-key');
    await initCa(dir, 'mesh.local');
    await rm(join(dir, CA_FILES.cert));
    const key = await readFile(join(dir, CA_FILES.key), 'utf8');
    await expect(initCa(dir, 'mesh.local')).rejects.toThrow('refusing to overwrite a CA key');
    expect(await readFile(join(dir, CA_FILES.key), 'utf8')).toBe(key);
  });

  it('keeps an admin token that was provisioned before the CA', async () => {
    const dir = join(root, 'token-first');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, CA_FILES.token), 'provisioned');
    expect((await initCa(dir, 'mesh.local')).created).toBe(true);
    expect(await readFile(join(dir, CA_FILES.token), 'utf8')).toBe('provisioned');
  });

  it('loads what init wrote, trust domain included', async () => {
    const dir = join(root, 'load');
    const { ca } = await initCa(dir, 'prod.example.com');
    const loaded = await loadCa(dir);
    expect(loaded.trustDomain).toBe('prod.example.com');
    expect(loaded.certPem).toBe(ca.certPem);
    expect(loaded.keyPem).toBe(ca.keyPem);
    expect(loaded.cert).toBeInstanceOf(X509Certificate);
  });

  it('explains a missing CA in one line', async () => {
    const dir = join(root, 'nothing-here');
    await expect(loadCa(dir)).rejects.toThrow(`no mesh CA in "${dir}" (ca.crt missing): run "mesh certs init --dir ${dir}"`);
  });

  it('explains a missing key', async () => {
    const dir = join(root, 'no-key');
    await initCa(dir, 'mesh.local');
    await rm(join(dir, CA_FILES.key));
    await expect(loadCa(dir)).rejects.toThrow(`mesh CA in "${dir}" has no private key (ca.key missing)`);
  });

  it('refuses a key that does not belong to the certificate', async () => {
    const dir = join(root, 'mismatch');
    await initCa(dir, 'mesh.local');
    await writeFile(join(dir, CA_FILES.key), createCa({ trustDomain: 'mesh.local' }).keyPem);
    await expect(loadCa(dir)).rejects.toThrow('does not belong to');
  });

  it('refuses a certificate that is not a CA', async () => {
    const dir = join(root, 'garbage');
    await initCa(dir, 'mesh.local');
    await writeFile(join(dir, CA_FILES.cert), 'hello');
    await expect(loadCa(dir)).rejects.toThrow('is not a PEM certificate');
  });
});
