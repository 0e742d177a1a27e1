// Test harness: scriptable fake upstream (node:http on 127.0.0.1:0) that records every request and can answer, hang, reset, delay or die.
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  readonly method: string;
  /** The request-target exactly as received (origin form for a well-behaved proxy). */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  readonly body: string;
  readonly at: number;
}

/** A custom behaviour: answer (or not) the recorded request. */
export type BehaviourFn = (req: RecordedRequest, res: ServerResponse, socket: Socket) => void;

export type Preset =
  | { readonly kind: 'answer'; readonly status: number; readonly body?: string }
  | { readonly kind: 'hang' }
  | { readonly kind: 'reset' }
  | { readonly kind: 'delay'; readonly ms: number; readonly status: number };

/** `[503, 200]`: the first request gets 503, every later one 200 (the last status repeats). */
export type Behaviour = BehaviourFn | Preset | readonly number[];

export const answer = (status: number, body?: string): Preset => ({ kind: 'answer', status, body });
export const hang = (): Preset => ({ kind: 'hang' });
export const reset = (): Preset => ({ kind: 'reset' });
export const delay = (ms: number, status = 200): Preset => ({ kind: 'delay', ms, status });

export interface Upstream {
  readonly name: string;
  /** "127.0.0.1:PORT" */
  readonly address: string;
  readonly port: number;
  /** Every request whose body has been fully received, in arrival order. */
  readonly requests: RecordedRequest[];
  setBehaviour(b: Behaviour): void;
  clearRequests(): void;
  /** Stop listening and destroy open sockets. */
  close(): Promise<void>;
  /** Simulate a dead process: destroy the server and every socket at once; later connects are refused. */
  kill(): Promise<void>;
}

export interface UpstreamOptions {
  name?: string;
  behaviour?: Behaviour;
  /** Left out of closeAllUpstreams (a scenario running in the background across other tests closes its own). */
  untracked?: boolean;
}

const live = new Set<Upstream>();
let counter = 0;

function defaultBody(name: string, req: RecordedRequest): string {
  return JSON.stringify({ upstream: name, path: req.url, method: req.method, headers: req.headers });
}

function send(name: string, req: RecordedRequest, res: ServerResponse, status: number, body?: string): void {
  const text = body ?? defaultBody(name, req);
  res.writeHead(status, {
    'content-type': body === undefined ? 'application/json' : 'text/plain',
    'content-length': Buffer.byteLength(text),
    'x-upstream': name,
  });
  res.end(text);
}

function run(name: string, b: Behaviour, queuePos: number, req: RecordedRequest, res: ServerResponse, socket: Socket): void {
  if (typeof b === 'function') return b(req, res, socket);
  if (Array.isArray(b)) {
    const statuses = b as readonly number[];
    const status = statuses[Math.min(queuePos, statuses.length - 1)] ?? 200;
    return send(name, req, res, status);
  }
  const p = b as Preset;
  switch (p.kind) {
    case 'answer':
      return send(name, req, res, p.status, p.body);
    case 'hang':
      return;
    case 'reset':
      socket.destroy();
      return;
    case 'delay': {
      const t = setTimeout(() => {
        if (!res.destroyed) send(name, req, res, p.status);
      }, p.ms);
      res.on('close', () => clearTimeout(t));
      return;
    }
  }
}

export async function startUpstream(opts: UpstreamOptions = {}): Promise<Upstream> {
  const name = opts.name ?? `upstream-${++counter}`;
  let behaviour: Behaviour = opts.behaviour ?? answer(200);
  let queuePos = 0;
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();

  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      const rec: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      };
      requests.push(rec);
      const pos = Array.isArray(behaviour) ? queuePos++ : 0;
      run(name, behaviour, pos, rec, res, req.socket);
    });
  });
  // Longer than any client keep-alive, so the upstream never races a reused connection by closing it first.
  server.keepAliveTimeout = 65_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, s: Socket) => s.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  let closed: Promise<void> | undefined;
  const shut = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
      server.closeAllConnections();
    });
    live.delete(up);
    return closed;
  };

  const up: Upstream = {
    name,
    address: `127.0.0.1:${port}`,
    port,
    requests,
    setBehaviour(b: Behaviour) {
      behaviour = b;
      queuePos = 0;
    },
    clearRequests() {
      requests.length = 0;
    },
    close: shut,
    kill: shut,
  };
  if (!opts.untracked) live.add(up);
  return up;
}

/** Closes every upstream still open in this test process (for afterAll). */
export async function closeAllUpstreams(): Promise<void> {
  await Promise.all([...live].map((u) => u.close()));
}
