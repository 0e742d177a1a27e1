// Tests for `mesh certs init|inspect`: exact output lines and exit codes, files on disk, and the sidecar admin form.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCa } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import { createCsr, createWorkloadKey } from '../certs/workload.js';
import { certsCommand } from './certs-cmd.js';

async function run(argv: string[]): Promise<{ code: number; stdout: string[]; stderr: string[] }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await certsCommand(argv, { stdout: (s) => stdout.push(s), stderr: (s) => stderr.push(s) });
  return { code, stdout, stderr };
}

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'certs-cmd-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('mesh certs init', () => {
  it('creates the CA once, then leaves it alone', async () => {
    const dir = join(root, '.mesh');
    expect(await run(['init', '--dir', dir])).toEqual({
      code: 0,
      stdout: [`created mesh CA for trust domain "mesh.local" in ${dir} (ca.crt, ca.key, admin.token)`],
      stderr: [],
    });
    const key = await readFile(join(dir, 'ca.key'), 'utf8');
    expect(await run(['init', '--dir', dir])).toEqual({
      code: 0,
      stdout: [`mesh CA already exists in ${dir} (trust domain "mesh.local"); nothing changed`],
      stderr: [],
    });
    expect(await run(['init', '--dir', dir, '--trust-domain', 'other.local'])).toEqual({
      code: 0,
      stdout: [`mesh CA already exists in ${dir} (trust domain "mesh.local", not the requested "other.local"); nothing changed`],
      stderr: [],
    });
    expect(await readFile(join(dir, 'ca.key'), 'utf8')).toBe(key);
  });

  it('takes the trust domain from the flag', async () => {
    const dir = join(root, 'prod');
    const r = await run(['init', '--dir', dir, '--trust-domain', 'prod.example.com']);
    expect(r.stdout).toEqual([`created mesh CA for trust domain "prod.example.com" in ${dir} (ca.crt, ca.key, admin.token)`]);
    expect((await loadCa(dir)).trustDomain).toBe('prod.example.com');
  });

  const usage: [string, string[], string][] = [
    ['a bad trust domain', ['init', '--trust-domain', 'Mesh_Local'], 'mesh: --trust-domain: expected a lowercase DNS name like mesh.local, got "Mesh_Local"'],
    ['an unknown flag', ['init', '--force'], "mesh: Unknown option '--force'"],
    ['no subcommand', [], 'mesh: mesh certs needs a subcommand: init or inspect'],
    ['an unknown subcommand', ['rotate'], 'mesh: unknown subcommand "certs rotate" (expected init or inspect)'],
    ['inspect with nothing', ['inspect'], 'mesh: mesh certs inspect takes one of FILE, --admin HOST:PORT or --service NAME'],
    ['inspect with two forms', ['inspect', 'a.crt', '--admin', '127.0.0.1:1'], 'mesh: mesh certs inspect takes one of FILE, --admin HOST:PORT or --service NAME'],
    ['a malformed admin address', ['inspect', '--admin', 'localhost'], 'mesh: --admin: expected HOST:PORT, got "localhost"'],
    ['--service', ['inspect', '--service', 'billing'], 'mesh certs inspect --service needs the control plane, which this build does not have yet; use FILE or --admin'],
  ];
  it.each(usage)('exits 2 on %s', async (_name, argv, line) => {
    const r = await run(argv);
    expect(r.code).toBe(2);
    expect(r.stdout).toEqual([]);
    expect(r.stderr).toHaveLength(1);
    expect(r.stderr[0]).toContain(line);
  });
});

