// Tests for the admin commands (apply, delete, diff, get, token, status, check) against a real control-plane process:
// exact output lines and exit codes, the wrong-token and unreachable cases, and a fake sidecar for the sync columns.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import { createMeshClient, type MeshClient } from '../api/cp-client.js';
import type { DiscoveryRequest, SnapshotMessage } from '../api/protocol.js';
import { initCa } from '../certs/ca.js';
import { waitFor, withDeadline } from '../test/harness/wait.js';
import type { CommandOutput } from './cp-connect.js';
import { applyCommand, deleteCommand, diffCommand, getCommand } from './resources-cmd.js';
import { checkCommand, statusCommand } from './status-cmd.js';
import { tokenCommand } from './token-cmd.js';

const MAIN = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
const GOOD = fileURLToPath(new URL('../examples/validate/good.yaml', import.meta.url));

type Command = (argv: string[], out: CommandOutput, env?: NodeJS.ProcessEnv) => Promise<number>;
interface Result { code: number; stdout: string[]; stderr: string[] }

let root: string;
let dir: string;
let cp: ChildProcess;
let address: string;

/** Runs a command function with the control plane's flags and an empty environment (nothing leaks in from the shell). */
async function run(cmd: Command, argv: string[], env: NodeJS.ProcessEnv = {}, flags = ['--control-plane', address, '--dir', dir]): Promise<Result> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await cmd([...argv, ...flags], { stdout: (s) => stdout.push(s), stderr: (s) => stderr.push(s) }, env);
  return { code, stdout, stderr };
}

async function stored(): Promise<unknown[]> {
  const r = await run(getCommand, ['all', '-o', 'json']);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout.join('\n')) as unknown[];
}

async function tempFile(name: string, text: string): Promise<string> {
  const p = join(root, name);
  await writeFile(p, text);
  return p;
}

