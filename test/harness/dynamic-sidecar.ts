// Test harness: launches a real `mesh sidecar` in dynamic mode (--control-plane): certificate by Join, config pushed by the control plane.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { request } from './client.js';
import { MAIN, type ConfigDump } from './sidecar.js';
import { waitFor, withDeadline } from './wait.js';

export interface DynamicSidecarOptions {
  service: string;
  /** "host:port" of the app behind this sidecar. */
  app: string;
  /** Control-plane gRPC addresses, in failover order. */
  controlPlanes: string[];
  /** The mesh --dir (ca.crt; admin.token is the default join token). */
  dir: string;
  labels?: Record<string, string>;
  instance?: string;
  tokenFile?: string;
  extraArgs?: string[];
  /** Deadline for the listening line and /ready (default 20 s). */
  startTimeoutMs?: number;
}

export interface DynamicSidecar {
  readonly service: string;
  readonly instance: string;
  readonly outbound: string;
  readonly inbound: string;
  readonly admin: string;
  readonly pid: number;
  stderr(): string;
  running(): boolean;
  adminGet(p: string): Promise<{ status: number; body: string }>;
  configDump(): Promise<ConfigDump>;
  /** Sends `signal` (default SIGTERM), waits (bounded) for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

interface Launched {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  cwd: string;
}

const live = new Set<Launched>();
let counter = 0;

process.on('exit', () => {
  for (const l of live) if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
});

export async function stopAllDynamicSidecars(): Promise<void> {
  await Promise.all([...live].map(async (l) => {
    if (l.child.exitCode === null && l.child.signalCode === null) l.child.kill('SIGKILL');
    await l.exited;
    await forget(l);
  }));
}

async function forget(l: Launched): Promise<void> {
  if (!live.delete(l)) return;
  await rm(l.cwd, { recursive: true, force: true });
}

function launch(opts: DynamicSidecarOptions, instance: string): Promise<{ launched: Launched; args: string[]; out: { err: string } }> {
  return (async () => {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run "npm run build" first`);
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'trellis-dyn-'));
    const args = [
      MAIN, 'sidecar',
      '--service', opts.service,
      '--app', opts.app,
      '--control-plane', opts.controlPlanes.join(','),
      '--dir', opts.dir,
      '--instance', instance,
      '--inbound', '127.0.0.1:0',
      '--outbound', '127.0.0.1:0',
      '--admin', '127.0.0.1:0',
      ...(opts.labels ? ['--labels', Object.entries(opts.labels).map(([k, v]) => `${k}=${v}`).join(',')] : []),
      ...(opts.tokenFile ? ['--token-file', opts.tokenFile] : []),
      ...(opts.extraArgs ?? []),
    ];
    // A developer's MESH_TOKEN / MESH_CONTROL_PLANE must not change what the test asked for.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MESH_TOKEN' && k !== 'MESH_CONTROL_PLANE'));
    const child = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
      child.on('error', () => resolve({ code: -1, signal: null }));
    });
    const launched: Launched = { child, exited, cwd };
    live.add(launched);
    const out = { err: '' };
    child.stdout!.resume();
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (out.err += d));
    const logDir = process.env.MESH_E2E_LOG_DIR;
    if (logDir) void exited.then(() => writeFile(path.join(logDir, `dyn-sidecar-${opts.service}-${instance}-${child.pid}.log`), out.err).catch(() => undefined));
    return { launched, args, out };
  })();
}

function listeningLine(text: string): { outbound: string; inbound: string; admin: string } | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as Record<string, unknown>;
      if (j.event === 'listening' && typeof j.outbound === 'string' && typeof j.inbound === 'string' && typeof j.admin === 'string') {
        return { outbound: j.outbound, inbound: j.inbound, admin: j.admin };
      }
    } catch {
      // not JSON
    }
  }
  return undefined;
}

/** Starts a dynamic sidecar and waits until it listens and /ready answers 200 (certificate and first snapshot). */
export async function startDynamicSidecar(opts: DynamicSidecarOptions): Promise<DynamicSidecar> {
  const instance = opts.instance ?? `${opts.service}-${process.pid}-${++counter}`;
  const { launched, args, out } = await launch(opts, instance);
  const { child, exited } = launched;
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  void exited.then((e) => (exitInfo = e));
  const fail = async (why: string): Promise<never> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    await forget(launched);
    throw new Error(`dynamic sidecar ${opts.service}: ${why}\n--- args: ${args.slice(1).join(' ')}\n--- stderr:\n${out.err}`);
  };
  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let addrs: ReturnType<typeof listeningLine>;
  try {
    await waitFor(() => (addrs = listeningLine(out.err)) !== undefined || exitInfo !== undefined, { timeoutMs, intervalMs: 10, what: 'the "listening" line' });
  } catch (e) {
    return fail((e as Error).message);
  }
  if (!addrs) return fail(`exited before listening (code ${exitInfo?.code}, signal ${exitInfo?.signal})`);
  const a = addrs;
  const adminGet = async (p: string) => {
    const r = await request(a.admin, { path: p, timeoutMs: 3_000 });
    return { status: r.status, body: r.body };
  };
  try {
    await waitFor(async () => exitInfo !== undefined || (await adminGet('/ready')).status === 200, {
      timeoutMs: Math.max(1_000, deadline - Date.now()), what: 'GET /ready = 200 (certificate and first snapshot)',
    });
  } catch (e) {
    return fail((e as Error).message);
  }
  if (exitInfo) return fail(`exited after listening (code ${exitInfo.code}, signal ${exitInfo.signal})`);
  let stopping: Promise<number | null> | undefined;
  return {
    service: opts.service,
    instance,
    ...a,
    pid: child.pid!,
    stderr: () => out.err,
    running: () => child.exitCode === null && child.signalCode === null,
    adminGet,
    async configDump() {
      const r = await adminGet('/config_dump');
      if (r.status !== 200) throw new Error(`GET /config_dump answered ${r.status}: ${r.body}`);
      return JSON.parse(r.body) as ConfigDump;
    },
    stop(signal: NodeJS.Signals = 'SIGTERM', stopTimeoutMs = 10_000) {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        try {
          const r = await withDeadline(exited, stopTimeoutMs, `sidecar ${opts.service} exit after ${signal}`);
          return r.code;
        } catch (e) {
          child.kill('SIGKILL');
          await exited;
          throw e;
        } finally {
          await forget(launched);
        }
      })();
      return stopping;
    },
  };
}

/** Runs a dynamic sidecar that is expected to fail at start; returns its exit code and stderr (bounded by timeoutMs). */
export async function runDynamicSidecarToExit(opts: DynamicSidecarOptions, timeoutMs = 20_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const { launched, out } = await launch(opts, opts.instance ?? `${opts.service}-${process.pid}-${++counter}`);
  try {
    const r = await withDeadline(launched.exited, timeoutMs, `sidecar ${opts.service} to exit`);
    return { ...r, stderr: out.err };
  } catch (e) {
    throw new Error(`${(e as Error).message}; stderr so far:\n${out.err}`);
  } finally {
    if (launched.child.exitCode === null && launched.child.signalCode === null) launched.child.kill('SIGKILL');
    await launched.exited;
    await forget(launched);
  }
}
