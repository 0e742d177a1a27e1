// `mesh up`'s process supervisor: starts each program with its log file, restarts the ones that die, stops them all in order.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, statSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export interface ChildSpec {
  /** Short, unique: "users", "billing-v2-sidecar". Used in messages, the log file name and the state file. */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly logFile: string;
  /**
   * Stop stage: lower stops first. Apps stop before their sidecars, which stop before the control plane, so in-flight
   * calls drain through a mesh that is still there.
   */
  readonly stage: number;
  /**
   * Whether the program watches an IPC channel and exits when it closes. Ours do (cli/main.ts, examples/shop/app-process.ts):
   * that is what ends them when the supervisor is SIGKILLed. Foreign programs (prometheus) do not, and are cleaned up
   * by the next `mesh up` from the state file.
   */
  readonly ipc: boolean;
}

export interface Running {
  readonly spec: ChildSpec;
  readonly pid: number | undefined;
  readonly starts: number;
}

export interface SupervisorEvents {
  /** A child exited while the supervisor was not stopping. */
  exited(name: string, how: string, restartInMs: number | undefined, lastLines: string): void;
  /** Any start or restart: the set of pids changed. */
  changed(): void;
}

const MAX_BACKOFF_MS = 30_000;
/** A child that stayed up this long is healthy again: its next crash restarts it after the first delay, not the last. */
const STABLE_MS = 60_000;
const TAIL_LINES = 20;

class Child implements Running {
  proc: ChildProcess | undefined;
  starts = 0;
  startedAt = 0;
  backoffMs = 1_000;
  restartTimer: NodeJS.Timeout | undefined;
  /** Only a program that came up once is restarted: one that cannot start at all is a failed `mesh up`, not a crash loop. */
  everReady = false;
  exited: Promise<void> = Promise.resolve();
  tail: string[] = [];
  private partial = '';
  private readonly waiters = new Set<{ test: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }>();

  constructor(readonly spec: ChildSpec) {}

  get pid(): number | undefined {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null ? this.proc.pid : undefined;
  }

  /** Lines the program wrote to its log file; JSON event lines wake anyone waiting for them (the "listening" lines). */
  onOutput(chunk: string): void {
    const text = this.partial + chunk;
    const lines = text.split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > 64 * 1024) this.partial = '';
    for (const line of lines) {
      this.tail.push(line);
      if (this.tail.length > TAIL_LINES) this.tail.shift();
      if (!line.startsWith('{') || this.waiters.size === 0) continue;
      let event: Record<string, unknown>;
      try {
        event = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      for (const w of this.waiters) {
        if (w.test(event)) {
          this.waiters.delete(w);
          w.resolve(event);
        }
      }
    }
  }

  waitFor(test: (e: Record<string, unknown>) => boolean): { promise: Promise<Record<string, unknown>>; cancel(): void } {
    let entry!: { test: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void };
    const promise = new Promise<Record<string, unknown>>((resolve) => {
      entry = { test, resolve };
      this.waiters.add(entry);
    });
    return { promise, cancel: () => this.waiters.delete(entry) };
  }
}

export class Supervisor {
  private readonly children = new Map<string, Child>();
  private stopping = false;

  constructor(private readonly events: SupervisorEvents, private readonly env: NodeJS.ProcessEnv = process.env) {}

  running(): Running[] {
    return [...this.children.values()];
  }

  /** Starts a child; resolves with the first JSON line on its stderr/stdout that `ready` accepts, or rejects when it exits first or `timeoutMs` passes. */
  async start(spec: ChildSpec, ready: ((e: Record<string, unknown>) => boolean) | undefined, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    if (this.children.has(spec.name)) throw new Error(`${spec.name} is already started`);
    const child = new Child(spec);
    this.children.set(spec.name, child);
    if (ready) return this.launch(child, ready, timeoutMs);
    // A program that prints no JSON (prometheus): started is all we know; the caller polls its health.
    this.launch(child, () => false, 24 * 3600_000).catch(() => undefined);
    child.everReady = true;
    return {};
  }

