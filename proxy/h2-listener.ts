// HTTP/2 listeners: the h2c-or-HTTP/1.1 front door of the outbound port, and the node:http2 server both directions use.
import type http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import type { Clock } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import { FirstByteWait, handToHttp1 } from './first-byte.js';
import { bindFieldGuard, connectGuarded, guardedSession, sendGoaway } from './h2-field-guard.js';
import { LIMITS, serve, type InFlight, type ListenerDeps } from './listener.js';

/** RFC 9113 §3.4: what a prior-knowledge HTTP/2 client sends first. No HTTP/1 method starts like it. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * How long a response may have bytes waiting that the client's flow control (a window it never opens) or an unread
 * socket keeps from being sent, before the stream is reset. Inbound routes have no timeout of their own, so without
 * this such a reader pins an app connection for ever. Envoy's stream_idle_timeout default: 5 minutes.
 */
const STREAM_STALL_MS = 300_000;

/** How long closeAll() waits for sessions to finish closing by themselves. */
const CLOSE_GRACE_MS = 1_000;

/**
 * Rapid reset (CVE-2023-44487): nghttp2 already closes a session after a burst of 1,000 client resets (then 33 a
 * second) with INTERNAL_ERROR. This per-session token bucket is stricter (half the burst, the same rate), so abuse
 * ends sooner, with less upstream work started for reset streams, and with the code that names it.
 */
export const RESET_GUARD = Object.freeze({ burst: 500, perSecond: 33 });

/**
 * PING and SETTINGS frames a peer may send (each asks for an ACK): a burst of 100, then 10 a second. nghttp2 ends a
 * session only once 1,000 ACKs wait unsent, which a peer that reads them never reaches; over TLS the ACKs of a peer
 * that stopped reading pile up in memory until the idle timeout. gRPC servers are stricter still (grpc-go and grpc-c
 * allow one PING without data per 5 minutes by default, then GOAWAY ENHANCE_YOUR_CALM "too_many_pings").
 */
export const CONTROL_GUARD = Object.freeze({ burst: 100, perSecond: 10 });

/**
 * Settings for every HTTP/2 server of the sidecar. Node's session defaults (maxSessionMemory, maxSessionInvalidFrames,
 * maxSessionRejectedStreams, maxHeaderListPairs) stay as they are: they are the rapid-reset, CONTINUATION and HPACK
 * defences (HARDENING.md). Only limits Node leaves unbounded or larger than the HTTP/1 listener's are lowered.
 * h2-field-guard.ts decodes HPACK with the table size node:http2 advertises by default (4,096): set headerTableSize
 * here and the guard's HpackCheck must be given the same.
 */
export const H2_SERVER_OPTIONS: http2.ServerOptions = Object.freeze({
  maxHeaderListSize: LIMITS.maxHeaderBytes,
  settings: { maxConcurrentStreams: 1_000, maxHeaderListSize: LIMITS.maxHeaderBytes, enablePush: false },
});

export interface H2Listener {
  readonly server: http2.Http2Server;
  /** Drain: GOAWAY to every session; streams already open finish. */
  drain(): void;
  /**
   * After the drain: sessions closing since drain() end once their last stream has flushed its trailers; any still
   * open after CLOSE_GRACE_MS are destroyed. (An exchange counts as done when its response was ended, which for
   * HTTP/2 is before the frames are written, so destroying at once would cut the last trailers off.)
   */
  closeAll(): Promise<void>;
}

/**
 * An HTTP/2 server (no TLS of its own) serving the pipeline. The TLS front door and the outbound sniffer hand it
 * sockets through h2-field-guard.ts's connectGuarded.
 */
