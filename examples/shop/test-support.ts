// Helpers for the shop's tests (not used by the apps): temp dirs, quiet loggers, waiting with a deadline, spawning an
// app from dist/ and reading its listening line, and a fake sidecar that routes HTTP/1.1 to users and h2c to billing.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger } from '../../api/log.js';
import type { HostPort } from '../../cli/args.js';
import type { AppName } from './app-process.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The built apps; tests that spawn processes need `npm run build` first (npm test does it). */
export const DIST = path.join(ROOT, 'dist/examples/shop');

export function tempDir(prefix = 'shop-'): { dir: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** A logger whose lines the test can read instead of the terminal. */
export function memoryLog(): Logger & { lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return Object.assign(createLogger('info', {}, (l) => { lines.push(JSON.parse(l) as Record<string, unknown>); }), { lines });
}

export const ANY_PORT: HostPort = { host: '127.0.0.1', port: 0 };

export function hostPort(address: string): HostPort {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

/** Polls `cond` until true; throws naming `what` at the deadline. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface SpawnedApp {
  readonly child: ChildProcess;
  readonly address: string;
  /** Every stderr line so far. */
  readonly stderr: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `node dist/examples/shop/<app>.js args` and resolves once it printed its listening line. */
export async function spawnApp(app: AppName, args: string[], ipc = false): Promise<SpawnedApp> {
  const child = spawn(process.execPath, [path.join(DIST, `${app}.js`), ...args], {
    stdio: ipc ? ['ignore', 'ignore', 'pipe', 'ipc'] : ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })));
  let partial = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    const parts = (partial + s).split('\n');
    partial = parts.pop()!;
    stderr.push(...parts);
  });
  let gone = false;
  void exited.then(() => { gone = true; });
  await waitFor(() => gone || stderr.some((l) => l.includes('"listening"')), `${app} to listen`, 15_000);
  const line = stderr.find((l) => l.includes('"listening"'));
  if (!line) throw new Error(`${app} exited before listening:\n${stderr.join('\n')}`);
  return { child, address: (JSON.parse(line) as { address: string }).address, stderr, exited };
}

/** Sends SIGKILL if the process is still there (test cleanup). */
export function kill(app: SpawnedApp | undefined): void {
  if (app && app.child.exitCode === null && app.child.signalCode === null) app.child.kill('SIGKILL');
}

export interface FakeSidecar {
  readonly address: string;
  /** The plain HTTP/1.1 requests it received (users calls). */
  readonly requests: http.IncomingMessage[];
  /** Where h2c (gRPC) connections go; settable between tests. */
  h2Target: string;
  close(): Promise<void>;
}

/**
 * One port speaking both protocols the apps send to their sidecar: connections opening with the HTTP/2 preface are
 * piped to `h2Target` (a billing server), all others are served by `http1` (users, real or fake).
 */
export async function startFakeSidecar(http1: http.RequestListener, h2Target = ''): Promise<FakeSidecar> {
  const requests: http.IncomingMessage[] = [];
  const httpServer = http.createServer((req, res) => {
    requests.push(req);
    http1(req, res);
  });
  const sockets = new Set<net.Socket>();
  const state: FakeSidecar = {
    address: '', requests, h2Target,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      httpServer.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.once('readable', () => {
      const head: Buffer | null = socket.read();
      if (!head) return;
      if (head.subarray(0, 3).toString() === 'PRI') {
        const upstream = net.connect(hostPort(state.h2Target));
        sockets.add(upstream);
        upstream.on('close', () => sockets.delete(upstream));
        upstream.write(head);
        socket.pipe(upstream).pipe(socket);
        upstream.on('error', () => socket.destroy());
        socket.on('error', () => upstream.destroy());
      } else {
        socket.unshift(head);
        httpServer.emit('connection', socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address() as net.AddressInfo;
  return Object.assign(state, { address: `127.0.0.1:${a.port}` });
}

/** Forwards a request to `base` (the real users app), as a pass-through sidecar would. */
export function forwardTo(base: string): http.RequestListener {
  return (req, res) => {
    const up = http.request(`http://${base}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', () => { res.writeHead(503, { 'x-mesh-error': 'upstream-connect-failed' }); res.end(); });
    req.pipe(up);
  };
}

/** A JSON request with fetch; the body is parsed when it is JSON. */
export async function call(base: string, method: string, pathname: string, opts: { body?: unknown; raw?: string; headers?: Record<string, string> } = {}):
  Promise<{ status: number; headers: Headers; body: unknown }> {
  const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  const res = await fetch(`http://${base}${pathname}`, {
    method, body, headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...opts.headers },
  });
  const text = await res.text();
  let parsed: unknown = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON: keep the text */ }
  return { status: res.status, headers: res.headers, body: parsed };
}
