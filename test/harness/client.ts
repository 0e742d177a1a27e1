// Test harness: HTTP clients aimed at the sidecar: one request via undici, a steady-rate loader, and a raw-socket sender for hand-crafted HTTP/1.1.
import net from 'node:net';
import type { Readable } from 'node:stream';
import { Client, Pool } from 'undici';
import type { Dispatcher } from 'undici';

export interface RequestOptions {
  method?: string;
  /** Origin form ("/x") or absolute form ("http://billing/x", proxy form). */
  path?: string;
  /** Sent as the Host header. */
  host?: string;
  headers?: Record<string, string>;
  /** A stream is sent chunked (no content-length). */
  body?: string | Buffer | Readable;
  /** Bound on the whole exchange (default 10 s). */
  timeoutMs?: number;
  /** Reuse a pool (see `createPool`); otherwise a fresh connection is opened and closed. */
  dispatcher?: Dispatcher;
}

export interface Response {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

const origin = (addr: string): string => `http://${addr}`;

/** One request to `addr` ("host:port"). */
export async function request(addr: string, opts: RequestOptions = {}): Promise<Response> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const own = opts.dispatcher ? undefined : new Client(origin(addr), { headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  const dispatcher = opts.dispatcher ?? own!;
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.host !== undefined) headers.host = opts.host;
  try {
    const res = await dispatcher.request({
      origin: origin(addr),
      method: (opts.method ?? 'GET') as Dispatcher.HttpMethod,
      path: opts.path ?? '/',
      headers,
      body: opts.body,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = await res.body.text();
    return { status: res.statusCode, headers: res.headers, body };
  } finally {
    if (own) await own.destroy();
  }
}

/** A keep-alive pool to `addr` for many requests; close it when done. */
export function createPool(addr: string, connections = 32): Pool {
  return new Pool(origin(addr), { connections, headersTimeout: 10_000, bodyTimeout: 10_000 });
}

/** A header value as one string (first value when repeated). */
export function header(res: Response, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

export type Outcome<T> =
  | { readonly index: number; readonly ok: true; readonly value: T; readonly startedAt: number; readonly latencyMs: number }
  | { readonly index: number; readonly ok: false; readonly error: Error; readonly startedAt: number; readonly latencyMs: number };

export interface SteadyOptions<T> {
  /** Requests started per second. */
  rate: number;
  total: number;
  send: (index: number) => Promise<T>;
  /** At most this many outstanding at once (default 64); a full window delays the schedule. */
  concurrency?: number;
  /** Stop starting requests after this long (default: twice the nominal duration + 5 s). */
  maxDurationMs?: number;
  /** Called just before request `index` is started (e.g. to kill an endpoint a third of the way in). */
  onStart?: (index: number) => void | Promise<void>;
}

export interface SteadyResult<T> {
  outcomes: Outcome<T>[];
  /** Requests never started because the time bound ran out. */
  notStarted: number;
  durationMs: number;
}

/** Issues `total` requests at a fixed rate with bounded concurrency and collects every outcome. */
export async function runSteady<T>(opts: SteadyOptions<T>): Promise<SteadyResult<T>> {
  const concurrency = opts.concurrency ?? 64;
  const intervalMs = 1000 / opts.rate;
  const maxDurationMs = opts.maxDurationMs ?? (opts.total / opts.rate) * 2000 + 5_000;
  const t0 = performance.now();
  const outcomes: Outcome<T>[] = [];
  const inflight = new Set<Promise<void>>();
  let started = 0;
  for (let i = 0; i < opts.total; i++) {
    if (performance.now() - t0 > maxDurationMs) break;
    const due = t0 + i * intervalMs;
    const wait = due - performance.now();
    // Pacing the schedule, not waiting for a condition.
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    while (inflight.size >= concurrency) await Promise.race(inflight);
    await opts.onStart?.(i);
    const startedAt = performance.now();
    const p: Promise<void> = opts
      .send(i)
      .then(
        (value) => {
          outcomes.push({ index: i, ok: true, value, startedAt: startedAt - t0, latencyMs: performance.now() - startedAt });
        },
        (err: unknown) => {
          const error = err instanceof Error ? err : new Error(String(err));
          outcomes.push({ index: i, ok: false, error, startedAt: startedAt - t0, latencyMs: performance.now() - startedAt });
        },
      )
      .finally(() => inflight.delete(p));
    inflight.add(p);
    started++;
  }
  await Promise.all(inflight);
  outcomes.sort((a, b) => a.index - b.index);
  return { outcomes, notStarted: opts.total - started, durationMs: performance.now() - t0 };
}

export interface RawResponse {
  status: number;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: string;
}

/** Parses the first response in `text` (status line, headers, body as received, chunked decoded). */
export function parseResponse(text: string): RawResponse {
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const rest = end < 0 ? '' : text.slice(end + 4);
  const [statusLine, ...lines] = head.split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? NaN);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  let body = rest;
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(rest).body;
  return { status, headers, body };
}

function dechunk(s: string): { body: string; complete: boolean } {
  let body = '';
  let pos = 0;
  for (;;) {
    const eol = s.indexOf('\r\n', pos);
    if (eol < 0) return { body, complete: false };
    const size = parseInt(s.slice(pos, eol), 16);
    if (Number.isNaN(size)) return { body, complete: false };
    if (size === 0) return { body, complete: s.indexOf('\r\n', eol + 2) >= 0 };
    body += s.slice(eol + 2, eol + 2 + size);
    pos = eol + 2 + size + 2;
    if (pos > s.length) return { body, complete: false };
  }
}

/** True once `text` holds one whole response (by Content-Length, chunked terminator, or a bodiless status). */
function complete(text: string): boolean {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return false;
  const r = parseResponse(text.slice(0, end + 4));
  if (r.status === 100) return complete(text.slice(end + 4));
  if (r.status === 204 || r.status === 304 || (r.status >= 100 && r.status < 200)) return true;
  const rest = text.slice(end + 4);
  if (/chunked/i.test(r.headers['transfer-encoding'] ?? '')) return dechunk(rest).complete;
  const len = r.headers['content-length'];
  if (len !== undefined) return Buffer.byteLength(rest) >= Number(len);
  return false; // read until close
}

/** Writes `text` verbatim to `addr` and returns the raw response text (ends at close or once one whole response arrived). */
export function rawRequest(addr: string, text: string, timeoutMs = 10_000): Promise<string> {
  const [host, port] = splitAddr(addr);
  return new Promise<string>((resolve, reject) => {
    const sock = net.connect({ host, port });
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`raw request to ${addr} got no complete response within ${timeoutMs}ms; received: ${JSON.stringify(got)}`));
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(got);
    };
    sock.setEncoding('latin1');
    sock.on('connect', () => sock.write(text, 'latin1'));
    sock.on('data', (d: string) => {
      got += d;
      if (complete(got)) done();
    });
    sock.on('end', done);
    sock.on('close', done);
    sock.on('error', (err) => {
      // A reset after a complete answer is still an answer.
      if (got) return done();
      clearTimeout(timer);
      reject(err);
    });
  });
}

export function splitAddr(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

/** True when a TCP connect to `addr` is refused (nothing listening), false when it is accepted. */
export function connectRefused(addr: string, timeoutMs = 2_000): Promise<boolean> {
  const [host, port] = splitAddr(addr);
  return new Promise<boolean>((resolve, reject) => {
    const sock = net.connect({ host, port });
    sock.setTimeout(timeoutMs, () => {
      sock.destroy();
      reject(new Error(`connect to ${addr} neither accepted nor refused within ${timeoutMs}ms`));
    });
    sock.on('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') resolve(true);
      else reject(err);
    });
  });
}