export function createH2Listener(deps: ListenerDeps, inflight: InFlight, opts: { streamStallMs?: number } = {}): H2Listener {
  const streamStallMs = opts.streamStallMs ?? STREAM_STALL_MS;
  const server = http2.createServer(H2_SERVER_OPTIONS);
  const sessions = new Set<http2.ServerHttp2Session>();
  const onRequest = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => serve(deps, inflight, req, res);
  server.on('request', onRequest);
  server.on('checkContinue', onRequest);
  server.on('session', (session: http2.ServerHttp2Session) => {
    bindFieldGuard(session, {
      reset: floodCounter(session, deps.clock, deps.log, RESET_GUARD, 'RST_STREAM'),
      control: floodCounter(session, deps.clock, deps.log, CONTROL_GUARD, 'PING/SETTINGS'),
    });
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.on('error', (err: Error) => deps.log.debug('h2_session_error', { direction: deps.direction, error: err.message }));
    session.setTimeout(LIMITS.keepAliveTimeoutMs, () => closeIdle(session, deps));
    keepRfcCodes(session);
    session.on('stream', (stream: http2.ServerHttp2Stream) => guardStall(stream, streamStallMs));
    if (inflight.draining) session.close();
  });
  server.on('sessionError', (err: Error) => deps.log.debug('h2_session_error', { direction: deps.direction, error: err.message }));
  return {
    server,
    drain() {
      for (const s of sessions) s.close();
    },
    async closeAll() {
      await Promise.all([...sessions].map((s) => new Promise<void>((resolve) => {
        if (s.destroyed) return resolve();
        const timer = setTimeout(() => {
          // The socket too: a session whose peer stopped reading never finishes a destroy() (see closeIdle).
          const socket = rawSocketOf(s);
          s.destroy();
          socket?.destroy();
          resolve();
        }, CLOSE_GRACE_MS);
        s.once('close', () => { clearTimeout(timer); resolve(); });
        s.close();
      })));
    },
  };
}

/** The peer's socket under a session (node:http2 holds the field check's tap, and hands out only a proxy of that). */
function rawSocketOf(session: http2.ServerHttp2Session): net.Socket | undefined {
  return guardedSession(session)?.raw;
}

/**
 * Whether anything is still waiting to be written: frames in nghttp2's queue, or bytes in the socket handle's write
 * queue (libuv's writeQueueSize, which net.Socket's own timeouts read; node:http2 writes to the handle natively, so
 * writableLength stays 0). Over TLS the ACKs of a PING flood sit in the TLS handle while nghttp2's queue is empty.
 */
function hasUnsent(session: http2.ServerHttp2Session, socket: net.Socket | undefined): boolean {
  const handle = (socket as unknown as { _handle?: { writeQueueSize?: number } } | undefined)?._handle;
  return (session.state.outboundQueueSize ?? 0) > 0 || (handle?.writeQueueSize ?? 0) > 0;
}

/**
 * The session idle timeout. A quiet session is closed gracefully: an open (even quiet) stream keeps it, as grpc-js
 * keepalives expect. But bytes still unsent after a whole idle period mean the peer stopped reading (a PING or
 * SETTINGS flood over TLS ends this way: nghttp2 stops reading while it cannot write the ACKs), and node:http2's
 * close() and even destroy() wait for the pending write forever: the socket itself is destroyed. Found by
 * test/hardening/h2-abuse.test.ts (the stalled session was never released).
 */