describe('mesh certs inspect', () => {
  let leafFile: string;
  let caFile: string;
  let serial: string;
  const NOW = Date.parse('2031-05-01T08:00:00Z');
  beforeAll(async () => {
    const dir = join(root, 'inspect');
    await run(['init', '--dir', dir]);
    const ca = await loadCa(dir);
    const key = createWorkloadKey();
    const id = { trustDomain: 'mesh.local', namespace: 'shop', service: 'billing' };
    const pem = signCsr(ca, createCsr(key, id), { id, ttlMs: 3_600_000, nowMs: NOW });
    leafFile = join(root, 'billing.crt');
    await writeFile(leafFile, pem);
    caFile = join(dir, 'ca.crt');
    serial = new X509Certificate(pem).serialNumber;
  });

  it('prints a leaf', async () => {
    expect(await run(['inspect', leafFile])).toEqual({
      code: 0,
      stdout: [
        'spiffe id: spiffe://mesh.local/ns/shop/sa/billing',
        `serial: ${serial}`,
        'not before: 2031-05-01T07:59:00.000Z',
        'not after: 2031-05-01T09:00:00.000Z',
        'issuer: CN=Trellis mesh CA, O=mesh.local',
        'ca: no',
      ],
      stderr: [],
    });
  });

  it('prints the CA', async () => {
    const r = await run(['inspect', caFile]);
    expect(r.code).toBe(0);
    expect(r.stdout[0]).toBe('spiffe id: spiffe://mesh.local');
    expect(r.stdout[5]).toBe('ca: yes');
  });

  it('exits 1 with one line for a missing or non-PEM file', async () => {
    const missing = join(root, 'nope.crt');
    expect(await run(['inspect', missing])).toEqual({ code: 1, stdout: [], stderr: [`mesh: ${missing}: file not found`] });
    const junk = join(root, 'junk.crt');
    await writeFile(junk, 'not a certificate\n');
    expect(await run(['inspect', junk])).toEqual({
      code: 1,
      stdout: [],
      stderr: [`mesh: ${junk}: not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line)`],
    });
  });

  describe('--admin', () => {
    let server: http.Server;
    let address: string;
    let answer: { status: number; body: string };
    beforeAll(async () => {
      server = http.createServer((req, res) => {
        if (req.url !== '/certs') return void res.writeHead(404).end();
        res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(() => {
      server.close();
    });

    it("prints the sidecar's current certificate", async () => {
      answer = {
        status: 200,
        body: JSON.stringify({ spiffeId: 'spiffe://mesh.local/ns/default/sa/users', serial: '4A2F', notBefore: '2031-05-01T07:59:00.000Z', notAfter: Date.parse('2031-05-02T08:00:00Z'), rotations: 3 }),
      };
      expect(await run(['inspect', '--admin', address])).toEqual({
        code: 0,
        stdout: [
          'spiffe id: spiffe://mesh.local/ns/default/sa/users',
          'serial: 4A2F',
          'not before: 2031-05-01T07:59:00.000Z',
          'not after: 2031-05-02T08:00:00.000Z',
          'rotations: 3',
        ],
        stderr: [],
      });
    });

    it('exits 1 on an error status or a body of the wrong shape', async () => {
      answer = { status: 503, body: '{}' };
      expect(await run(['inspect', '--admin', address])).toEqual({ code: 1, stdout: [], stderr: [`mesh: GET http://${address}/certs: HTTP 503`] });
      answer = { status: 200, body: JSON.stringify({ spiffeId: 'x', notBefore: 'soon' }) };
      expect(await run(['inspect', '--admin', address])).toEqual({ code: 1, stdout: [], stderr: [`mesh: GET http://${address}/certs: serial is missing`] });
    });

    it('exits 1 when nothing listens', async () => {
      const probe = http.createServer();
      probe.listen(0, '127.0.0.1');
      await once(probe, 'listening');
      const port = (probe.address() as AddressInfo).port;
      await new Promise((resolve) => probe.close(resolve));
      expect(await run(['inspect', '--admin', `127.0.0.1:${port}`])).toEqual({
        code: 1,
        stdout: [],
        stderr: [`mesh: GET http://127.0.0.1:${port}/certs: ECONNREFUSED`],
      });
    });
  });
});
