// The HTTP/JSON edge of users and gateway: bounded body reading, JSON answers, a tiny method+path router that turns
// every failure into a JSON error (404, 405, 413, 400, 500), and listen/close with a bounded drain.
import http from 'node:http';
import type { Logger } from '../../api/log.js';
import { boundAddress, within } from './app-process.js';
import type { HostPort } from '../../cli/args.js';

/** The largest JSON request body any shop app accepts. */
export const MAX_BODY_BYTES = 64 * 1024;
/** How long close() lets in-flight requests finish before cutting their connections. */
export const DRAIN_MS = 5_000;

/** An answer a handler gives by throwing: status, JSON body `{error, ...extra}`, optional headers. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * Reads the body (at most `limit` bytes) and parses it as a JSON object. Too large → 413, before reading it all when
 * content-length already says so; not JSON or not an object → 400.
 */
export async function readJsonObject(req: http.IncomingMessage, limit = MAX_BODY_BYTES): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge(limit);
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    throw new HttpError(400, `malformed JSON body: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'the body must be a JSON object');
  return value as Record<string, unknown>;
}

function tooLarge(limit: number): HttpError {
  // The rest of the body is not worth reading: answer and close so the client stops sending.
  return new HttpError(413, `request body larger than ${limit} bytes`, { connection: 'close' });
}

/** A string field of a JSON body, or 400 naming the field. */
export function stringField(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (typeof v !== 'string') throw new HttpError(400, `"${field}" must be a string`);
  return v;
}

export interface RouteContext {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  /** The path's captured groups (e.g. the id of /users/:id). */
  readonly params: readonly string[];
}

export interface Route {
  readonly method: string;
  /** Matched against the whole path (no query string). */
  readonly path: RegExp;
  readonly handle: (ctx: RouteContext) => Promise<void> | void;
}

/** A request listener dispatching to `routes`; nothing a handler throws escapes as anything but a JSON answer. */
export function createRouter(routes: readonly Route[], log: Logger): http.RequestListener {
  return (req, res) => {
    const pathname = (req.url ?? '/').split('?', 1)[0];
    const onPath = routes.filter((r) => r.path.test(pathname));
    const route = onPath.find((r) => r.method === req.method);
    if (!route) {
      // Drain whatever body came with it so keep-alive connections stay usable.
      req.resume();
      if (onPath.length === 0) sendJson(res, 404, { error: `no route for ${req.method} ${pathname}` });
      else sendJson(res, 405, { error: `method ${req.method} not allowed on ${pathname}` }, { allow: [...new Set(onPath.map((r) => r.method))].join(', ') });
      return;
    }
    const params = route.path.exec(pathname)!.slice(1);
    Promise.resolve()
      .then(() => route.handle({ req, res, params }))
      .catch((err: unknown) => answerError(req, res, err, log));
  };
}

function answerError(req: http.IncomingMessage, res: http.ServerResponse, err: unknown, log: Logger): void {
  if (!(err instanceof HttpError)) log.error('handler-failed', { method: req.method, path: req.url, error: err });
  if (res.headersSent) {
    // Too late for a status: cut the response so it cannot pass for a complete one.
    res.destroy();
    return;
  }
  if (err instanceof HttpError) {
    sendJson(res, err.status, { error: err.message, ...err.extra }, err.headers);
    if (err.status === 413) req.resume();
    return;
  }
  sendJson(res, 500, { error: 'internal error' });
}

export interface JsonServer {
  readonly server: http.Server;
  readonly address: string;
  /** Stops accepting, waits up to DRAIN_MS for in-flight requests, then cuts what is left. */
  close(): Promise<void>;
}

export async function listenJson(listen: HostPort, handler: http.RequestListener): Promise<JsonServer> {
  const server = http.createServer({ keepAliveTimeout: 5_000, headersTimeout: 10_000, requestTimeout: 30_000 }, handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  let closing: Promise<void> | undefined;
  server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
    if (closing) res.shouldKeepAlive = false;
    // A keep-alive connection whose last request ends during the drain would otherwise hold close() open until
    // the client's idle timeout: drop it as soon as it is idle.
    res.once('finish', () => { if (closing) setImmediate(() => server.closeIdleConnections()); });
  });
  return {
    server,
    address: boundAddress(server.address()),
    close: () => {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await within(closed, DRAIN_MS, () => server.closeAllConnections());
        await closed;
      })();
      return closing;
    },
  };
}