  private launch(child: Child, ready: (e: Record<string, unknown>) => boolean, timeoutMs: number): Promise<Record<string, unknown>> {
    const { spec } = child;
    const waiter = child.waitFor(ready);
    child.tail = [];
    // The program writes straight into its log file, not into a pipe to us: if the supervisor dies, a pipe would break
    // and the program's next log line would kill it (EPIPE) before it could shut down cleanly. We follow the file instead.
    const fd = openSync(spec.logFile, 'a');
    let follow: LogFollower;
    try {
      const header = `\n--- ${new Date().toISOString()} mesh up: starting ${spec.command} ${spec.args.join(' ')}\n`;
      writeAll(fd, header);
      follow = new LogFollower(spec.logFile, (chunk) => child.onOutput(chunk));
      // Detached: a Ctrl-C in the terminal reaches only the supervisor, which then stops the programs in order.
      const proc = spawn(spec.command, [...spec.args], {
        stdio: ['ignore', fd, fd, spec.ipc ? 'ipc' : 'ignore'], detached: true, env: this.env,
      });
      child.proc = proc;
    } finally {
      closeSync(fd);
    }
    const proc = child.proc;
    child.starts++;
    child.startedAt = Date.now();
    let onExit!: (how: string) => void;
    const exit = new Promise<string>((resolve) => (onExit = resolve));
    // Whatever it wrote last is read before anyone hears it has gone, so error messages show its final words.
    const gone = exit.then(async (how) => { await follow.stop(); return how; });
    child.exited = gone.then(() => undefined);
    proc.on('error', (err) => onExit(`could not start: ${err.message}`));
    proc.on('exit', (code, signal) => onExit(signal ? `killed by ${signal}` : `exit code ${code}`));
    void gone.then((how) => this.onExit(child, proc, how));
    this.events.changed();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiter.cancel();
        reject(new Error(`${spec.name} did not become ready within ${timeoutMs / 1000} s${this.tailOf(child)}`));
      }, timeoutMs);
      waiter.promise.then((e) => { clearTimeout(timer); child.everReady = true; resolve(e); }, () => undefined);
      void gone.then((how) => {
        clearTimeout(timer);
        waiter.cancel();
        reject(new Error(`${spec.name} ${how} before it was ready${this.tailOf(child)}`));
      });
    });
  }

  private tailOf(child: Child): string {
    const lines = child.tail.filter(Boolean).slice(-8);
    return lines.length ? `; its last lines (full log: ${child.spec.logFile}):\n  ${lines.join('\n  ')}` : ` (log: ${child.spec.logFile})`;
  }

  private onExit(child: Child, proc: ChildProcess, how: string): void {
    if (child.proc !== proc) return;
    // Flush the partial last line, so its final words are in the tail shown to the user.
    child.onOutput('\n');
    this.events.changed();
    if (this.stopping || !child.everReady) return;
    if (Date.now() - child.startedAt > STABLE_MS) child.backoffMs = 1_000;
    const delay = child.backoffMs;
    child.backoffMs = Math.min(MAX_BACKOFF_MS, child.backoffMs * 2);
    this.events.exited(child.spec.name, how, delay, this.tailOf(child));
    child.restartTimer = setTimeout(() => {
      child.restartTimer = undefined;
      if (this.stopping) return;
      // A restarted program is ready when it says so; nobody waits on that here, and a failure is just the next exit.
      this.launch(child, () => false, 24 * 3600_000).catch(() => undefined);
    }, delay);
  }

  /**
   * Stops every child, stage by stage (SIGTERM, then SIGKILL after `graceMs`), and resolves when all have exited.
   * `force` sends SIGKILL at once (a second Ctrl-C).
   */
  async stopAll(graceMs = 10_000, force = false): Promise<void> {
    this.stopping = true;
    for (const c of this.children.values()) if (c.restartTimer) clearTimeout(c.restartTimer);
    const stages = [...new Set([...this.children.values()].map((c) => c.spec.stage))].sort((a, b) => a - b);
    for (const stage of stages) {
      const group = [...this.children.values()].filter((c) => c.spec.stage === stage && c.pid !== undefined);
      await Promise.all(group.map((c) => stopOne(c, force ? 0 : graceMs)));
    }
  }

  /** SIGKILL everything now (the supervisor is going away). */
  killAll(): void {
    this.stopping = true;
    for (const c of this.children.values()) {
      if (c.restartTimer) clearTimeout(c.restartTimer);
      if (c.pid !== undefined) signalGroup(c.pid, 'SIGKILL');
    }
  }
}

async function stopOne(c: Child, graceMs: number): Promise<void> {
  const pid = c.pid;
  if (pid === undefined) return;
  signalGroup(pid, graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), Math.max(graceMs, 1))));
  const tooLate = await Promise.race([c.exited.then(() => false), late]);
  clearTimeout(timer);
  if (tooLate) {
    signalGroup(pid, 'SIGKILL');
    await c.exited;
  }
}

/** Each child leads its own process group (detached), so this also reaches anything it started. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

function writeAll(fd: number, text: string): void {
  const buf = Buffer.from(text);
  let off = 0;
  while (off < buf.length) off += writeSync(fd, buf, off);
}

/** Reads what is appended to a file, from its current end, every 50 ms (cheap, and works on every file system). */
class LogFollower {
  private offset: number;
  private handle: Promise<FileHandle | undefined>;
  private timer: NodeJS.Timeout;
  private reading: Promise<void> = Promise.resolve();
  private readonly decoder = new TextDecoder();

  constructor(file: string, private readonly onChunk: (s: string) => void) {
    this.offset = statSync(file).size;
    this.handle = open(file, 'r').catch(() => undefined);
    this.timer = setInterval(() => { this.reading = this.reading.then(() => this.read()); }, 50);
  }

  private async read(): Promise<void> {
    const h = await this.handle;
    if (!h) return;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const { bytesRead } = await h.read(buf, 0, buf.length, this.offset).catch(() => ({ bytesRead: 0 }));
      if (bytesRead === 0) return;
      this.offset += bytesRead;
      this.onChunk(this.decoder.decode(buf.subarray(0, bytesRead), { stream: true }));
    }
  }

  /** One last read (the program has exited, so everything it wrote is there), then close. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.reading = this.reading.then(() => this.read());
    await this.reading;
    await (await this.handle)?.close();
  }
}
