// Tests for SPIFFE ID parsing, Node subjectAltName tokenizing, and the leaf profile check (table-driven on stand-in certificates).
import { describe, it, expect } from 'vitest';
import { X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { generateRsaKeyPem } from './ca.js';
import { checkLeaf, isValidTrustDomain, parseSpiffeUri, parseSubjectAltName, spiffeUri, uriSans, type LeafProblem } from './spiffe.js';

const ID = { trustDomain: 'mesh.local', namespace: 'default', service: 'billing' };

describe('spiffeUri / parseSpiffeUri', () => {
  it('round-trips', () => {
    expect(spiffeUri(ID)).toBe('spiffe://mesh.local/ns/default/sa/billing');
    expect(parseSpiffeUri(spiffeUri(ID))).toEqual(ID);
  });

  const rejected: [string, string][] = [
    ['another scheme', 'https://mesh.local/ns/default/sa/billing'],
    ['upper-case scheme', 'SPIFFE://mesh.local/ns/default/sa/billing'],
    ['upper-case trust domain', 'spiffe://Mesh.local/ns/default/sa/billing'],
    ['port', 'spiffe://mesh.local:443/ns/default/sa/billing'],
    ['userinfo', 'spiffe://a@mesh.local/ns/default/sa/billing'],
    ['trust domain only', 'spiffe://mesh.local'],
    ['missing sa', 'spiffe://mesh.local/ns/default/billing'],
    ['swapped keywords', 'spiffe://mesh.local/sa/default/ns/billing'],
    ['extra segment', 'spiffe://mesh.local/ns/default/sa/billing/x'],
    ['trailing slash', 'spiffe://mesh.local/ns/default/sa/billing/'],
    ['empty service', 'spiffe://mesh.local/ns/default/sa/'],
    ['dot-dot service', 'spiffe://mesh.local/ns/default/sa/..'],
    ['percent-encoding', 'spiffe://mesh.local/ns/default/sa/bil%6Cing'],
    ['query', 'spiffe://mesh.local/ns/default/sa/billing?x=1'],
    ['fragment', 'spiffe://mesh.local/ns/default/sa/billing#x'],
    ['comma', 'spiffe://mesh.local/ns/default/sa/a,b'],
    ['space', 'spiffe://mesh.local/ns/default/sa/a b'],
    ['too long', `spiffe://mesh.local/ns/default/sa/${'a'.repeat(2100)}`],
  ];
  it.each(rejected)('rejects %s', (_name, uri) => {
    expect(parseSpiffeUri(uri)).toBeUndefined();
  });

  it('refuses to build an ID that would not parse back', () => {
    expect(() => spiffeUri({ ...ID, service: 'a/b' })).toThrow('invalid SPIFFE service name "a/b"');
    expect(() => spiffeUri({ ...ID, namespace: '..' })).toThrow('invalid SPIFFE namespace');
    expect(() => spiffeUri({ ...ID, trustDomain: 'Mesh.Local' })).toThrow('invalid SPIFFE trust domain');
  });

  it.each([
    ['mesh.local', true],
    ['a', true],
    ['prod-1.example.com', true],
    ['Mesh.local', false],
    ['-mesh.local', false],
    ['mesh..local', false],
    ['mesh_local', false],
    ['', false],
  ] as const)('isValidTrustDomain(%j) is %s', (td, want) => {
    expect(isValidTrustDomain(td)).toBe(want);
  });
});

describe('parseSubjectAltName', () => {
  const cases: [string, string | undefined, { type: string; value: string }[]][] = [
    ['absent', undefined, []],
    ['one URI', 'URI:spiffe://mesh.local/ns/default/sa/a', [{ type: 'URI', value: 'spiffe://mesh.local/ns/default/sa/a' }]],
    [
      'mixed types',
      'DNS:a.example, URI:spiffe://x/ns/n/sa/s, IP Address:127.0.0.1',
      [{ type: 'DNS', value: 'a.example' }, { type: 'URI', value: 'spiffe://x/ns/n/sa/s' }, { type: 'IP Address', value: '127.0.0.1' }],
    ],
    [
      'a quoted value hiding a second URI',
      'URI:"spiffe://a\\u002c URI:spiffe://b", DNS:x',
      [{ type: 'URI', value: 'spiffe://a, URI:spiffe://b' }, { type: 'DNS', value: 'x' }],
    ],
    ['a quoted value with an escaped quote', 'URI:"a\\"b"', [{ type: 'URI', value: 'a"b' }]],
  ];
  it.each(cases)('%s', (_name, text, want) => {
    expect(parseSubjectAltName(text)).toEqual(want);
  });

  it('throws on text Node would never produce', () => {
    expect(() => parseSubjectAltName('URI:"unterminated')).toThrow('unterminated');
    expect(() => parseSubjectAltName('no colon here')).toThrow('malformed');
  });

  it('reads what Node renders for a real certificate whose URI SAN contains a comma', () => {
    const key = forge.pki.privateKeyFromPem(generateRsaKeyPem());
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.setRsaPublicKey(key.n, key.e);
    cert.serialNumber = '01';
    cert.validity.notBefore = new Date();
    cert.validity.notAfter = new Date(Date.now() + 3_600_000);
    cert.setSubject([{ shortName: 'CN', value: 'x' }]);
    cert.setIssuer([{ shortName: 'CN', value: 'x' }]);
    cert.setExtensions([
      { name: 'subjectAltName', altNames: [{ type: 6, value: 'spiffe://mesh.local/ns/default/sa/a, URI:spiffe://mesh.local/ns/default/sa/b' }] },
    ]);
    cert.sign(key, forge.md.sha256.create());
    const x = new X509Certificate(forge.pki.certificateToPem(cert));
    expect(uriSans(x)).toEqual(['spiffe://mesh.local/ns/default/sa/a, URI:spiffe://mesh.local/ns/default/sa/b']);
    expect(checkLeaf(x, 'mesh.local', Date.now())).toMatchObject({ ok: false, reason: 'bad-spiffe-id' });
  });
});

describe('checkLeaf', () => {
  const NOW = Date.parse('2030-06-01T12:00:00Z');
  const good = {
    subjectAltName: 'URI:spiffe://mesh.local/ns/default/sa/billing, DNS:billing',
    ca: false,
    validFrom: 'Jun  1 11:00:00 2030 GMT',
    validTo: 'Jun  1 13:00:00 2030 GMT',
  };
  // checkLeaf reads only these four properties, so a stand-in keeps the table free of key generation.
  const fake = (over: Partial<typeof good>): X509Certificate => ({ ...good, ...over }) as unknown as X509Certificate;

  it('accepts a leaf in the trust domain', () => {
    expect(checkLeaf(fake({}), 'mesh.local', NOW)).toEqual({ ok: true, id: ID });
  });

  const cases: [string, Partial<typeof good>, LeafProblem][] = [
    ['no SAN at all', { subjectAltName: undefined as unknown as string }, 'no-uri-san'],
    ['only a DNS SAN', { subjectAltName: 'DNS:billing' }, 'no-uri-san'],
    ['two URI SANs', { subjectAltName: 'URI:spiffe://mesh.local/ns/default/sa/a, URI:spiffe://mesh.local/ns/default/sa/b' }, 'multiple-uri-sans'],
    ['a non-SPIFFE URI', { subjectAltName: 'URI:https://billing' }, 'bad-spiffe-id'],
    ['a CA', { ca: true }, 'ca-certificate'],
    ['another trust domain', { subjectAltName: 'URI:spiffe://evil.local/ns/default/sa/billing' }, 'foreign-trust-domain'],
    ['expired', { validTo: 'Jun  1 11:59:59 2030 GMT' }, 'expired'],
    ['not yet valid', { validFrom: 'Jun  1 12:00:01 2030 GMT' }, 'not-yet-valid'],
    ['unreadable dates', { validFrom: 'garbage' }, 'not-yet-valid'],
  ];
  it.each(cases)('refuses %s', (_name, over, reason) => {
    const r = checkLeaf(fake(over), 'mesh.local', NOW);
    expect(r).toMatchObject({ ok: false, reason });
    expect(r.ok ? '' : r.detail).not.toBe('');
  });

  it('treats the validity bounds as inclusive', () => {
    expect(checkLeaf(fake({ validFrom: 'Jun  1 12:00:00 2030 GMT', validTo: 'Jun  1 12:00:00 2030 GMT' }), 'mesh.local', NOW).ok).toBe(true);
  });
});
