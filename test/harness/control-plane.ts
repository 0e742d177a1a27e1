// Test harness: launches a real `mesh control-plane` process (dist/cli/main.js) on port 0 (or a given port) and wraps its gRPC admin API.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { call, createMeshClient, type MeshClient } from '../../api/cp-client.js';
import type { ApplyResponse, GetResponse, SidecarStatus, StatusResponse, TokenResponse } from '../../api/protocol.js';
import { request } from './client.js';
import { MAIN } from './sidecar.js';
import { waitFor } from './wait.js';

export interface ControlPlaneOptions {
  /** Shared by replicas (CA, admin token); a fresh temp dir when omitted (removed with removeMeshDirs()). */
  dir?: string;
  /** etcd client URLs or host:port; omitted: the embedded store. */
  etcd?: string[];
  name?: string;
  /** "127.0.0.1:PORT" (default 127.0.0.1:0): pass the old address to restart on the same port. */
  listen?: string;
  http?: string;
  /** --registry-grace (default 45s). */
  registryGrace?: string;
  startTimeoutMs?: number;
}

/** The StatusResponse: every sidecar of the mesh, each with the replica it streams to. */
export type Status = StatusResponse;

export interface ControlPlaneProcess {
  /** "127.0.0.1:PORT" */
  readonly grpc: string;
  readonly http: string;
  readonly name: string;
  readonly dir: string;
  readonly pid: number;
  readonly adminToken: string;
  readonly client: MeshClient;
  /** The options it was started with, with the ports it actually got (restart on the same ports with these). */
  readonly options: ControlPlaneOptions & { listen: string; http: string; dir: string; name: string };
  stderr(): string;
  running(): boolean;
  /** One unary RPC; `admin` (default true) sends the admin token. */
  rpc<T>(method: string, req: unknown, opts?: { admin?: boolean; timeoutMs?: number }): Promise<T>;
  apply(yaml: string, file?: string, dryRun?: boolean): Promise<ApplyResponse>;
  status(): Promise<Status>;
  get(kind?: string, name?: string): Promise<{ resources: Record<string, unknown>[]; revision: number }>;
  createToken(service: string, ttlSeconds?: number): Promise<TokenResponse>;
  httpGet(p: string): Promise<{ status: number; body: string }>;
  /** SIGKILL (default) or SIGTERM, then waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

interface Launched {
  child: ChildProcess;
  exited: Promise<void>;
  client?: MeshClient;
}

const live = new Set<Launched>();
const tempDirs = new Set<string>();

process.on('exit', () => {
  for (const l of live) if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
});

/** A fresh --dir for a mesh (the control plane creates the CA and admin token there on first start). */
export async function newMeshDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-cp-'));
  tempDirs.add(dir);
  return dir;
}

/** Kills every control plane this test process started that is still running. */
export async function stopAllControlPlanes(): Promise<void> {
  await Promise.all([...live].map(async (l) => {
    if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
    await l.exited;
    l.client?.close();
    live.delete(l);
  }));
}

export async function removeMeshDirs(): Promise<void> {
  await Promise.all([...tempDirs].map((d) => rm(d, { recursive: true, force: true })));
  tempDirs.clear();
}

const hostPort = (e: string): string => e.replace(/^https?:\/\//, '');

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlaneProcess> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first`);
  const dir = opts.dir ?? (await newMeshDir());
  const name = opts.name ?? `cp-${Math.random().toString(36).slice(2, 8)}`;
  const args = [
    MAIN, 'control-plane',
    '--dir', dir,
    '--listen', opts.listen ?? '127.0.0.1:0',
    '--http', opts.http ?? '127.0.0.1:0',
    '--name', name,
    ...(opts.etcd?.length ? ['--etcd', opts.etcd.map(hostPort).join(',')] : []),
    ...(opts.registryGrace ? ['--registry-grace', opts.registryGrace] : []),
  ];
  const child = spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve();
    });
    child.on('error', () => {
      exitInfo ??= { code: -1, signal: null };
      resolve();
    });
  });
  const launched: Launched = { child, exited };
  live.add(launched);
  let err = '';
  let pending = '';
  let addrs: { grpc: string; http: string } | undefined;
  child.stdout!.resume();
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    pending += d;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (addrs || !line.startsWith('{')) continue;
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        if (j.event === 'listening' && typeof j.grpc === 'string' && typeof j.http === 'string') addrs = { grpc: j.grpc, http: j.http };
      } catch {
        // not JSON
      }
    }
  });
  const logDir = process.env.MESH_E2E_LOG_DIR;
  if (logDir) void exited.then(() => writeFile(path.join(logDir, `control-plane-${name}-${child.pid}.log`), err).catch(() => undefined));
  try {
    await waitFor(() => addrs !== undefined || exitInfo !== undefined, { timeoutMs: opts.startTimeoutMs ?? 20_000, intervalMs: 10, what: 'the control plane "listening" line' });
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    live.delete(launched);
    throw new Error(`control plane ${name}: ${(e as Error).message}\n--- stderr:\n${err}`);
  }
  if (!addrs) {
    live.delete(launched);
    throw new Error(`control plane ${name} exited before listening (code ${exitInfo?.code}, signal ${exitInfo?.signal})\n--- args: ${args.slice(1).join(' ')}\n--- stderr:\n${err}`);
  }
  const a = addrs;
  const caPem = await readFile(path.join(dir, 'ca.crt'), 'utf8');
  const adminToken = (await readFile(path.join(dir, 'admin.token'), 'utf8')).trim();
  const client = createMeshClient({ address: a.grpc, caPem, trustDomain: 'mesh.local', adminToken });
  launched.client = client;

  const rpc = <T>(method: string, req: unknown, o: { admin?: boolean; timeoutMs?: number } = {}): Promise<T> =>
    call<T>(client, method, req, { adminToken: o.admin === false ? undefined : adminToken, timeoutMs: o.timeoutMs ?? 5_000 });

  return {
    grpc: a.grpc,
    http: a.http,
    name,
    dir,
    pid: child.pid!,
    adminToken,
    client,
    options: { ...opts, dir, name, listen: a.grpc, http: a.http },
    stderr: () => err,
    running: () => child.exitCode === null && child.signalCode === null,
    rpc,
    apply: (yaml, file = 'test.yaml', dryRun = false) => rpc<ApplyResponse>('Apply', { yaml, file, dryRun }),
    status: () => rpc<Status>('Status', {}),
    async get(kind = '', nm = '') {
      const r = await rpc<GetResponse>('Get', { kind, name: nm, namespace: '' });
      return { resources: JSON.parse(r.resourcesJson) as Record<string, unknown>[], revision: Number(r.revision) };
    },
    createToken: (service, ttlSeconds = 600) => rpc<TokenResponse>('CreateToken', { service, namespace: 'default', ttlSeconds }),
    async httpGet(p) {
      const r = await request(a.http, { path: p, timeoutMs: 3_000 });
      return { status: r.status, body: r.body };
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
      client.close();
      live.delete(launched);
    },
  };
}

/** Sidecars of `service` as this replica reports them. */
export function sidecarsOf(s: Status, service?: string): SidecarStatus[] {
  return s.sidecars.filter((x) => service === undefined || x.service === service);
}