/** A port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'admin-cmds-'));
  dir = join(root, '.mesh');
  cp = spawn(process.execPath, [MAIN, 'control-plane', '--dir', dir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--log-level', 'info'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const lines = createInterface({ input: cp.stderr! });
  const seen: string[] = [];
  address = await withDeadline(new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      seen.push(line);
      try {
        const ev = JSON.parse(line) as { event?: string; grpc?: string };
        if (ev.event === 'listening' && ev.grpc) resolve(ev.grpc);
      } catch {
        // not a JSON log line
      }
    });
    cp.once('exit', (code) => reject(new Error(`control plane exited with ${code}: ${seen.join('\n')}`)));
  }), 20_000, 'the control plane to log "listening"');
});

afterAll(async () => {
  if (cp && cp.exitCode === null && cp.signalCode === null) {
    const exited = once(cp, 'exit');
    cp.kill('SIGTERM');
    await withDeadline(exited, 10_000, 'the control plane to exit').catch(() => cp.kill('SIGKILL'));
  }
  await rm(root, { recursive: true, force: true });
});

const GOOD_IDS = [
  'Service/billing', 'Service/billing-shadow', 'Endpoints/billing', 'Endpoints/billing-shadow', 'Route/billing',
  'TrafficPolicy/billing', 'TrafficPolicy/billing-shadow', 'AccessPolicy/billing', 'MeshConfig/default',
];

describe('mesh apply / get / diff / delete', () => {
  it('applies a valid file, then reports it unchanged', async () => {
    expect(await run(applyCommand, ['-f', GOOD])).toEqual({ code: 0, stdout: GOOD_IDS.map((id) => `created ${id}`), stderr: [] });
    expect(await run(applyCommand, ['-f', GOOD])).toEqual({ code: 0, stdout: GOOD_IDS.map((id) => `unchanged ${id}`), stderr: [] });
  });

  it('rejects an invalid file with FILE:LINE lines and writes nothing', async () => {
    const before = await stored();
    const bad = await tempFile('bad.yaml', [
      'apiVersion: mesh/v1',
      'kind: Service',
      'metadata: { name: ledger }',
      '---',
      'apiVersion: mesh/v1',
      'kind: Route',
      'metadata: { name: payments }',
      'spec:',
      '  hosts: [payments]',
      '  rules:',
      '    - backends:',
      '        - { service: payments }',
      '---',
      'apiVersion: mesh/v1',
      'kind: TrafficPolicy',
      'metadata: { name: ledger }',
      'spec:',
      '  service: ledger',
      '  loadBalancer: { policy: fastest }',
      '',
    ].join('\n'));
    expect(await run(applyCommand, ['-f', bad])).toEqual({
      code: 1,
      stdout: [],
      stderr: [`${bad}:19 TrafficPolicy/ledger spec.loadBalancer.policy: must be one of: ewma, least-request, round-robin, random, ring-hash`],
    });
    const dangling = await tempFile('dangling.yaml', 'apiVersion: mesh/v1\nkind: Route\nmetadata: { name: payments }\nspec:\n  hosts: [payments]\n  rules:\n    - backends:\n        - { service: payments }\n');
    expect(await run(applyCommand, ['-f', dangling])).toEqual({
      code: 1,
      stdout: [],
      stderr: [`${dangling}:8 Route/payments spec.rules[0].backends[0].service: references unknown service "payments"`],
    });
    expect(await stored()).toEqual(before);
    expect(await run(getCommand, ['service', 'ledger'])).toEqual({ code: 1, stdout: [], stderr: ['mesh: Service/ledger not found'] });
  });

  it('lists resources as a table, one kind, or one resource', async () => {
    expect(await run(getCommand, ['all'])).toEqual({
      code: 0,
      stdout: [
        'KIND           NAMESPACE  NAME            SUMMARY',
        'AccessPolicy   default    billing         service=billing action=allow',
        'Endpoints      default    billing         endpoints=2',
        'Endpoints      default    billing-shadow  endpoints=1',
        'MeshConfig     default    default         mtls=strict',
        'Route          default    billing         hosts=billing',
        'Service        default    billing         protocol=http',
        'Service        default    billing-shadow  protocol=http',
        'TrafficPolicy  default    billing         service=billing lb=ewma',
        'TrafficPolicy  default    billing-shadow  service=billing-shadow lb=ewma',
      ],
      stderr: [],
    });
    expect((await run(getCommand, ['routes'])).stdout).toEqual([
      'KIND   NAMESPACE  NAME     SUMMARY',
      'Route  default    billing  hosts=billing',
    ]);
    expect((await run(getCommand, ['Service', 'billing', '--namespace', 'default'])).stdout).toEqual([
      'KIND     NAMESPACE  NAME     SUMMARY',
      'Service  default    billing  protocol=http',
    ]);
    expect(await run(getCommand, ['service', '--namespace', 'shop'])).toEqual({ code: 0, stdout: [], stderr: ['no resources found in namespace shop'] });
    const json = await run(getCommand, ['service', 'billing', '-o', 'json']);
    expect(JSON.parse(json.stdout.join('\n'))).toEqual([{ apiVersion: 'mesh/v1', kind: 'Service', metadata: { name: 'billing' }, spec: { protocol: 'http' } }]);
  });

  it('get -o yaml round-trips through apply', async () => {
    const yaml = await run(getCommand, ['all', '-o', 'yaml']);
    expect(yaml.code).toBe(0);
    const file = await tempFile('export.yaml', yaml.stdout.join('\n') + '\n');
    expect((await readFile(file, 'utf8')).split('\n---\n')).toHaveLength(GOOD_IDS.length);
    const r = await run(applyCommand, ['-f', file]);
    expect(r.code).toBe(0);
    expect(r.stderr).toEqual([]);
    expect([...r.stdout].sort()).toEqual(GOOD_IDS.map((id) => `unchanged ${id}`).sort());
  });

  it('diff: exit 0 without changes, 1 with the change shown, 2 on issues', async () => {
    expect(await run(diffCommand, ['-f', GOOD])).toEqual({ code: 0, stdout: [], stderr: [] });
    const grpcFile = await tempFile('grpc.yaml', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: billing }\nspec:\n  protocol: grpc\n');
    const changed = await run(diffCommand, ['-f', grpcFile]);
    expect(changed.code).toBe(1);
    expect(changed.stderr).toEqual([]);
    const text = changed.stdout.join('\n').split('\n');
    expect(text[0]).toBe('~ Service/billing');
    expect(text).toContain('  +   protocol: grpc');
    expect(text).toContain('  -   protocol: http');
    const bad = await tempFile('bad-diff.yaml', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: billing }\nspec:\n  protocol: udp\n');
    const issues = await run(diffCommand, ['-f', bad]);
    expect(issues.code).toBe(2);
    expect(issues.stdout).toEqual([]);
    expect(issues.stderr).toEqual([`${bad}:5 Service/billing spec.protocol: must be one of: http, grpc, tcp`]);
  });

  it('apply --dry-run reports without writing', async () => {
    const grpcFile = await tempFile('grpc-dry.yaml', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: billing }\nspec:\n  protocol: grpc\n');
    expect(await run(applyCommand, ['-f', grpcFile, '--dry-run'])).toEqual({ code: 0, stdout: ['configured Service/billing (dry run)'], stderr: [] });
    expect((await run(getCommand, ['service', 'billing'])).stdout[1]).toBe('Service  default    billing  protocol=http');
  });

  it('deletes by KIND NAME and by file; refuses a delete that leaves dangling references', async () => {
    expect(await run(deleteCommand, ['accesspolicy', 'billing'])).toEqual({ code: 0, stdout: ['deleted AccessPolicy/billing'], stderr: [] });
    expect(await run(deleteCommand, ['accesspolicy', 'billing'])).toEqual({ code: 0, stdout: ['not found AccessPolicy/billing'], stderr: [] });
    const refused = await run(deleteCommand, ['Service', 'billing-shadow']);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toEqual([]);
    expect(refused.stderr.length).toBeGreaterThan(0);
    for (const line of refused.stderr) expect(line).toMatch(/^deleting would leave: store:\d+ \S+ \S+: references unknown service "billing-shadow"$/);
    const extra = await tempFile('extra.yaml', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: ledger }\n');
    expect((await run(applyCommand, ['-f', extra])).stdout).toEqual(['created Service/ledger']);
    expect(await run(deleteCommand, ['-f', extra])).toEqual({ code: 0, stdout: ['deleted Service/ledger'], stderr: [] });
    expect((await run(getCommand, ['service'])).stdout.map((l) => l.split(/\s+/)[2])).toEqual(['NAME', 'billing', 'billing-shadow']);
  });
});

describe('mesh token create', () => {
  it('prints only the token on stdout and its expiry on stderr', async () => {
    const r = await run(tokenCommand, ['create', '--service', 'users', '--ttl', '1h']);
    expect(r.code).toBe(0);
    expect(r.stdout).toHaveLength(1);
    expect(r.stdout[0]).toMatch(/^trellis\.[A-Za-z0-9_-]+$/);
    expect(r.stderr).toHaveLength(1);
    expect(r.stderr[0]).toMatch(/^join token for default\/users expires \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z \(in (59m|1h)\)$/);
  });
});

/** A sidecar speaking the discovery stream by hand, so the test decides when it ACKs or NACKs. */
class FakeSidecar {
  readonly client: MeshClient;
  readonly stream: grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage>;
  snapshots: SnapshotMessage[] = [];
  mode: 'hold' | 'ack' | 'nack' = 'hold';

