// Per-endpoint undici pools and one forwarding attempt: stream the request up, stream the response down, map socket errors.
import type { IncomingHttpHeaders } from 'node:http';
import { Pool, type buildConnector, type Dispatcher } from 'undici';
import { MeshError } from '../api/errors.js';
import type { Clock, Timer } from '../api/clock.js';
import type { Endpoint } from './endpoint.js';
import { writeDownstream, type Exchange } from './exchange.js';
import { responseHeadersForClient, type HeaderRecord } from './headers.js';
import { isTlsFailure } from './tls.js';

export interface PoolSettings {
  readonly maxConnections: number;
  readonly idleTimeoutMs: number;
  readonly connectTimeoutMs: number;
  /** The mesh mTLS connector for this endpoint (tls.ts); undefined = plain TCP. */
  readonly connect?: buildConnector.connector;
}

export function createEndpointPool(ep: Endpoint, s: PoolSettings): Pool {
  const origin = `${s.connect ? 'https' : 'http'}://${ep.id}`;
  return new Pool(origin, {
    connections: s.maxConnections,
    pipelining: 1,
    keepAliveTimeout: s.idleTimeoutMs,
    keepAliveMaxTimeout: s.idleTimeoutMs,
    // Our own per-try and route timeouts govern; these are only the backstop for a route with timeouts disabled.
    headersTimeout: 300_000,
    bodyTimeout: 300_000,
    connect: s.connect ?? { timeout: s.connectTimeoutMs },
  });
}

export type RequestBody = null | Buffer | AsyncIterable<Buffer> | NodeJS.ReadableStream;

export type AttemptResult =
  /** The response was streamed to the client, completely or until it failed (then the client was aborted). */
  | { readonly kind: 'committed' }
  /** Response headers arrived but the caller declined them (a retriable status); the body is discarded. */
  | { readonly kind: 'declined'; readonly status: number; readonly grpcStatus?: number }
  /** No response: connect failure, reset or per-try timeout, before any byte reached the client. */
  | { readonly kind: 'failed'; readonly error: MeshError; readonly refusedStream?: boolean };

export interface AttemptRequest {
  readonly ex: Exchange;
  readonly endpoint: Endpoint;
  readonly pool: Dispatcher;
  readonly path: string;
  readonly headers: HeaderRecord;
  readonly body: RequestBody;
  readonly perTryTimeoutMs: number;
  readonly clock: Clock;
  /** Called with the response status before anything is sent downstream; false declines it (so it can be retried). */
  readonly accept: (status: number, grpcStatus?: number) => boolean;
}

/** Maps undici and socket errors onto the catalogue: connect failures are safe to retry anywhere, resets are not for POST. */
export function classifyUpstreamError(err: unknown, endpoint: Endpoint): MeshError {
  if (err instanceof MeshError) return err;
  const code = (err as { code?: string })?.code ?? '';
  const msg = (err as Error)?.message ?? String(err);
  switch (code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
    case 'ERR_MESH_PEER_IDENTITY':
    case 'ERR_MESH_NO_CERTIFICATE':
    case 'ERR_MESH_NO_H2':
    case 'ERR_MESH_POOL_CLOSED':
      return new MeshError('upstream-connect-failed', `connect to ${endpoint.id} failed: ${code || msg}`, { cause: err });
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return new MeshError('upstream-timeout', `upstream ${endpoint.id} timed out`, { cause: err });
    default:
      // A failed TLS handshake or certificate check means no request was ever sent: a connect failure.
      if (isTlsFailure(code)) {
        return new MeshError('upstream-connect-failed', `TLS to ${endpoint.id} failed: ${msg}`, { cause: err });
      }
      return new MeshError('upstream-reset', `upstream ${endpoint.id} reset the request: ${code || msg}`, { cause: err });
  }
}

