// One forwarding try over HTTP/2 (gRPC and h2 callers): a stream on the endpoint's session, bodies both ways with backpressure, trailers relayed.
import http2 from 'node:http2';
import { MeshError } from '../api/errors.js';
import type { Clock, Timer } from '../api/clock.js';
import type { Endpoint } from './endpoint.js';
import { isH2Response, writeDownstream, type Exchange } from './exchange.js';
import { grpcStatusLabel, grpcStatusOf } from './grpc.js';
import type { H2Pool } from './h2-pool.js';
import { responseHeadersForClient, type HeaderRecord } from './headers.js';
import { classifyUpstreamError, type AttemptResult, type RequestBody } from './pool.js';
import { respondError } from './respond.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;

export interface H2AttemptRequest {
  readonly ex: Exchange;
  readonly endpoint: Endpoint;
  readonly pool: H2Pool;
  readonly path: string;
  readonly headers: HeaderRecord;
  readonly body: RequestBody;
  readonly perTryTimeoutMs: number;
  /** The grpc-timeout to send upstream (already shrunk by the time spent), or undefined. */
  readonly grpcTimeout: string | undefined;
  readonly clock: Clock;
  readonly accept: (status: number, grpcStatus?: number) => boolean;
}

/** The request's HEADERS: pseudo-headers from the exchange, then the cleaned fields (host becomes :authority). */
function requestHeaders(r: H2AttemptRequest): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {
    ':method': r.ex.method,
    ':path': r.path,
    ':scheme': r.pool.secure ? 'https' : 'http',
    ':authority': (r.headers.host as string | undefined) ?? r.endpoint.id,
  };
  for (const name in r.headers) if (name !== 'host') out[name] = r.headers[name];
  // te is hop-by-hop (stripped by headers.ts), but gRPC servers may require "trailers" on every hop.
  if (r.ex.grpc) out.te = 'trailers';
  if (r.grpcTimeout !== undefined) out['grpc-timeout'] = r.grpcTimeout;
  return out;
}

function cleanTrailers(t: http2.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in t) {
    const v = t[name];
    if (v !== undefined && name.charCodeAt(0) !== 0x3a) out[name] = v;
  }
  return out;
}

class H2Attempt {
  private stream: http2.ClientHttp2Stream | undefined;
  private timer: Timer | undefined;
  private cancelReason: MeshError | undefined;
  private settled = false;
  private committed = false;
  private trailers: http2.IncomingHttpHeaders | undefined;
  private readonly onDrain = () => this.stream?.resume();

  constructor(private readonly r: H2AttemptRequest, private readonly settle: (result: AttemptResult) => void) {
    if (r.perTryTimeoutMs > 0) {
      this.timer = r.clock.setTimeout(
        () => this.cancel(new MeshError('upstream-timeout', `upstream ${r.endpoint.id} did not answer within ${r.perTryTimeoutMs}ms`)),
        r.perTryTimeoutMs,
      );
    }
  }

  /** Timeout or client gone: reset the upstream stream (CANCEL), so the server stops working on it. */
  cancel(reason: MeshError): void {
    this.cancelReason ??= reason;
    this.stream?.close(NGHTTP2_CANCEL);
    if (!this.committed) this.finish({ kind: 'failed', error: reason });
    else if (!this.settled) {
      // Mid-response: a gRPC caller gets the status in trailers; anything else an aborted response (respond.ts).
      respondError(this.r.ex, reason);
      this.finish({ kind: 'committed' });
    }
  }

  async start(): Promise<void> {
    const r = this.r;
    let session: http2.ClientHttp2Session;
    try {
      const got = r.pool.acquire();
      session = got instanceof Promise ? await got : got;
    } catch (err) {
      this.finish({ kind: 'failed', error: classifyUpstreamError(this.cancelReason ?? err, r.endpoint) });
      return;
    }
    if (this.settled) return;
    let stream: http2.ClientHttp2Stream;
    try {
      stream = session.request(requestHeaders(r), { endStream: r.body === null });
    } catch (err) {
      // The session went away between acquire and request: nothing was sent, like a refused stream.
      r.pool.discard(session);
      this.finish({ kind: 'failed', error: classifyUpstreamError(err, r.endpoint), refusedStream: true });
      return;
    }
    this.stream = stream;
    stream.on('response', (headers, flags) => this.onResponse(headers, flags));
    stream.on('trailers', (t) => { this.trailers = t; });
    stream.on('end', () => this.onEnd());
    stream.on('error', () => undefined);
    stream.on('close', () => this.onClose());
    if (r.body !== null) void this.pump(stream, r.body);
  }

