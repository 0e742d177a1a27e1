// Test harness: runs `mesh up` as a child process, waits for its "The shop is up" line, and finds every process it left running.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { UpState } from '../../cli/up-state.js';
import { MAIN } from './sidecar.js';
import { waitFor, withDeadline } from './wait.js';

export interface MeshUp {
  readonly child: ChildProcess;
  readonly gateway: string;
  /** host:port of the gateway. */
  readonly gatewayAddr: string;
  readonly state: UpState;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` and waits (bounded) for mesh up to exit; returns its exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** `mesh up --dir DIR --port 0 --listen 127.0.0.1:0 --http 127.0.0.1:0 …extra`, from `cwd`. */
export async function startMeshUp(o: { dir: string; cwd: string; extra?: string[]; timeoutMs?: number }): Promise<MeshUp> {
  const args = [MAIN, 'up', '--dir', o.dir, '--port', '0', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', ...(o.extra ?? [])];
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MESH_TOKEN' && k !== 'MESH_CONTROL_PLANE'));
  const child = spawn(process.execPath, args, { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'], env });
  live.add(child);
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => { live.delete(child); resolve(code); }));
  let gateway: string | undefined;
  try {
    const ended = () => child.exitCode !== null || child.signalCode !== null;
    await waitFor(() => {
      gateway = /The shop is up: (http:\/\/\S+)/.exec(out)?.[1];
      return gateway !== undefined || ended();
    }, { timeoutMs: o.timeoutMs ?? 120_000, intervalMs: 50, what: '"The shop is up" from mesh up' });
    if (gateway === undefined) throw new Error(`mesh up exited (${child.exitCode ?? child.signalCode}) before the shop was up`);
  } catch (e) {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
    throw new Error(`${(e as Error).message}\n--- stdout:\n${out}\n--- stderr:\n${err}`);
  }
  const state = JSON.parse(readFileSync(path.join(o.dir, 'shop', 'up.json'), 'utf8')) as UpState;
  let stopping: Promise<number | null> | undefined;
  return {
    child, gateway: gateway!, gatewayAddr: gateway!.replace('http://', ''), state,
    stdout: () => out, stderr: () => err,
    stop(signal: NodeJS.Signals = 'SIGINT', timeoutMs = 60_000) {
      stopping ??= (async () => {
        child.kill(signal);
        try {
          return await withDeadline(exited, timeoutMs, `mesh up to exit after ${signal}`);
        } catch (e) {
          child.kill('SIGKILL');
          throw new Error(`${(e as Error).message}\n--- stderr:\n${err}`);
        }
      })();
      return stopping;
    },
  };
}

/** Every live process (but zombies) whose command line mentions `needle`: what a stopped `mesh up` must not leave behind. */
export function processesMentioning(needle: string): { pid: number; cmdline: string }[] {
  const found: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      if (cmdline.includes(needle)) found.push({ pid: Number(entry), cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}
