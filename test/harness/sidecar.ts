// Test harness: launches a real `mesh sidecar` process (dist/cli/main.js) in standalone mode on port 0 and wraps its admin API.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from './client.js';
import { initCa } from '../../certs/ca.js';
import { startUpstream, type Upstream } from './upstream.js';
import { parseMetrics, type Sample } from './prom.js';
import { waitFor } from './wait.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The mesh CLI entry point; MESH_E2E_MAIN overrides it (to run the harness against another build). */
export const MAIN = process.env.MESH_E2E_MAIN ?? path.join(ROOT, 'dist/cli/main.js');

export interface SidecarOptions {
  service: string;
  /** Resources YAML text (DESIGN.md §3), written to a temp file passed as --resources. */
  resources: string;
  /** "host:port" of the app; a default upstream named "app" is started when omitted. */
  app?: string;
  extraArgs?: string[];
  /** The --dir holding the mesh CA; defaults to one shared per test process (meshDir()). */
  dir?: string;
  /** Deadline for the listening line and /ready (default 15 s). */
  startTimeoutMs?: number;
}

export interface ClusterEndpoint {
  address: string;
  labels: Record<string, string>;
  healthy: boolean;
  ejected: boolean;
  inflight: number;
  consecutiveFailures: number;
  latencyMs: number;
}

export interface ClustersDump {
  clusters: { service: string; queued: number; endpoints: ClusterEndpoint[] }[];
}

export interface ConfigDump {
  version: string;
  snapshot: Record<string, unknown>;
}

export interface Sidecar {
  /** "host:port" */
  readonly outbound: string;
  readonly inbound: string;
  readonly admin: string;
  readonly pid: number;
  /** The resources file the sidecar was started with (rewrite it and send SIGHUP to reload). */
  readonly resourcesFile: string;
  /** Sends a signal without waiting for anything. */
  signal(sig: NodeJS.Signals): void;
  stderr(): string;
  stdout(): string;
  /** Sends `signal`, waits (bounded) for exit and returns the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
  /** Whether the process is still running. */
  running(): boolean;
  adminGet(p: string): Promise<{ status: number; body: string }>;
  clusters(): Promise<ClustersDump>;
  /** Endpoints of one service from /clusters (empty when the service is not listed). */
  endpoints(service: string): Promise<ClusterEndpoint[]>;
  metrics(): Promise<string>;
  samples(name: string): Promise<Sample[]>;
  configDump(): Promise<ConfigDump>;
}

interface Launched {
  service: string;
  stderr: () => string;
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  dir: string;
  app?: Upstream;
}

const live = new Set<Launched>();

/** Kills every sidecar this test process started that is still running (afterAll / afterEach). */
export async function stopAllSidecars(): Promise<void> {
  await Promise.all(
    [...live].map(async (l) => {
      if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
      await l.exited;
      await cleanup(l);
    }),
  );
}

async function cleanup(l: Launched): Promise<void> {
  if (!live.delete(l)) return;
  // MESH_E2E_LOG_DIR keeps each sidecar's stderr for debugging.
  const logDir = process.env.MESH_E2E_LOG_DIR;
  if (logDir) await writeFile(path.join(logDir, `sidecar-${l.service}-${l.child.pid}.log`), l.stderr()).catch(() => undefined);
  await l.app?.close();
  await rm(l.dir, { recursive: true, force: true });
}

process.on('exit', () => {
  for (const l of live) if (l.child.exitCode === null) l.child.kill('SIGKILL');
});

function parseListening(line: string): { outbound: string; inbound: string; admin: string } | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const j = JSON.parse(line) as Record<string, unknown>;
    if (j.event !== 'listening') return undefined;
    const { outbound, inbound, admin } = j;
    if (typeof outbound === 'string' && typeof inbound === 'string' && typeof admin === 'string') return { outbound, inbound, admin };
  } catch {
    // not a JSON log line
  }
  return undefined;
}

let sharedDir: Promise<string> | undefined;

