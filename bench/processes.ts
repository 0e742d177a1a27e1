// Every process the bench starts: spawn with a bounded wait for readiness, a registry that kills them all on failure or exit, free ports.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { which } from '../cli/which.js';

export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** The last few kilobytes of stdout and stderr, for error messages. */
  output(): string;
  running(): boolean;
  /** Also SIGKILL these PIDs if the process has to be killed (nginx workers outlive a killed master). */
  alsoKill(pids: readonly number[]): void;
  /** SIGTERM (or `signal`), then SIGKILL after `timeoutMs`; resolves once it has exited. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<Child>();
const KEEP = 16_384;

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Spawns `cmd`; the child is registered so stopAll() and process exit kill it whatever happens. */
export function spawnChild(name: string, cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Child {
  const proc = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString()).slice(-KEEP);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', (err) => {
      tail += `\n${err.message}`;
      resolve({ code: -1, signal: null });
    });
  });
  const extra: number[] = [];
  const running = (): boolean => proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined;
  const child: Child = {
    name,
    pid: proc.pid ?? -1,
    proc,
    output: () => tail,
    running,
    alsoKill: (pids) => void extra.push(...pids),
    exited,
    async stop(signal = 'SIGTERM', timeoutMs = 5_000) {
      if (running()) proc.kill(signal);
      const timer = setTimeout(() => {
        if (running()) proc.kill('SIGKILL');
        extra.forEach(killQuietly);
      }, timeoutMs);
      await exited;
      clearTimeout(timer);
      live.delete(child);
    },
  };
  live.add(child);
  void exited.then(() => live.delete(child));
  return child;
}

/** Stops every child still running, in parallel, each bounded. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((c) => c.stop('SIGTERM', 3_000)));
}

process.on('exit', () => {
  for (const c of live) if (c.running()) killQuietly(c.pid);
});

/**
 * Starts a child and resolves with the first JSON line on `stream` whose `event` is "listening".
 * Rejects (and kills the child) if it exits first or does not say so within `timeoutMs`.
 */
export function startListening(
  name: string,
  cmd: string,
  args: readonly string[],
  stream: 'stdout' | 'stderr',
  timeoutMs = 15_000,
): Promise<{ child: Child; line: Record<string, unknown> }> {
  const child = spawnChild(name, cmd, args);
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void child.stop('SIGKILL', 1_000);
      reject(new Error(`${name} ${why}\n${child.output().slice(-2_000)}`));
    };
    const timer = setTimeout(() => fail(`did not report listening within ${timeoutMs} ms`), timeoutMs);
    void child.exited.then(({ code, signal }) => fail(`exited (code ${code}, signal ${signal}) before listening`));
    const input = child.proc[stream];
    if (!input) return fail('has no output stream');
    createInterface({ input }).on('line', (text) => {
      if (!text.startsWith('{')) return;
      try {
        const line = JSON.parse(text) as Record<string, unknown>;
        if (line.event !== 'listening' || settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ child, line });
      } catch {
        // not a JSON line
      }
    });
  });
}


function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Waits until something accepts TCP connections on 127.0.0.1:port, or throws after `timeoutMs`. */
export async function waitForPort(port: number, timeoutMs: number, child?: Child): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && !child.running()) throw new Error(`${child.name} exited before listening on ${port}\n${child.output().slice(-2_000)}`);
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms${child ? `\n${child.output().slice(-2_000)}` : ''}`);
}

/** Absolute path of an executable: `$ENV_VAR` if set, else cli/which.ts's search (PATH, then the system bin and sbin folders). */
export function findExecutable(name: string, envVar: string): string | undefined {
  return which(name, process.env[envVar]);
}
