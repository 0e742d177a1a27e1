// The per-request state carried through the pipeline: small, created by the listener, read by every layer.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Http2ServerResponse, type Http2ServerRequest } from 'node:http2';
import type { Span } from '@opentelemetry/api';
import type { HeaderRecord } from './headers.js';
import type { CompiledBackend, CompiledRule } from './compiled.js';
import type { RouteStats } from './telemetry.js';

/** The request body as forwarded: replayable only when buffered under the limit (body.ts decides). */
export type PreparedBody =
  /** No body at all: trivially replayable. */
  | { readonly kind: 'none' }
  /** Fully read and under the limit: replayable any number of times. */
  | { readonly kind: 'buffered'; readonly data: Buffer }
  /** Streamed once: cannot be retried or mirrored. */
  | {
    readonly kind: 'stream';
    readonly data: AsyncIterable<Buffer> | DownstreamRequest;
    /** The whole body, when the stream was recorded (replay.ts), has ended and fit the limit; else undefined. */
    readonly replay?: () => Buffer | undefined;
    /**
     * Reads the rest of a recorded stream that no try has consumed (a connect failure comes before any byte is sent),
     * so that it can become replayable. Resolves when it ended, overflowed, or cannot be read further.
     */
    readonly settle?: () => Promise<void>;
  };

/** HTTP/1.1 requests arrive as IncomingMessage; HTTP/2 ones through node:http2's compatibility API. */
export type DownstreamRequest = IncomingMessage | Http2ServerRequest;
export type DownstreamResponse = ServerResponse | Http2ServerResponse;

export type Direction = 'inbound' | 'outbound';

/** The caller as proven by its mTLS certificate; absent for plaintext (permissive mode) and on the outbound side. */
export interface Peer {
  readonly uri: string;
  readonly namespace: string;
  readonly service: string;
}

export interface Exchange {
  readonly req: DownstreamRequest;
  readonly res: DownstreamResponse;
  readonly direction: Direction;
  /** Clock ms when the request headers were complete. */
  readonly start: number;
  readonly method: string;
  /** Host without port, lower-cased (outbound routing key). */
  readonly authority: string;
  /** Normalized path, without the query. */
  path: string;
  /** The query including its leading `?`, or empty. */
  readonly query: string;
  /** Request headers already cleaned for the upstream (headers.ts); layers add to it. */
  readonly headers: HeaderRecord;
  readonly requestId: string;
  /** Set by the route layer (outbound) or the listener (inbound). */
  rule: CompiledRule | undefined;
  /** The weighted backend (service and subset) chosen for this request. */
  backend: CompiledBackend | undefined;
  /** The request body as prepared for forwarding (body.ts); replayable only when buffered under the limit. */
  body: PreparedBody;
  stats: RouteStats | undefined;
  /** Host header to send upstream; the route's rewrite may change it. */
  upstreamHost: string;
  /** The caller's service when known (mTLS identity), else "unknown". */
  sourceService: string;
  /** The authenticated caller (inbound, over mTLS). */
  peer: Peer | undefined;
  /** True once response headers were sent to the client: from then on no retry and no error response. */
  committed: boolean;
  /** Aborted by the client before the response finished. */
  clientGone: boolean;
  /** This hop's span (tracing.ts): only for sampled requests. */
  span: Span | undefined;
  /** The trace this request belongs to (sampled or not); '' with tracing off. */
  traceId: string;
  /** Tries sent upstream (0 when refused before any); the access log and span report it. */
  attempts: number;
  /** host:port of the endpoint that served the last try, or ''. */
  upstream: string;
  /** Response body bytes written to the client. */
  bytesSent: number;
  /** The response's x-mesh-error: made here (respond.ts) or relayed from the next sidecar (pool.ts); '' when none. */
  meshError: string;
  /** The caller speaks gRPC (content-type application/grpc*): errors become gRPC statuses (respond.ts). */
  readonly grpc: boolean;
  /** Absolute clock ms from the caller's grpc-timeout, or undefined; the retry layer takes the earlier of it and the route's. */
  deadline: number | undefined;
  /** The call's grpc-status as the client saw it ('' for non-gRPC or not yet known): the metrics label. */
  grpcStatus: string;
}

/**
 * Whether the downstream response closed before it was complete (the client went away). HTTP/1 tells by writableFinished.
 * node:http2's compatibility response reports writableFinished on any close, and a peer's RST_STREAM leaves rstCode 0
 * (only our own resets set it), so there it is a response we never ended, or one we reset.
 */
export function closedEarly(res: DownstreamResponse): boolean {
  return res instanceof Http2ServerResponse ? !res.writableEnded || (res.stream?.rstCode ?? 0) !== 0 : !res.writableFinished;
}

/**
 * Whether an HTTP/2 response's stream is already gone (the client reset it while an earlier layer was waiting).
 * node:http2 then drops the response's stream, and a 'close' listener added now would never run.
 */
export function streamGone(res: DownstreamResponse): boolean {
  return res instanceof Http2ServerResponse && (!res.stream || res.stream.destroyed);
}

/**
 * The status the metrics and the access log record: 499 (nginx's "client closed request") when the client went away
 * before any response header was sent, since nothing was answered; otherwise the status the client was sent.
 */
export function recordedStatus(ex: Exchange): number {
  return ex.clientGone && !ex.res.headersSent ? 499 : ex.res.statusCode;
}

export function isH2Response(res: DownstreamResponse): res is Http2ServerResponse {
  return res instanceof Http2ServerResponse;
}

/** Writes response bytes to either response type; false means wait for 'drain' (backpressure). */
export function writeDownstream(ex: Exchange, chunk: Buffer): boolean {
  return (ex.res as { write(chunk: Buffer): boolean }).write(chunk);
}