/** One mesh CA per test process (a temp --dir), so every sidecar a test file starts trusts the others. */
export function meshDir(): Promise<string> {
  sharedDir ??= (async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-ca-'));
    await initCa(dir, 'mesh.local');
    return dir;
  })();
  return sharedDir;
}

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first (npm test does)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-e2e-'));
  const resourcesFile = path.join(dir, 'resources.yaml');
  await writeFile(resourcesFile, opts.resources);
  const app = opts.app ? undefined : await startUpstream({ name: 'app' });
  const appAddr = opts.app ?? app!.address;
  const args = [
    MAIN, 'sidecar',
    '--service', opts.service,
    '--app', appAddr,
    '--resources', resourcesFile,
    '--inbound', '127.0.0.1:0',
    '--outbound', '127.0.0.1:0',
    '--admin', '127.0.0.1:0',
    '--dir', opts.dir ?? (await meshDir()),
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(process.execPath, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', () => resolve({ code: -1, signal: null }));
  });
  let err = '';
  const launched: Launched = { service: opts.service, stderr: () => err, child, exited, dir, app };
  live.add(launched);

  let out = '';
  let pending = '';
  let addrs: { outbound: string; inbound: string; admin: string } | undefined;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    pending += d;
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      addrs ??= parseListening(line);
    }
  });

  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  const deadline = Date.now() + startTimeoutMs;
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void exited.then((e) => (exitInfo = e));
  const fail = async (why: string): Promise<never> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await cleanup(launched);
    throw new Error(`sidecar ${opts.service}: ${why}\n--- args: ${args.slice(1).join(' ')}\n--- stderr:\n${err}\n--- stdout:\n${out}`);
  };
  try {
    await waitFor(() => addrs !== undefined || exitInfo !== undefined, {
      timeoutMs: startTimeoutMs,
      intervalMs: 10,
      what: 'the "listening" log line',
    });
  } catch (e) {
    return fail((e as Error).message);
  }
  if (!addrs) return fail(`exited before listening (code ${exitInfo?.code}, signal ${exitInfo?.signal})`);
  const a = addrs;

  const adminGet = async (p: string): Promise<{ status: number; body: string }> => {
    const r = await request(a.admin, { path: p, timeoutMs: 5_000 });
    return { status: r.status, body: r.body };
  };
  try {
    await waitFor(async () => exitInfo !== undefined || (await adminGet('/ready')).status === 200, {
      timeoutMs: Math.max(1_000, deadline - Date.now()),
      what: 'GET /ready to answer 200',
    });
  } catch (e) {
    return fail((e as Error).message);
  }
  if (exitInfo) return fail(`exited after listening (code ${exitInfo.code}, signal ${exitInfo.signal})`);

  const adminJson = async <T>(p: string): Promise<T> => {
    const r = await adminGet(p);
    if (r.status !== 200) throw new Error(`GET ${p} on admin answered ${r.status}: ${r.body}`);
    return JSON.parse(r.body) as T;
  };
  const metrics = async (): Promise<string> => {
    const r = await adminGet('/metrics');
    if (r.status !== 200) throw new Error(`GET /metrics answered ${r.status}`);
    return r.body;
  };
  const clusters = (): Promise<ClustersDump> => adminJson<ClustersDump>('/clusters');

  let stopping: Promise<number | null> | undefined;
  return {
    ...a,
    pid: child.pid!,
    resourcesFile,
    signal: (sig: NodeJS.Signals) => void child.kill(sig),
    stderr: () => err,
    stdout: () => out,
    running: () => child.exitCode === null && child.signalCode === null,
    stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000): Promise<number | null> {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs)));
        const r = await Promise.race([exited, timedOut]);
        clearTimeout(timer);
        if (r === 'timeout') {
          child.kill('SIGKILL');
          await exited;
          await cleanup(launched);
          throw new Error(`sidecar ${opts.service} did not exit within ${timeoutMs}ms of ${signal}; stderr:\n${err}`);
        }
        await cleanup(launched);
        return r.code;
      })();
      return stopping;
    },
    adminGet,
    clusters,
    async endpoints(service: string): Promise<ClusterEndpoint[]> {
      const c = await clusters();
      return c.clusters.find((x) => x.service === service)?.endpoints ?? [];
    },
    metrics,
    async samples(name: string): Promise<Sample[]> {
      return parseMetrics(await metrics()).filter((s) => s.name === name);
    },
    configDump: () => adminJson<ConfigDump>('/config_dump'),
  };
}
