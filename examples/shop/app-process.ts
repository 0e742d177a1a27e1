// The process contract every shop app shares with `mesh up`: flags, the one "listening" line, JSON logs on stderr,
// and a bounded clean shutdown on SIGTERM, SIGINT or the launcher's IPC channel closing.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createLogger, type Logger } from '../../api/log.js';
import { parseHostPort, UsageError, type HostPort } from '../../cli/args.js';

export type AppName = 'users' | 'billing' | 'gateway';
export type BillingVersion = 'v1' | 'v2';

export interface AppFlags {
  readonly listen: HostPort;
  /** The app's own sidecar's outbound port; every call to another service goes there. */
  readonly outbound: HostPort | undefined;
  /** The directory holding this service's SQLite file. */
  readonly db: string | undefined;
  readonly version: BillingVersion;
  readonly instance: string;
}

export interface RunningApp {
  /** host:port actually bound ([v6]:port for IPv6). */
  readonly address: string;
  /** Stops accepting, lets in-flight work finish (bounded), releases the database. Idempotent. */
  close(): Promise<void>;
}

/** Which flags an app takes, and which of those it cannot run without. */
interface FlagSpec {
  readonly db: boolean;
  readonly outbound: 'required' | 'optional';
  readonly version: boolean;
}

// users accepts --outbound because the launcher gives every app its sidecar's port; it just never calls out.
const SPECS: Record<AppName, FlagSpec> = {
  users: { db: true, outbound: 'optional', version: false },
  billing: { db: true, outbound: 'required', version: true },
  gateway: { db: false, outbound: 'required', version: false },
};

export function usage(app: AppName): string {
  const s = SPECS[app];
  return [
    `usage: node dist/examples/shop/${app}.js --listen HOST:PORT`,
    s.db ? '--db DIR' : '',
    s.outbound === 'required' ? '--outbound HOST:PORT' : '[--outbound HOST:PORT]',
    s.version ? '[--version v1|v2]' : '',
    '[--instance NAME]',
  ].filter(Boolean).join(' ');
}

/** Parses argv strictly for `app`; throws UsageError with a one-line message. */
export function parseAppFlags(app: AppName, argv: string[]): AppFlags {
  const spec = SPECS[app];
  const options = {
    listen: { type: 'string' },
    instance: { type: 'string' },
    outbound: { type: 'string' },
    db: { type: 'string' },
    version: { type: 'string' },
  } as const;
  let values: { [K in keyof typeof options]?: string };
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new UsageError(`${app}: ${(err as Error).message.split('\n')[0]}`);
  }
  // One option table for all apps; the flags an app has no use for are misuse, as if unknown.
  if (!spec.db && values.db !== undefined) throw new UsageError(`${app}: unknown option '--db' (${app} has no database)`);
  if (!spec.version && values.version !== undefined) throw new UsageError(`${app}: unknown option '--version' (only billing has versions)`);
  const listen = values.listen;
  if (listen === undefined) throw new UsageError(`${app}: --listen HOST:PORT is required`);
  const outbound = values.outbound;
  if (outbound === undefined && spec.outbound === 'required') throw new UsageError(`${app}: --outbound HOST:PORT is required`);
  const db = values.db;
  if (spec.db && (db === undefined || db === '')) throw new UsageError(`${app}: --db DIR is required`);
  const version = values.version ?? 'v1';
  if (version !== 'v1' && version !== 'v2') throw new UsageError(`${app}: --version: expected v1 or v2, got "${version}"`);
  const instance = values.instance ?? (spec.version ? `${app}-${version}` : app);
  return {
    listen: parseHostPort('listen', listen),
    outbound: outbound === undefined ? undefined : parseHostPort('outbound', outbound),
    db,
    version,
    instance,
  };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** The address a server actually bound, in the form the launcher reads back. */
export function boundAddress(addr: { address: string; port: number } | string | null): string {
  if (addr === null || typeof addr === 'string') throw new Error(`server is not listening on a TCP port: ${String(addr)}`);
  return formatHostPort({ host: addr.address, port: addr.port });
}

export function appLogger(app: AppName, instance: string): Logger {
  return createLogger('info', { app, instance });
}

/** True when `moduleUrl` is the script node was started with (not when a test imports the module). */
export function isMain(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    return fs.realpathSync(script) === fs.realpathSync(fileURLToPath(moduleUrl));
  } catch {
    return false;
  }
}

/** A promise that settles with `p` or after `ms`, whichever is first; `onTimeout` runs in the second case. */
export async function within(p: Promise<unknown>, ms: number, onTimeout: () => void): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), ms); });
  try {
    if ((await Promise.race([p.then(() => 'done' as const), late])) === 'late') onTimeout();
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The CLI entry: parse flags (exit 2 on misuse), start, print the listening line, then wait for SIGTERM/SIGINT or,
 * when spawned with an IPC channel, its disconnect, which is how the app dies with a SIGKILLed launcher.
 */
export async function runApp(app: AppName, start: (flags: AppFlags, log: Logger) => Promise<RunningApp>): Promise<void> {
  let flags: AppFlags;
  try {
    flags = parseAppFlags(app, process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message} (${usage(app)})\n`);
    process.exit(2);
  }
  // When the launcher dies its end of our stderr pipe goes with it; losing log lines must not kill the app before
  // it has shut down cleanly.
  process.stderr.on('error', () => {});
  const log = appLogger(app, flags.instance);
  log.info('start', {
    pid: process.pid,
    listen: formatHostPort(flags.listen),
    outbound: flags.outbound && formatHostPort(flags.outbound),
    db: flags.db,
    version: app === 'billing' ? flags.version : undefined,
  });
  let running: RunningApp;
  try {
    running = await start(flags, log);
  } catch (err) {
    log.error('start-failed', { error: err });
    process.exit(1);
  }
  process.stderr.write(JSON.stringify({ event: 'listening', app, address: running.address }) + '\n');

  let stopping = false;
  const stop = (reason: string) => {
    if (stopping) {
      // A second signal means the operator does not want to wait for the drain.
      log.warn('stop-forced', { reason });
      process.exit(1);
    }
    stopping = true;
    log.info('stop', { reason });
    running.close().then(
      () => { log.info('stopped'); process.exit(0); },
      (err: unknown) => { log.error('stop-failed', { error: err }); process.exit(1); },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  if (process.channel) {
    // The channel must not keep us alive by itself; its closing only tells us the launcher is gone.
    process.channel.unref();
    process.on('disconnect', () => stop('launcher disconnected'));
  }
}
