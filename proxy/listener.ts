// The listeners: accept inbound and outbound HTTP/1.1, enforce parser limits, validate the target, build the exchange.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { Http2ServerRequest } from 'node:http2';
import type { Socket } from 'node:net';
import { MeshError } from '../api/errors.js';
import type { Clock } from '../api/clock.js';
import type { AccessLog } from './access-log.js';
import type { Logger } from '../api/log.js';
import { hasBody, MAX_REQUEST_BODY_BYTES, NO_BODY } from './body.js';
import { recordedStatus, type Direction, type DownstreamRequest, type DownstreamResponse, type Exchange } from './exchange.js';
import { isGrpcContentType, parseGrpcTimeout } from './grpc.js';
import { newRequestId, requestHeadersForUpstream } from './headers.js';
import { normalizePath } from './path.js';
import { admit, afterAnswers, MAX_PIPELINED, refuseInTurn } from './pipelining.js';
import type { Handler } from './pipeline-types.js';
import { respondError } from './respond.js';
import { acceptUpgrade } from './upgrade.js';
import { peerOf } from './tls.js';
import { guardedSession, malformedRequest } from './h2-field-guard.js';
import type { RouteStats } from './telemetry.js';

/** HARDENING.md bad input #3, #11 and #12: explicit limits rather than whatever the runtime defaults to. */
export const LIMITS = Object.freeze({
  maxHeaderBytes: 16 * 1024,
  maxHeaderCount: 100,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 60_000,
  /** How often Node looks for connections past the headers or request timeout (its default, 30 s, triples the first). */
  timeoutCheckIntervalMs: 1_000,
  maxRequestBodyBytes: MAX_REQUEST_BODY_BYTES,
});

export type ListenerLimits = { readonly [K in keyof typeof LIMITS]: number };

export interface ListenerDeps {
  readonly direction: Direction;
  readonly clock: Clock;
  readonly log: Logger;
  readonly handler: Handler;
  /** Where requests refused before routing (bad target, bad path) are counted. */
  readonly refused: RouteStats;
  /** Refusals are access-logged too: they are the requests whose failure most needs explaining. */
  readonly accessLog?: AccessLog;
  /** The chain for WebSocket handshakes (pipeline.ts); without it, and for every other Upgrade (h2c), requests are served without upgrading. */
  readonly upgrade?: Handler;
  /** Tests shorten the timeouts; the sidecar always runs with LIMITS. */
  readonly limits?: ListenerLimits;
}

/** Counts exchanges in flight so a drain can wait for them. */
export class InFlight {
  count = 0;
  /** Exchanges that have left, ever (the load shedder's completion rate). */
  finished = 0;
  draining = false;
  private waiters: (() => void)[] = [];

  enter(): void {
    this.count++;
  }