  constructor(caPem: string) {
    this.client = createMeshClient({ address, caPem, trustDomain: 'mesh.local' });
    this.stream = (this.client.Discover as () => grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage>)();
    this.stream.on('data', (s: SnapshotMessage) => {
      this.snapshots.push(s);
      this.reply(s);
    });
    this.stream.on('error', () => undefined);
    this.stream.write({
      hello: { service: 'billing', namespace: 'default', instance: 'billing-1', address: '127.0.0.1:19001', labels: {}, version: '', certExpiryUnix: Math.floor(Date.now() / 1000) + 3600 },
    });
  }

  reply(s: SnapshotMessage): void {
    if (this.mode === 'ack') this.stream.write({ ack: { version: s.version, nonce: s.nonce } });
    if (this.mode === 'nack') this.stream.write({ nack: { version: s.version, nonce: s.nonce, error: 'route billing: unsupported field' } });
  }

  close(): void {
    this.stream.cancel();
    this.client.close();
  }
}

describe('mesh status / check', () => {
  it('prints the header and no sidecars; check passes', async () => {
    const status = await run(statusCommand, []);
    expect(status.code).toBe(0);
    expect(status.stderr).toEqual([]);
    expect(status.stdout).toHaveLength(2);
    expect(status.stdout[0]).toMatch(new RegExp(`^control plane ${address}: revision \\d+, store embedded \\(healthy\\)$`));
    expect(status.stdout[1]).toBe('no sidecars connected');
    const check = await run(checkCommand, []);
    expect(check.stderr).toEqual([]);
    expect(check.code).toBe(0);
    expect(check.stdout).toEqual([
      expect.stringMatching(new RegExp(`^ok: control plane ${address} answers \\(revision \\d+\\)$`)),
      'ok: store embedded healthy',
      expect.stringMatching(/^ok: CA for trust domain mesh\.local valid until \d{4}-/),
      'ok: no sidecars connected',
    ]);
    const json = JSON.parse((await run(statusCommand, ['-o', 'json'])).stdout.join('\n')) as { storeHealthy: boolean; sidecars: unknown[]; controlPlane: string };
    expect(json).toMatchObject({ storeHealthy: true, sidecars: [] });
    expect(typeof json.controlPlane).toBe('string');
  });

  it('shows a sidecar pending, in sync, then NACKed; check fails on pending and NACK', async () => {
    const sidecar = new FakeSidecar(await readFile(join(dir, 'ca.crt'), 'utf8'));
    try {
      await waitFor(() => sidecar.snapshots.length > 0, { what: 'a first snapshot', timeoutMs: 10_000 });
      const row = async (): Promise<string> => (await run(statusCommand, [])).stdout.find((l) => l.startsWith('billing ')) ?? '';
      const pending = await run(statusCommand, []);
      expect(pending.stdout[2]).toMatch(/^SERVICE\s+INSTANCE\s+ADDRESS\s+VERSION\s+SYNC\s+CERT-EXPIRES\s+CONNECTED\s+CONTROL-PLANE$/);
      expect(await row()).toMatch(/^billing\s+billing-1\s+127\.0\.0\.1:19001\s+-\s+pending\s+in (59m|1h)\s+\d+s ago\s+\S+$/);
      const notYet = await run(checkCommand, []);
      expect(notYet.code).toBe(1);
      expect(notYet.stderr).toEqual([expect.stringMatching(/^sidecar billing\/billing-1: pending: sent version \d+, acknowledged -$/)]);

      sidecar.mode = 'ack';
      sidecar.reply(sidecar.snapshots[sidecar.snapshots.length - 1]);
      // Its own registration changes its view, so more pushes may follow the first ACK (all acked in 'ack' mode):
      // wait until status and check agree on the converged state.
      await waitFor(async () => {
        const c = await run(checkCommand, []);
        return c.code === 0 && c.stdout.includes('ok: 1 sidecar in sync') && /^billing\s+billing-1\s+127\.0\.0\.1:19001\s+\d+\s+in sync\s+/.test(await row());
      }, { what: 'check to pass and status to show in sync once the sidecar ACKed', timeoutMs: 10_000 });

      sidecar.mode = 'nack';
      const extra = await tempFile('nack.yaml', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: audit }\n');
      expect((await run(applyCommand, ['-f', extra])).stdout).toEqual(['created Service/audit']);
      await waitFor(async () => (await row()).includes('NACK: route billing: unsupported field'), { what: 'status to show the NACK', timeoutMs: 10_000 });
      const check = await run(checkCommand, []);
      expect(check.code).toBe(1);
      expect(check.stderr).toEqual(['sidecar billing/billing-1: NACK: route billing: unsupported field']);
      expect(check.stdout).toContain('ok: store embedded healthy');
    } finally {
      sidecar.close();
    }
  });
});

