// One multiplexed HTTP/2 client session per endpoint (h2 over mesh mTLS, or h2c to a local gRPC app), re-made after GOAWAY or close.
import http2 from 'node:http2';
import net from 'node:net';
import type tls from 'node:tls';
import type { buildConnector } from 'undici';
import type { Endpoint } from './endpoint.js';

/** How long close() lets open streams finish before the session is destroyed. */
const CLOSE_GRACE_MS = 1_000;

export interface H2PoolSettings {
  readonly connectTimeoutMs: number;
  /** A session with no open stream for this long is closed (GOAWAY); the next request opens a new one. */
  readonly idleTimeoutMs: number;
  /** The mesh mTLS connector offering ALPN h2 (tls.ts); undefined = h2c over plain TCP. */
  readonly connect?: buildConnector.connector;
}

/**
 * Client session settings. Node's defaults for session memory and header pairs stay (HARDENING.md); push is refused,
 * and responses with header lists larger than the listeners accept are refused too.
 */
const SESSION_OPTIONS: http2.ClientSessionOptions = Object.freeze({
  maxHeaderListSize: 64 * 1024,
  settings: { enablePush: false },
});

export class H2ConnectError extends Error {
  constructor(message: string, readonly code: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * The session pool of one endpoint. Load balancing is per request (per stream), so one session suffices: every call to
 * the endpoint is a stream on it. A session that received GOAWAY, failed or closed is dropped at once; streams already
 * on it finish there (or fail with REFUSED_STREAM, which the retry layer may retry), new ones get a fresh session.
 */
export class H2Pool {
  private session: http2.ClientHttp2Session | undefined;
  private connecting: Promise<http2.ClientHttp2Session> | undefined;
  private closed = false;

  constructor(private readonly ep: Endpoint, private readonly s: H2PoolSettings) {}

  get secure(): boolean {
    return this.s.connect !== undefined;
  }

  /** The current session, or a new one; rejects with a connect error (nothing was sent). */
  acquire(): http2.ClientHttp2Session | Promise<http2.ClientHttp2Session> {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    this.connecting ??= this.open().finally(() => { this.connecting = undefined; });
    return this.connecting;
  }

  /** Forget a session that refused a new stream, so the next acquire() opens another. */
  discard(session: http2.ClientHttp2Session): void {
    if (this.session === session) this.session = undefined;
  }

  private async open(): Promise<http2.ClientHttp2Session> {
    if (this.closed) throw new H2ConnectError(`pool for ${this.ep.id} is closed`, 'ERR_MESH_POOL_CLOSED');
    const socket = await this.socket();
    const scheme = this.secure ? 'https' : 'http';
    const session = http2.connect(`${scheme}://${this.ep.id}`, { ...SESSION_OPTIONS, createConnection: () => socket });
    const drop = () => this.discard(session);
    session.once('goaway', drop);
    session.once('close', drop);
    // Errors also reach every open stream, which settles its own try; here they only retire the session.
    session.on('error', drop);
    session.setTimeout(this.s.idleTimeoutMs, () => session.close());
    // An idle pooled session must not keep the process alive.
    session.unref();
    this.session = session;
    if (this.closed) session.close();
    return session;
  }

  private socket(): Promise<net.Socket> {
    const { connect, connectTimeoutMs } = this.s;
    const ep = this.ep;
    if (connect) {
      return new Promise((resolve, reject) => {
        connect({ hostname: ep.host, host: ep.id, protocol: 'https:', port: String(ep.port), servername: undefined } as buildConnector.Options, (err, socket) => {
          if (err || !socket) return reject(err ?? new H2ConnectError(`connect to ${ep.id} failed`, 'ECONNREFUSED'));
          const proto = (socket as tls.TLSSocket).alpnProtocol;
          if (proto !== 'h2') {
            socket.destroy();
            return reject(new H2ConnectError(`${ep.id} did not negotiate h2 (ALPN ${proto || 'none'})`, 'ERR_MESH_NO_H2'));
          }
          resolve(socket as net.Socket);
        });
      });
    }
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: ep.host, port: ep.port, noDelay: true });
      socket.setTimeout(connectTimeoutMs, () => socket.destroy(new H2ConnectError(`connect to ${ep.id} timed out`, 'UND_ERR_CONNECT_TIMEOUT')));
      socket.once('connect', () => {
        socket.setTimeout(0);
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  }

  /**
   * Graceful: open streams finish, no new ones start; bounded, because node:http2 does not always call close()'s
   * callback for a session that is itself closing after the server's GOAWAY (seen on Node 20), and a sidecar's
   * shutdown must not hang on it.
   */
  close(): Promise<void> {
    this.closed = true;
    const s = this.session;
    this.session = undefined;
    if (!s || s.closed || s.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        s.destroy();
        resolve();
      }, CLOSE_GRACE_MS);
      s.close(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
