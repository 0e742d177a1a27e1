// HTTP/1.1 calls from a shop app to another service, always through the app's own sidecar (--outbound), which routes
// by the Host header; also the few request headers that must follow a request from service to service.
import { Pool, errors as undiciErrors } from 'undici';
import type { IncomingHttpHeaders } from 'node:http';
import { formatHostPort } from './app-process.js';
import type { HostPort } from '../../cli/args.js';

/** Per-call deadline for every downstream call, connect to last byte. */
export const CALL_DEADLINE_MS = 5_000;
/** Bodies the shop services answer are small; anything bigger is a fault, not data. */
const MAX_ANSWER_BYTES = 256 * 1024;

/** Headers that join traces and logs across hops; copied from the incoming request onto every outgoing call. */
export const PROPAGATED_HEADERS = ['traceparent', 'tracestate', 'x-request-id'] as const;
/** The key of the per-client rate limit the mesh enforces; set by the gateway, carried by every hop after it. */
export const CLIENT_HEADER = 'x-shop-client';

export interface Answer {
  readonly status: number;
  /** The sidecar's error code when the mesh, not the service, made this answer. */
  readonly meshError: string | undefined;
  /** The parsed JSON body, or the text when it was not JSON. */
  readonly body: unknown;
}

export interface CallOptions {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly json?: unknown;
}

/** Why a call produced no answer at all; `timeout` distinguishes the deadline from an unreachable sidecar. */
export class CallFailed extends Error {
  constructor(readonly service: string, readonly timeout: boolean, cause: unknown) {
    super(`${service} ${timeout ? `did not answer within ${CALL_DEADLINE_MS} ms` : `unreachable: ${(cause as Error)?.message ?? String(cause)}`}`, { cause });
    this.name = 'CallFailed';
  }
}

export interface OutboundHttp {
  call(service: string, opts: CallOptions): Promise<Answer>;
  close(): Promise<void>;
}

export function createOutboundHttp(outbound: HostPort): OutboundHttp {
  const pool = new Pool(`http://${formatHostPort(outbound)}`, { connections: 32, keepAliveTimeout: 4_000 });
  return {
    async call(service, opts) {
      const body = opts.json === undefined ? undefined : JSON.stringify(opts.json);
      const headers: Record<string, string> = { ...opts.headers, host: service, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      try {
        const res = await pool.request({
          method: opts.method, path: opts.path, headers, body, signal: AbortSignal.timeout(CALL_DEADLINE_MS),
        });
        const text = await readCapped(res.body);
        return { status: res.statusCode, meshError: headerValue(res.headers, 'x-mesh-error'), body: parseMaybeJson(text, res.headers) };
      } catch (err) {
        throw new CallFailed(service, isTimeout(err), err);
      }
    },
    close: () => pool.close(),
  };
}

async function readCapped(body: AsyncIterable<Buffer> & { destroy(err?: Error): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) {
      body.destroy();
      throw new Error(`answer larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseMaybeJson(text: string, headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): unknown {
  const type = headerValue(headers, 'content-type') ?? '';
  if (!type.includes('json')) return text.trim();
  try {
    return JSON.parse(text);
  } catch {
    return text.trim();
  }
}

function isTimeout(err: unknown): boolean {
  const name = (err as { name?: unknown })?.name;
  return name === 'TimeoutError' || err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError;
}

export function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The propagated headers present on an incoming request (HTTP headers or flattened gRPC metadata). */
export function propagatedFrom(headers: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of PROPAGATED_HEADERS) {
    const v = headers[name];
    const s = Array.isArray(v) ? v[0] : v;
    if (typeof s === 'string' && s !== '') out[name] = s;
  }
  return out;
}

/** The error text of a JSON `{error}` body, else the text itself, else a fallback. */
export function errorText(body: unknown, fallback: string): string {
  if (typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string') return (body as { error: string }).error;
  if (typeof body === 'string' && body !== '') return body.slice(0, 300);
  return fallback;
}