function closeIdle(session: http2.ServerHttp2Session, deps: ListenerDeps): void {
  if (session.destroyed) return;
  const socket = rawSocketOf(session);
  if (!hasUnsent(session, socket)) {
    session.close();
    return;
  }
  deps.log.info('h2_peer_not_reading', { direction: deps.direction, idle_ms: LIMITS.keepAliveTimeoutMs });
  session.destroy(new Error('peer stopped reading'), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  socket?.destroy();
}

/**
 * Resets a stream whose response could not send a byte for `ms` (the client keeps its window shut or stopped reading).
 * node:http2 emits 'timeout' only when nothing was sent meanwhile; a quiet stream with nothing to send (a long poll,
 * an idle gRPC stream) is left alone. Found by test/hardening/h2-abuse.test.ts (zero-window reader on the inbound port).
 */
function guardStall(stream: http2.ServerHttp2Stream, ms: number): void {
  stream.setTimeout(ms, () => {
    if (!stream.destroyed && stream.writableLength > 0) stream.close(http2.constants.NGHTTP2_CANCEL);
  });
}

/**
 * nghttp2 library errors (nghttp2.h `NGHTTP2_ERR_*`) that node:http2 turns into `session.destroy(err)` with no code,
 * and the RFC 9113 §7 code each one means. Floods are ENHANCE_YOUR_CALM, as nghttp2 itself would say.
 */
const RFC_CODE_OF_LIB_ERROR: ReadonlyMap<number, number> = new Map([
  [-505 /* NGHTTP2_ERR_PROTO */, http2.constants.NGHTTP2_PROTOCOL_ERROR],
  [-510 /* NGHTTP2_ERR_STREAM_CLOSED */, http2.constants.NGHTTP2_STREAM_CLOSED],
  [-522 /* NGHTTP2_ERR_FRAME_SIZE_ERROR */, http2.constants.NGHTTP2_FRAME_SIZE_ERROR],
  [-523 /* NGHTTP2_ERR_HEADER_COMP */, http2.constants.NGHTTP2_COMPRESSION_ERROR],
  [-524 /* NGHTTP2_ERR_FLOW_CONTROL */, http2.constants.NGHTTP2_FLOW_CONTROL_ERROR],
  // node's own callbacks fail this way once a peer has had maxSessionRejectedStreams streams refused (for
  // maxSessionMemory or the concurrency limit) and keeps opening more: the defence against a stream or header flood.
  [-902 /* NGHTTP2_ERR_CALLBACK_FAILURE */, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM],
  [-904 /* NGHTTP2_ERR_FLOODED: too many queued PING/SETTINGS ACKs */, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM],
  [-905 /* NGHTTP2_ERR_TOO_MANY_CONTINUATIONS (CVE-2024-27316 family) */, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM],
]);

/** The GOAWAY code for an error node:http2 destroys a session with; undefined leaves node's default (INTERNAL_ERROR). */
export function rfcCodeOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; errno?: unknown } | null | undefined;
  if (e?.code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') return http2.constants.NGHTTP2_ENHANCE_YOUR_CALM;
  if (e?.code !== 'ERR_HTTP2_ERROR' || typeof e.errno !== 'number') return undefined;
  return RFC_CODE_OF_LIB_ERROR.get(e.errno);
}

/**
 * When nghttp2 reports a peer's protocol violation, node:http2 destroys the session with the error but no code, so the
 * GOAWAY says INTERNAL_ERROR ("the server broke") where RFC 9113 names PROTOCOL_ERROR, FLOW_CONTROL_ERROR, ... (and its
 * own GOAWAY with the right code is pre-empted). Found by test/hardening/h2-abuse.test.ts; this restores the RFC code.
 */
function keepRfcCodes(session: http2.ServerHttp2Session): void {
  const destroy = session.destroy.bind(session);
  session.destroy = (error?: Error, code?: number) => {
    const rfc = code ?? rfcCodeOf(error);
    const guarded = guardedSession(session);
    // Behind the field check node:http2 may lose its own GOAWAY (h2-field-guard.ts, sendGoaway).
    if (guarded && !session.destroyed && (rfc !== undefined || error)) sendGoaway(guarded, rfc ?? http2.constants.NGHTTP2_INTERNAL_ERROR);
    return destroy(error, rfc);
  };
}

/**
 * A token bucket that sends GOAWAY ENHANCE_YOUR_CALM to a session whose peer sends frames of one kind faster than
 * `limit` allows. The field check counts the frames as it reads them, before nghttp2 does. For RST_STREAM this matters:
 * node:http2 emits a read's streams only after the whole read was processed, so a count of its 'aborted' events lags
 * a flood by up to a read of 2,000 resets, and nghttp2's own limit (1,000, with INTERNAL_ERROR) would end it first.
 */