describe('errors are one line', () => {
  const ADMIN_REFUSED = 'admin token required (admin.token in --dir, or MESH_TOKEN)';

  it('a wrong token (MESH_TOKEN, or admin.token in --dir) exits 1', async () => {
    expect(await run(getCommand, ['all'], { MESH_TOKEN: 'wrong' })).toEqual({
      code: 1, stdout: [], stderr: [`mesh: control plane ${address} refused the admin token from MESH_TOKEN: ${ADMIN_REFUSED}`],
    });
    const other = join(root, 'wrong-token');
    await initCa(other, 'mesh.local');
    // Same trust domain, another CA: the handshake fails before any token is sent.
    const r = await run(statusCommand, [], {}, ['--control-plane', address, '--dir', other]);
    expect(r.code).toBe(1);
    expect(r.stderr).toHaveLength(1);
    expect(r.stderr[0]).toMatch(new RegExp(`^mesh: control plane ${address} unreachable: .*certificate.* \\(is --dir the directory this control plane uses\\?\\)$`));
    // The right CA with somebody else's admin token.
    const copy = join(root, 'copy');
    await initCa(copy, 'mesh.local');
    await writeFile(join(copy, 'ca.crt'), await readFile(join(dir, 'ca.crt')));
    expect(await run(tokenCommand, ['create', '--service', 'users'], {}, ['--control-plane', address, '--dir', copy])).toEqual({
      code: 1, stdout: [], stderr: [`mesh: control plane ${address} refused the admin token from ${join(copy, 'admin.token')}: ${ADMIN_REFUSED}`],
    });
  });

  it('the right token from MESH_TOKEN and the address from MESH_CONTROL_PLANE are used', async () => {
    const token = (await readFile(join(dir, 'admin.token'), 'utf8')).trim();
    const copy = join(root, 'env');
    await initCa(copy, 'mesh.local');
    await writeFile(join(copy, 'ca.crt'), await readFile(join(dir, 'ca.crt')));
    const r = await run(getCommand, ['route'], { MESH_TOKEN: token, MESH_CONTROL_PLANE: address }, ['--dir', copy]);
    expect(r).toEqual({ code: 0, stdout: ['KIND   NAMESPACE  NAME     SUMMARY', 'Route  default    billing  hosts=billing'], stderr: [] });
  });

  it('an unreachable control plane exits 1 (diff: 2) with one line', async () => {
    const port = await closedPort();
    const where = `127.0.0.1:${port}`;
    const line = `mesh: control plane ${where} unreachable: connect ECONNREFUSED ${where}`;
    const flags = ['--control-plane', where, '--dir', dir];
    for (const [cmd, argv, code] of [
      [getCommand, ['all'], 1], [applyCommand, ['-f', GOOD], 1], [statusCommand, [], 1], [checkCommand, [], 1],
      [tokenCommand, ['create', '--service', 'users'], 1], [deleteCommand, ['service', 'x'], 1], [diffCommand, ['-f', GOOD], 2],
    ] as [Command, string[], number][]) {
      expect(await run(cmd, argv, {}, flags)).toEqual({ code, stdout: [], stderr: [line] });
    }
  });

  const usage: [string, Command, string[], string][] = [
    ['apply without -f', applyCommand, [], 'mesh: mesh apply needs -f FILE'],
    ['a missing file', applyCommand, ['-f', '/nonexistent/x.yaml'], 'mesh: /nonexistent/x.yaml: file not found'],
    ['get without KIND', getCommand, [], 'mesh: mesh get needs a KIND (one of Service, Endpoints, Route, TrafficPolicy, AccessPolicy, MeshConfig, or all)'],
    ['an unknown -o', getCommand, ['route', '-o', 'wide'], 'mesh: -o: expected table, yaml, json, got "wide"'],
    ['an unknown kind', getCommand, ['gateway'], 'mesh: unknown kind "gateway" (one of Service, Endpoints, Route, TrafficPolicy, AccessPolicy, MeshConfig)'],
    ['delete with both forms', deleteCommand, ['-f', GOOD, 'route', 'x'], 'mesh: mesh delete takes -f FILE or KIND NAME, not both'],
    ['token without --service', tokenCommand, ['create'], 'mesh: --service is required'],
    ['token without subcommand', tokenCommand, [], 'mesh: mesh token needs a subcommand: create'],
    ['an unknown flag', statusCommand, ['--verbose'], "mesh: Unknown option '--verbose'"],
  ];
  it.each(usage)('%s: one line', async (_name, cmd, argv, line) => {
    const r = await run(cmd, argv);
    expect(r.stdout).toEqual([]);
    expect(r.stderr).toHaveLength(1);
    expect(r.stderr[0]).toContain(line);
    expect(r.code).toBe(_name === 'an unknown kind' || _name === 'a missing file' ? 1 : 2);
  });

  it('a --dir without ca.crt says so', async () => {
    const empty = join(root, 'empty');
    const r = await run(statusCommand, [], {}, ['--control-plane', address, '--dir', empty]);
    expect(r).toEqual({
      code: 1, stdout: [],
      stderr: [`mesh: ${join(empty, 'ca.crt')} not found: use --dir with the directory the control plane was started with (it holds ca.crt and admin.token)`],
    });
  });
});
