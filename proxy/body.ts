// Request bodies: stream by default; buffer up to the replay limit only when a retry or mirror could need the bytes again.
import { ServerResponse } from 'node:http';
import { Http2ServerRequest } from 'node:http2';
import { Transform } from 'node:stream';
import { MeshError } from '../api/errors.js';
import type { DownstreamRequest, DownstreamResponse, Exchange, PreparedBody } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { recordBody } from './replay.js';
import { respondError } from './respond.js';
import { mayRetryRequest } from './retry-policy.js';

export type { PreparedBody };

export const NO_BODY: PreparedBody = Object.freeze({ kind: 'none' });

/**
 * HARDENING.md row 12: the largest request body forwarded. A declared Content-Length over it is refused by the
 * listener; a body without one (chunked, HTTP/2) is cut off by capBody. gRPC streams are exempt: a long-lived stream
 * may carry any amount, and each message is bounded by the endpoints' own limits.
 */
export const MAX_REQUEST_BODY_BYTES = 16 * 1024 * 1024;

export function hasBody(req: DownstreamRequest): boolean {
  // HTTP/2 frames bodies itself: a request without one ends its stream with the HEADERS frame.
  if (req instanceof Http2ServerRequest) return !req.stream.endAfterHeaders;
  const cl = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (cl !== undefined && cl !== '0');
}

/** Whether the body can be sent again now; a recorded stream (replay.ts) becomes replayable once it has ended in full. */
export function isReplayable(b: PreparedBody): boolean {
  return b.kind !== 'stream' || b.replay?.() !== undefined;
}

/** The body for another try: a recorded stream that ended within the limit is sent from the recording. */
export function forReplay(b: PreparedBody): PreparedBody {
  const data = b.kind === 'stream' ? b.replay?.() : undefined;
  return data === undefined ? b : { kind: 'buffered', data };
}

/**
 * Reads up to `limit` bytes; past that, hands back the read prefix plus the rest as one stream, so a large upload is
 * still forwarded (just not retried) and memory stays bounded.
 */
export async function bufferUpTo(
  req: DownstreamRequest, limit: number, body: AsyncIterable<Buffer> = req as AsyncIterable<Buffer>,
): Promise<PreparedBody> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) return { kind: 'stream', data: body };
  const chunks: Buffer[] = [];
  let size = 0;
  const it = body[Symbol.asyncIterator]();
  for (;;) {
    let r: IteratorResult<Buffer>;
    try {
      r = await it.next();
    } catch (err) {
      if (err instanceof MeshError) throw err;
      throw new MeshError('bad-request', 'client aborted the request body', { cause: err });
    }
    if (r.done) return { kind: 'buffered', data: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size) };
    chunks.push(r.value);
    size += r.value.length;
    if (size > limit) {
      return {
        kind: 'stream',
        data: (async function* () {
          yield* chunks;
          for (;;) {
            const next = await it.next();
            if (next.done) return;
            yield next.value;
          }
        })(),
      };
    }
  }
}

/**
 * The body without a declared length, as forwarded: it fails with `payload-too-large` instead of passing the chunk that
 * would cross `limit`, so nothing beyond the limit reaches the upstream. The request is unpiped first, so that once
 * the 413 is sent Node drains the rest of the body and the connection stays in step.
 */
export function capBody(req: DownstreamRequest, limit: number): Transform {
  let size = 0;
  const cap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size <= limit) return done(null, chunk);
      req.unpipe(cap);
      done(new MeshError('payload-too-large', `request body over the ${limit}-byte limit`));
    },
  });
  req.once('error', (err) => cap.destroy(err));
  return req.pipe(cap);
}

/**
 * `100 Continue`, once this response has the connection. The response to a pipelined request waits for the ones
 * before it, and if its final head is written meanwhile, Node queues that head ahead of a 100 written earlier: the
 * client read `HTTP/1.1 100 Continue` as body bytes (found by npm run fuzz). A final answer already written makes the
 * 100 pointless, so it is then not sent at all.
 */
export function sendContinue(res: DownstreamResponse): void {
  if (!(res instanceof ServerResponse) || res.socket) return res.writeContinue();
  res.once('socket', () => {
    if (!res.headersSent) res.writeContinue();
  });
}

/**
 * Prepares the body after routing admitted the request. `Expect: 100-continue` is answered only now, so a client
 * that would be refused never sends its body (HARDENING.md bad input #10).
 */
export function bodyLayer(replayLimit: number, bodyLimit = MAX_REQUEST_BODY_BYTES): Layer {
  return (next: Handler): Handler => async (ex: Exchange) => {
    if (!hasBody(ex.req)) return next(ex);
    if (ex.req.headers.expect !== undefined) sendContinue(ex.res);
    const rule = ex.rule;
    // gRPC streams both ways: forwarded at once, recorded so that a unary-sized call can still be retried.
    if (ex.grpc && rule !== undefined && rule.retry.attempts > 1) {
      ex.body = recordBody(ex.req, replayLimit);
      return next(ex);
    }
    const wantsReplay = rule !== undefined &&
      ((rule.retry.attempts > 1 && mayRetryRequest(rule.retry, ex.method, true)) || rule.mirror !== undefined);
    // A declared length is already within the limit (listener.ts), and the parser holds the body to it.
    const data = ex.grpc || ex.req.headers['content-length'] !== undefined ? ex.req : capBody(ex.req, bodyLimit);
    try {
      ex.body = wantsReplay ? await bufferUpTo(ex.req, replayLimit, data as AsyncIterable<Buffer>) : { kind: 'stream', data };
    } catch (err) {
      respondError(ex, err);
      return;
    }
    return next(ex);
  };
}