function floodCounter(session: http2.ServerHttp2Session, clock: Clock, log: Logger, limit: { burst: number; perSecond: number }, what: string): () => void {
  let tokens = limit.burst;
  let at = clock.now();
  return () => {
    const now = clock.now();
    tokens = Math.min(limit.burst, tokens + ((now - at) / 1000) * limit.perSecond);
    at = now;
    if (--tokens < 0 && !session.destroyed) {
      log.warn('h2_flood', { frames: what, burst: limit.burst, per_second: limit.perSecond });
      // destroy() sends its code in the final GOAWAY (an undefined error would default the code to NO_ERROR).
      session.destroy(new Error(`${what} flood`), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    }
  };
}

/**
 * The outbound port: one TCP listener for both HTTP/1.1 and h2c with prior knowledge (gRPC clients). The first bytes
 * decide: the HTTP/2 preface goes to `h2`, anything else to `http1`. Bytes already read are handed back to whichever
 * parser takes the socket.
 */
export function createOutboundFront(
  http1: http.Server,
  h2: http2.Http2Server,
  log?: Logger,
  idleMs: number = LIMITS.keepAliveTimeoutMs,
  wait: FirstByteWait = new FirstByteWait(),
): net.Server {
  const debugCloses = log !== undefined && process.env.TRELLIS_DEBUG_CLOSES === '1';
  // noDelay as http.Server sets it on the sockets it accepts itself: this listener accepts them for it now.
  return net.createServer({ noDelay: true }, (socket) => {
    if (debugCloses) traceUnansweredClose(socket, log);
    // A connection that has sent nothing yet is idle, like a keep-alive connection between requests, and gets the same
    // time. It used to be 10 s: HTTP clients open connections they use later (undici's pool does in every burst), and
    // the soak's requests sent on such a connection as that timer closed it failed with ECONNRESET. Once bytes come,
    // the HTTP/1 header timeout or node:http2's own limits take over.
    const heard = wait.hold(socket, idleMs);
    socket.on('error', () => socket.destroy());
    let seen: Buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const prefaceSoFar = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (prefaceSoFar && seen.length < PREFACE.length) return;
      socket.off('data', onData);
      heard();
      if (prefaceSoFar) {
        // node:http2 reads what was unshifted before it takes over the socket handle.
        socket.pause();
        socket.unshift(seen);
        connectGuarded(h2, socket);
      } else {
        handToHttp1(http1, socket, seen);
      }
    };
    socket.on('data', onData);
  });
}

/**
 * TRELLIS_DEBUG_CLOSES=1: logs every connection this side closed before writing a byte (a client that sent a request
 * then sees "other side closed" with no answer), with the stack of the first close call. For hunting rare drops.
 */
function traceUnansweredClose(socket: net.Socket, log: Logger): void {
  let closer: string | undefined;
  let peer = '';
  const remotePort = socket.remotePort;
  for (const method of ['destroy', 'end', 'destroySoon'] as const) {
    const original = socket[method] as (...args: unknown[]) => unknown;
    (socket as unknown as Record<string, unknown>)[method] = function (this: net.Socket, ...args: unknown[]) {
      closer ??= `${method}: ${new Error().stack?.split('\n').slice(2, 12).join(' | ')}`;
      return original.apply(this, args);
    };
  }
  socket.on('end', () => (peer ||= 'end'));
  socket.on('error', (err: NodeJS.ErrnoException) => (peer ||= `error ${err.code ?? err.message}`));
  socket.on('close', () => {
    if (socket.bytesWritten === 0 && !peer) {
      log.warn('connection_closed_unanswered', { remote_port: remotePort, bytes_read: socket.bytesRead, closer: closer ?? 'none' });
    }
  });
}