/**
 * One try against one endpoint, as an undici dispatch handler: no per-request closures beyond the promise,
 * response bytes written straight to the client with backpressure (pause the upstream while the client is slow).
 */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private timer: Timer | undefined;
  private cancelReason: MeshError | undefined;
  private settled = false;
  private declined = false;
  /**
   * Resumes on the next microtask, never inside the 'drain' call: on a pipelined connection Node emits the current
   * response's 'drain' from a later response's write() (its buffered bytes fall under the high-water mark), and that
   * write can run inside another upstream connection's parser callback. undici's resume() asserts no parser is running:
   * it threw there, this try stayed paused and the connection stalled until the route timeout (defect 25).
   */
  private readonly onDrain = () => queueMicrotask(() => this.controller?.resume());

  constructor(
    private readonly r: AttemptRequest,
    private readonly settle: (result: AttemptResult) => void,
  ) {
    if (r.perTryTimeoutMs > 0) {
      this.timer = r.clock.setTimeout(
        () => this.cancel(new MeshError('upstream-timeout', `upstream ${r.endpoint.id} did not answer within ${r.perTryTimeoutMs}ms`)),
        r.perTryTimeoutMs,
      );
    }
  }

  /** Stop this try (timeout, client gone). Before a response it settles as failed; after commit the client is aborted. */
  cancel(reason: MeshError): void {
    this.cancelReason ??= reason;
    this.controller?.abort(reason);
    if (!this.r.ex.committed || this.declined) this.finish({ kind: 'failed', error: reason });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.cancelReason) controller.abort(this.cancelReason);
  }

  onResponseStart(_c: Dispatcher.DispatchController, status: number, headers: IncomingHttpHeaders): void {
    if (status < 200 || this.settled) return;
    this.timer?.cancel();
    const ex = this.r.ex;
    if (!this.r.accept(status)) {
      this.declined = true;
      this.finish({ kind: 'declined', status });
      return;
    }
    ex.committed = true;
    const relayed = headers['x-mesh-error'];
    if (typeof relayed === 'string') ex.meshError = relayed;
    ex.res.writeHead(status, responseHeadersForClient(headers));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.declined || this.settled) return;
    this.r.ex.bytesSent += chunk.length;
    if (!writeDownstream(this.r.ex, chunk)) {
      controller.pause();
      this.r.ex.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(): void {
    if (this.declined || this.settled) return;
    this.r.ex.res.end();
    this.finish({ kind: 'committed' });
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    this.timer?.cancel();
    if (this.settled) return;
    const ex = this.r.ex;
    if (ex.committed && !this.declined) {
      // Headers (maybe part of the body) already went out: abort the client so it cannot take this as complete.
      ex.res.destroy(err);
      this.finish({ kind: 'committed' });
      return;
    }
    this.finish({ kind: 'failed', error: classifyUpstreamError(this.cancelReason ?? err, this.r.endpoint) });
  }

  private finish(result: AttemptResult): void {
    if (this.settled) return;
    this.settled = true;
    this.timer?.cancel();
    this.r.ex.res.off('drain', this.onDrain);
    this.settle(result);
  }
}

/** Runs one attempt; `onStart` receives a handle the caller uses to cancel it. Never rejects. */
export function forward(r: AttemptRequest, onStart: (cancel: (reason: MeshError) => void) => void): Promise<AttemptResult> {
  return new Promise<AttemptResult>((resolve) => {
    const attempt = new Attempt(r, resolve);
    onStart((reason) => attempt.cancel(reason));
    try {
      r.pool.dispatch(
        {
          path: r.path,
          method: r.ex.method as Dispatcher.HttpMethod,
          headers: r.headers,
          body: r.body as Dispatcher.DispatchOptions['body'],
          // undici retries nothing itself; idempotency and replay are the retry layer's decisions.
          reset: false,
        },
        attempt,
      );
    } catch (err) {
      attempt.onResponseError(undefined as unknown as Dispatcher.DispatchController, err as Error);
    }
  });
}