  leave(): void {
    this.finished++;
    if (--this.count === 0) for (const w of this.waiters.splice(0)) w();
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

export function createListener(deps: ListenerDeps, inflight: InFlight): http.Server {
  const limits = deps.limits ?? LIMITS;
  const server = http.createServer({
    maxHeaderSize: limits.maxHeaderBytes,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    connectionsCheckingInterval: limits.timeoutCheckIntervalMs,
    insecureHTTPParser: false,
    // buildExchange refuses a missing Host itself, so the 400 carries x-mesh-error like every other refusal.
    requireHostHeader: false,
  });
  // This server never listens: the outbound front and the TLS front hand it sockets. Node starts the connection list
  // that enforces headersTimeout and requestTimeout (and that closeIdleConnections walks) only on 'listening', so
  // without this a client dribbling its headers held a connection open forever (HARDENING.md row 11).
  server.emit('listening');
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const admitted = admit(req, res);
    if (admitted === true) serve(deps, inflight, req, res);
    else if (admitted === 'too-many') {
      refuse(deps, req, res, new MeshError('overloaded', `more than ${MAX_PIPELINED} pipelined requests in progress on one connection`));
    }
  };
  server.on('request', onRequest);
  // Answer `Expect: 100-continue` ourselves, after admission (body.ts), not as soon as headers arrive.
  server.on('checkContinue', onRequest);
  // An expectation other than 100-continue (RFC 9110 §10.1.1): 417, made like every refusal and tracked like any request
  // (Node's own 417 went out unseen, and an upgrade pipelined behind it took the socket from under it and stalled).
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    if (admit(req, res) === false) return;
    refuse(deps, req, res, new MeshError('bad-request', `unsupported expectation "${String(req.headers.expect).slice(0, 64)}"`, { status: 417 }));
  });
  // HARDENING.md row 13: only a WebSocket handshake may become a tunnel, and only after the upstream's 101 (upgrade.ts).
  const upgrade = deps.upgrade && { ...deps, handler: deps.upgrade };
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    // An upgrade pipelined behind requests still being answered waits for their responses (Node leaves the socket
    // unread meanwhile): taking the socket earlier crashed the process (ERR_HTTP_SOCKET_ASSIGNED, found by npm run fuzz).
    afterAnswers(socket, () => {
      if (!socket.destroyed) acceptUpgrade(server, req, socket, head, upgrade && ((res) => serve(upgrade, inflight, req, res)));
    });
  });
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    refuseInTurn(socket, 'HTTP/1.1 405 Method Not Allowed\r\nx-mesh-error: method-not-allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    deps.log.debug('connect_refused', { direction: deps.direction, target: req.url });
  });
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => {
    const known = err.code === 'HPE_INVALID_VERSION' && !unsupportedVersion(err.rawPacket) ? undefined : CLIENT_ERRORS[err.code ?? ''];
    const [status, code] = known ?? ['400 Bad Request', 'bad-request'];
    refuseInTurn(socket, `HTTP/1.1 ${status}\r\nx-mesh-error: ${code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  });
  return server;
}

/** Parser errors that have a more specific answer than 400 (as Node's own default handler gives them). */
const CLIENT_ERRORS: Readonly<Record<string, readonly [string, string]>> = Object.freeze({
  HPE_HEADER_OVERFLOW: ['431 Request Header Fields Too Large', 'headers-too-large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: ['413 Payload Too Large', 'payload-too-large'],
  HPE_INVALID_VERSION: ['505 HTTP Version Not Supported', 'version-not-supported'],
  ERR_HTTP_REQUEST_TIMEOUT: ['408 Request Timeout', 'bad-request'],
});

/**
 * Whether the request line ends in a well-formed version we do not speak (`HTTP/1.2`, `HTTP/3.0`): that is a 505.
 * llhttp reports other damage near the version as a version error too (a bare LF after it, `PRI` without `HTTP/2.0`),
 * and that is a plain 400.
 */
export function unsupportedVersion(packet: Buffer | undefined): boolean {
  if (!packet) return false;
  const m = /^[^\r\n]* HTTP\/(\d)\.(\d)\r\n/.exec(packet.subarray(0, 8_192).toString('latin1'));
  return m !== null && !(m[1] === '1' && (m[2] === '0' || m[2] === '1'));
}

/** Serves one request of either HTTP version (h2-listener.ts hands HTTP/2 streams here through the compatibility API). */
export function serve(deps: ListenerDeps, inflight: InFlight, req: DownstreamRequest, res: DownstreamResponse): void {
  if (req instanceof Http2ServerRequest && req.stream.aborted) {
    // The client reset the stream in the read that brought its HEADERS: node:http2 emits a read's streams only after
    // nghttp2 has processed all of it (always so behind the field check's tap; a rapid-reset flood looks like this).
    // No one is left to answer and nothing is forwarded. Serving it anyway crashed the sidecar: the body's abort
    // error reached a body stream nobody listened to yet (test/hardening/h2-abuse.test.ts, WINDOW_UPDATE of 0).
    const stub = stubExchange(deps, req, res);
    stub.clientGone = true;
    deps.refused.record(recordedStatus(stub), 0, stub.grpcStatus);
    deps.accessLog?.record(stub);
    return;
  }
  inflight.enter();
  if (req instanceof Http2ServerRequest && !req.stream.endAfterHeaders) req.once('aborted', failAbortedBody);
  if (inflight.draining && 'shouldKeepAlive' in res) res.shouldKeepAlive = false;
  const ex = buildExchange(deps, req, res);
  const done = () => inflight.leave();
  if (ex instanceof MeshError) {
    refuse(deps, req, res, ex);
    done();
    return;
  }
  deps.handler(ex).catch((err: unknown) => {
    deps.log.error('handler_failed', { direction: deps.direction, error: err });
    respondError(ex, err);
  }).finally(done);
}

/**
 * node:http2's compatibility request ends a body cleanly (push(null)) when the client resets its stream, so a cut-off
 * upload would be buffered, or forwarded with END_STREAM, as if complete. Failing it instead makes every reader (body.ts,
 * replay.ts, the upstream request) see an abort, as HTTP/1 readers do. The no-op listener keeps an unread body from
 * turning the error into an uncaught one.
 */
function failAbortedBody(this: Http2ServerRequest): void {
  if (this.readableEnded) return;
  this.on('error', ignore);
  this.destroy(new MeshError('bad-request', 'client reset the stream before its request body ended'));
}

function ignore(): void {}

/** Answers a request refused before routing, through respondError like every other refusal, counted and logged. */
function refuse(deps: ListenerDeps, req: DownstreamRequest, res: DownstreamResponse, err: MeshError): void {
  // The body of a refused request (perhaps too large, or framed in a way we will not forward) is not drained: the connection ends.
  if ('shouldKeepAlive' in res && hasBody(req)) res.shouldKeepAlive = false;
  const stub = stubExchange(deps, req, res);
  respondError(stub, err);
  deps.refused.record(res.statusCode, (deps.clock.now() - stub.start) / 1000, stub.grpcStatus);
  deps.accessLog?.record(stub);
}

function buildExchange(deps: ListenerDeps, req: DownstreamRequest, res: DownstreamResponse): Exchange | MeshError {
  // The version on an HTTP/1 request line says nothing about the protocol: `GET / HTTP/2.0` is HTTP/1 text.
  const h2 = req instanceof Http2ServerRequest;
  if (!h2 && req.httpVersionMajor !== 1) return new MeshError('version-not-supported', `HTTP/${req.httpVersion} is not supported`);
  const limits = deps.limits ?? LIMITS;
  // HTTP/2 frames its bodies itself, but a declared content-length over the limit is refused the same way.
  const refused = h2 ? tooLarge(req.headers['content-length'], limits) : checkFraming(req, limits);
  if (refused) return refused;
  const raw = req.rawHeaders;
  if (raw.length > LIMITS.maxHeaderCount * 2) return new MeshError('headers-too-large', `more than ${LIMITS.maxHeaderCount} headers`);
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) if (raw[i].length === 4 && raw[i].toLowerCase() === 'host') hosts++;
  if (hosts > 1) return new MeshError('bad-request', 'more than one Host header');

  if (h2 && malformedRequest((req as Http2ServerRequest).stream)) {
    // RFC 9113 §8.1.1: a stream error of type PROTOCOL_ERROR. The 400 first says why (a server MAY answer before it resets).
    res.once('finish', () => (req as Http2ServerRequest).stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR));
    return new MeshError('bad-request', 'malformed header field: CR, LF or NUL in a value, or a name HTTP/2 forbids (RFC 9113 §8.2.1)');
  }
  const target = h2 ? h2Target(req as Http2ServerRequest) : splitTarget(req.url ?? '', req.headers.host);
  if (target instanceof MeshError) return target;
  const norm = normalizePath(target.pathAndQuery);
  if (!norm.ok) return new MeshError('bad-request', `bad request path: ${norm.reason}`);

  const headers = requestHeadersForUpstream(req.headers, true);
  let requestId = req.headers['x-request-id'];
  if (typeof requestId !== 'string' || headers['x-request-id'] === undefined || requestId.length > 200) {
    requestId = newRequestId();
  }
  headers['x-request-id'] = requestId;
  // An HTTP/2 request's socket is node:http2's proxy of the field check's tap: the identity is on the peer's own socket.
  const peer = peerOf(h2 ? guardedSession((req as Http2ServerRequest).stream.session)?.raw ?? req.socket : req.socket);
  const start = deps.clock.now();
  const grpc = isGrpcContentType(req.headers['content-type']);
  const grpcTimeout = grpc ? parseGrpcTimeout(req.headers['grpc-timeout']) : undefined;
  return {
    req, res,
    direction: deps.direction,
    start,
    method: req.method ?? 'GET',
    authority: target.host,
    path: norm.path,
    query: norm.query,
    headers,
    requestId,
    rule: undefined,
    backend: undefined,
    body: NO_BODY,
    stats: undefined,
    upstreamHost: target.hostHeader,
    sourceService: peer?.service ?? 'unknown',
    peer,
    committed: false,
    clientGone: false,
    span: undefined,
    traceId: '',
    attempts: 0,
    upstream: '',
    bytesSent: 0,
    meshError: '',
    grpc,
    deadline: grpcTimeout === undefined ? undefined : start + grpcTimeout,
    grpcStatus: '',
  };
}

/**
 * HTTP/1 framing Node's parser lets through but we cannot forward faithfully. A transfer coding other than a lone
 * `chunked` (`gzip, chunked` is valid HTTP, but undici re-frames the body and the coding would be silently lost) is
 * refused, as Envoy refuses it; so is a declared body over the limit (before `100 Continue`, HARDENING.md row 10),
 * and an HTTP/1.1 request without Host (RFC 9112 §3.2).
 */
function checkFraming(req: IncomingMessage, limits: ListenerLimits): MeshError | undefined {
  const te = req.headers['transfer-encoding'];
  if (te !== undefined && te.trim().toLowerCase() !== 'chunked') {
    return new MeshError('bad-request', `unsupported transfer-encoding "${te.slice(0, 64)}"`);
  }
  const big = tooLarge(req.headers['content-length'], limits);
  if (big) return big;
  if (req.httpVersionMinor === 1 && req.headers.host === undefined) return new MeshError('bad-request', 'missing Host header');
  return undefined;
}

/** A declared body over the limit: refused before `100 Continue` and before anything is forwarded. */
function tooLarge(cl: string | undefined, limits: ListenerLimits): MeshError | undefined {
  if (cl === undefined || !(Number(cl) > limits.maxRequestBodyBytes)) return undefined;
  return new MeshError('payload-too-large', `request body of ${cl} bytes is over the ${limits.maxRequestBodyBytes}-byte limit`);
}

/**
 * An HTTP/2 request's target: `:authority` (or `host` when a client sends only that), `:path` in origin form. nghttp2
 * already refuses connection-specific fields; `te` other than "trailers" and a `host` that contradicts `:authority`
 * (RFC 9113 §8.3.1) are refused here, so no request reaches routing with two different ideas of its destination.
 */
function h2Target(req: Http2ServerRequest): Target | MeshError {
  const te = req.headers.te;
  if (te !== undefined && te !== 'trailers') return new MeshError('bad-request', 'te other than "trailers" in an HTTP/2 request');
  const authority = req.headers[':authority'];
  const host = req.headers.host;
  if (authority !== undefined && host !== undefined && host.toLowerCase() !== authority.toLowerCase()) {
    return new MeshError('bad-request', `host "${host.slice(0, 64)}" does not match :authority "${authority.slice(0, 64)}"`);
  }
  const path = req.headers[':path'] ?? '';
  if (!path.startsWith('/')) return new MeshError('bad-request', `unsupported request target "${path.slice(0, 64)}"`);
  return splitTarget(path, authority ?? host);
}

/** A minimal exchange for requests refused before routing, so they still go through respondError. */
function stubExchange(deps: ListenerDeps, req: DownstreamRequest, res: DownstreamResponse): Exchange {
  return {
    req, res, direction: deps.direction, start: deps.clock.now(), method: req.method ?? 'GET', authority: '', path: '/', query: '',
    headers: {}, requestId: newRequestId(), rule: undefined, backend: undefined, body: NO_BODY, stats: undefined,
    upstreamHost: '', sourceService: 'unknown', peer: undefined, committed: false, clientGone: false,
    span: undefined, traceId: '', attempts: 0, upstream: '', bytesSent: 0, meshError: '',
    grpc: isGrpcContentType(req.headers['content-type']), deadline: undefined, grpcStatus: '',
  };
}

interface Target {
  /** Routing key: host without port, lower-cased. */
  readonly host: string;
  /** The authority as the client gave it, sent upstream as Host unless a rewrite says otherwise. */
  readonly hostHeader: string;
  readonly pathAndQuery: string;
}

/** Origin form (`/x` + Host) or absolute form (`http://billing/x`, as HTTP_PROXY clients send); nothing else. */
export function splitTarget(url: string, hostHeader: string | undefined): Target | MeshError {
  let authority: string;
  let pathAndQuery: string;
  if (url.startsWith('/')) {
    if (hostHeader === undefined) return new MeshError('bad-request', 'missing Host header');
    authority = hostHeader;
    pathAndQuery = url;
  } else if (/^http:\/\//i.test(url)) {
    const rest = url.slice(7);
    const end = rest.search(/[/?]/);
    authority = end < 0 ? rest : rest.slice(0, end);
    pathAndQuery = end < 0 ? '/' : rest[end] === '?' ? `/${rest.slice(end)}` : rest.slice(end);
    if (authority.includes('@')) return new MeshError('bad-request', 'userinfo in request target');
    if (hostHeader !== undefined && hostHeader.toLowerCase() !== authority.toLowerCase()) {
      return new MeshError('bad-request', `request target authority "${authority}" does not match Host "${hostHeader}"`);
    }
  } else {
    return new MeshError('bad-request', `unsupported request target "${url.slice(0, 64)}"`);
  }
  const host = hostOf(authority);
  if (!host) return new MeshError('bad-request', `invalid authority "${authority.slice(0, 64)}"`);
  return { host, hostHeader: authority, pathAndQuery };
}

const HOST_RE = /^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|\[[0-9a-f:.]+\])$/;

/** Host without port, lower-cased; undefined when it is not a plausible host name or IP literal. */
export function hostOf(authority: string): string | undefined {
  let host = authority.toLowerCase();
  const colon = host.lastIndexOf(':');
  if (colon > host.lastIndexOf(']')) {
    const port = host.slice(colon + 1);
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) return undefined;
    host = host.slice(0, colon);
  }
  return HOST_RE.test(host) ? host : undefined;
}