  /** Request body upstream with backpressure. The source is never destroyed here: the downstream may still need an answer. */
  private async pump(stream: http2.ClientHttp2Stream, body: Exclude<RequestBody, null>): Promise<void> {
    if (Buffer.isBuffer(body)) {
      stream.end(body);
      return;
    }
    const it = (body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await it.next();
        if (stream.destroyed || stream.closed) return;
        if (next.done) break;
        if (!stream.write(next.value)) {
          await new Promise<void>((resolve) => {
            const done = () => { stream.off('drain', done); stream.off('close', done); resolve(); };
            stream.on('drain', done);
            stream.on('close', done);
          });
        }
      }
      if (!stream.destroyed) stream.end();
    } catch {
      // The client aborted its request body: the upstream must not take the truncated body as complete.
      stream.close(NGHTTP2_CANCEL);
    }
  }

  private onResponse(headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number): void {
    const status = Number(headers[':status'] ?? 0);
    if (status < 200 || this.settled) return;
    this.timer?.cancel();
    const ex = this.r.ex;
    const trailersOnly = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    const grpcStatus = trailersOnly ? grpcStatusOf(headers) : undefined;
    if (!this.r.accept(status, grpcStatus)) {
      this.stream?.close(NGHTTP2_CANCEL);
      this.finish({ kind: 'declined', status, grpcStatus });
      return;
    }
    this.committed = ex.committed = true;
    const relayed = headers['x-mesh-error'];
    if (typeof relayed === 'string') ex.meshError = relayed;
    if (grpcStatus !== undefined) ex.grpcStatus = grpcStatusLabel(grpcStatus);
    const out = responseHeadersForClient(headers);
    const res = ex.res;
    if (trailersOnly && isH2Response(res)) {
      // Kept Trailers-Only (one HEADERS frame with END_STREAM), so the next sidecar can still retry on its status.
      res.statusCode = status;
      res.stream.respond({ ...out, ':status': status }, { endStream: true });
      this.finish({ kind: 'committed' });
      return;
    }
    res.writeHead(status, out);
    if (trailersOnly) {
      res.end();
      this.finish({ kind: 'committed' });
      return;
    }
    // Streaming calls: the client sees the response metadata before the first message.
    if (ex.grpc) (res as { flushHeaders?: () => void }).flushHeaders?.();
    // Only now: node:http2 emits 'response' on the next tick, but DATA read in the same chunk as the HEADERS would be
    // emitted at once to a listener already attached, and dropped as arriving before the response (seen under load).
    this.stream?.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    if (!this.committed || this.settled) return;
    this.r.ex.bytesSent += chunk.length;
    if (!writeDownstream(this.r.ex, chunk)) {
      this.stream?.pause();
      this.r.ex.res.once('drain', this.onDrain);
    }
  }

  private onEnd(): void {
    if (!this.committed || this.settled) return;
    const ex = this.r.ex;
    const t = this.trailers;
    if (ex.grpc && (t === undefined || grpcStatusOf(t) === undefined)) {
      // A gRPC response always ends with a status; one without was cut off (the upstream's session went away).
      this.stream?.close(NGHTTP2_CANCEL);
      respondError(ex, new MeshError('upstream-reset', `upstream ${this.r.endpoint.id} ended the call without a grpc-status`));
      this.finish({ kind: 'committed' });
      return;
    }
    if (t) {
      const g = grpcStatusOf(t);
      if (g !== undefined) ex.grpcStatus = grpcStatusLabel(g);
      ex.res.addTrailers(cleanTrailers(t));
    }
    ex.res.end();
    this.finish({ kind: 'committed' });
  }

  private onClose(): void {
    if (this.settled) return;
    const code = this.stream?.rstCode ?? NGHTTP2_NO_ERROR;
    const err = this.cancelReason ?? new MeshError('upstream-reset', `upstream ${this.r.endpoint.id} reset the stream (HTTP/2 error ${code})`);
    if (this.committed) {
      respondError(this.r.ex, err);
      this.finish({ kind: 'committed' });
      return;
    }
    this.finish({ kind: 'failed', error: err, refusedStream: code === NGHTTP2_REFUSED_STREAM });
  }

  private finish(result: AttemptResult): void {
    if (this.settled) return;
    this.settled = true;
    this.timer?.cancel();
    this.r.ex.res.off('drain', this.onDrain);
    this.settle(result);
  }
}

/** Runs one HTTP/2 try; `onStart` receives the handle the retry layer cancels it with. Never rejects. */
export function forwardH2(r: H2AttemptRequest, onStart: (cancel: (reason: MeshError) => void) => void): Promise<AttemptResult> {
  return new Promise<AttemptResult>((resolve) => {
    const attempt = new H2Attempt(r, resolve);
    onStart((reason) => attempt.cancel(reason));
    void attempt.start();
  });
}
