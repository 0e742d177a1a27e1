// Mesh TLS: the inbound front door (sniff plaintext vs TLS, verify the peer's SPIFFE leaf) and the outbound mTLS connector.
import { X509Certificate } from 'node:crypto';
import type http from 'node:http';
import type http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { buildConnector } from 'undici';
import type { Logger } from '../api/log.js';
import { checkLeaf, parseSpiffeUri, uriSans } from '../certs/spiffe.js';
import type { Credentials } from './credentials.js';
import { handToHttp1, type FirstByteWait } from './first-byte.js';
import { connectGuarded } from './h2-field-guard.js';
import type { Peer } from './exchange.js';
import type { Telemetry } from './telemetry.js';

/** How long a new inbound connection may take to send its first byte and finish the handshake (slowloris). */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/** The verified caller of each inbound TLS connection, read by the listener when it builds an exchange. */
const peers = new WeakMap<net.Socket, Peer>();
/** The same, as a property: node:http2 shows requests a proxy of the socket, which reads through but is not the key. */
const PEER = Symbol('mesh.peer');

export function peerOf(socket: net.Socket): Peer | undefined {
  return peers.get(socket) ?? (socket as net.Socket & { [PEER]?: Peer })[PEER];
}

/** ALPN id of a `protocol: tcp` connection between sidecars: raw bytes for the local app, not HTTP (tcp-inbound.ts). */
export const TCP_ALPN = 'trellis-tcp/1';

/** ALPN ids the inbound TLS server offers, in its order of preference. */
export const INBOUND_ALPN: readonly string[] = ['h2', 'http/1.1', TCP_ALPN];

export interface InboundTlsDeps {
  readonly credentials: () => Credentials | undefined;
  readonly mtls: () => 'strict' | 'permissive';
  readonly trustDomain: () => string;
  readonly wallNow: () => number;
  readonly telemetry: Telemetry;
  readonly log: Logger;
  /** Takes verified connections that chose TCP_ALPN; without it they are closed. */
  readonly tcp?: (socket: tls.TLSSocket, peer: Peer) => void;
  /** How long a verified HTTP/1 connection may wait for its first request byte (the keep-alive idle time). */
  readonly idleMs: number;
  /** Holds connections until their first byte; the drain closes what it holds. */
  readonly wait: FirstByteWait;
}

function serverOptions(c: Credentials): tls.SecureContextOptions & tls.TlsOptions {
  return {
    key: c.keyPem,
    cert: c.certPem,
    ca: c.caPem,
    minVersion: 'TLSv1.3',
    requestCert: true,
    // We check the chain result ourselves in 'secureConnection', so every refusal is counted with its reason.
    rejectUnauthorized: false,
  };
}

/** OpenSSL verify codes → the `reason` label of mesh_tls_handshake_errors_total. */
export function verifyReason(code: string | undefined): string {
  switch (code) {
    case 'CERT_HAS_EXPIRED': return 'expired';
    case 'CERT_NOT_YET_VALID': return 'not-yet-valid';
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return 'untrusted-certificate';
    default:
      return code ? code.toLowerCase().replace(/_/g, '-') : 'unknown';
  }
}

/** Error codes of a failed TLS handshake or certificate check (as opposed to a socket error). */
export function isTlsFailure(code: string): boolean {
  return code.startsWith('ERR_SSL_') || /CERT|UNABLE_TO|SELF_SIGNED/.test(code);
}

function handshakeReason(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  if (code === 'ERR_SSL_HTTP_REQUEST') return 'plaintext';
  if (/UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|WRONG_VERSION_NUMBER|VERSION_TOO_LOW/.test(code)) return 'protocol-version';
  if (code === 'ECONNRESET') return 'reset';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  return 'handshake-failed';
}

/**
 * The inbound listener: a TCP server that looks at the first byte of each connection. A TLS ClientHello goes to
 * the TLS server (TLS 1.3, client certificate required and checked against the SPIFFE leaf profile); anything else
 * is plaintext, served unauthenticated in permissive mode and dropped in strict mode. Accepted connections are
 * handed to `app`, the HTTP server that runs the inbound pipeline.
 */
export function createInboundServer(
  app: http.Server,
  d: InboundTlsDeps,
  h2app?: http2.Http2Server,
): { server: net.Server; refresh: () => void } {
  const wait = d.wait;
  const refused = (reason: string) => d.telemetry.tlsHandshakeErrors.labels('inbound', reason).inc();
  let creds = d.credentials();
  const tlsServer = tls.createServer({ ...(creds ? serverOptions(creds) : {}), handshakeTimeout: HANDSHAKE_TIMEOUT_MS, ALPNProtocols: [...INBOUND_ALPN] });
  tlsServer.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    refused(handshakeReason(err));
    d.log.debug('tls_handshake_failed', { direction: 'inbound', error: err.message, remote: socket.remoteAddress });
  });
  tlsServer.on('secureConnection', (socket: tls.TLSSocket) => {
    const reason = checkPeer(socket, d);
    if (typeof reason === 'string') {
      refused(reason);
      d.log.debug('tls_peer_refused', { reason, remote: socket.remoteAddress });
      socket.destroy();
      return;
    }
    peers.set(socket, reason);
    (socket as tls.TLSSocket & { [PEER]?: Peer })[PEER] = reason;
    if (socket.alpnProtocol === TCP_ALPN) {
      if (d.tcp) d.tcp(socket, reason);
      else socket.destroy();
      return;
    }
    // ALPN h2 (sidecar-to-sidecar gRPC) goes to the HTTP/2 server running the same inbound pipeline.
    if (socket.alpnProtocol === 'h2' && h2app) return void connectGuarded(h2app, socket);
    // HTTP/1 gets the socket with its first request byte, as on the outbound port. Handed over at once, a connection
    // a peer's pool opened ahead of use sat in Node's header timeout, and after 10 s silent Node wrote it a 408 and
    // closed it: a request the peer sent on it just then got that 408 as its answer (1 in 360,000 in the stop-20 soak).
    // Silent until the keep-alive idle time, it is closed with nothing written, as an idle keep-alive connection is.
    const heard = wait.hold(socket, d.idleMs);
    // Until the HTTP server has it (and its error listener), a reset is ours to end.
    const onError = (): void => void socket.destroy();
    socket.on('error', onError);
    socket.once('data', (chunk: Buffer) => {
      heard();
      socket.off('error', onError);
      handToHttp1(app, socket, chunk);
    });
  });

  const server = net.createServer((socket) => {
    const heard = wait.hold(socket, HANDSHAKE_TIMEOUT_MS);
    socket.once('data', (chunk: Buffer) => {
      // From here the TLS server's handshakeTimeout, or the HTTP server's header timeout, bounds the wait.
      heard();
      if (chunk[0] === 0x16 /* TLS handshake record */) {
        if (!creds) {
          refused('no-certificate-loaded');
          socket.destroy();
          return;
        }
        socket.pause();
        socket.unshift(chunk);
        tlsServer.emit('connection', socket);
      } else if (d.mtls() === 'permissive') {
        handToHttp1(app, socket, chunk);
      } else {
        refused('plaintext');
        socket.destroy();
      }
    });
    socket.on('error', () => socket.destroy());
  });
  return {
    server,
    /** New credentials: new handshakes use them; established connections keep theirs. */
    refresh() {
      creds = d.credentials();
      if (creds) tlsServer.setSecureContext(serverOptions(creds));
    },
  };
}

function checkPeer(socket: tls.TLSSocket, d: InboundTlsDeps): Peer | string {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return 'no-client-certificate';
  if (!socket.authorized) return verifyReason(String(socket.authorizationError ?? ''));
  const leaf = checkLeaf(cert, d.trustDomain(), d.wallNow());
  if (!leaf.ok) return leaf.reason;
  return { uri: `spiffe://${leaf.id.trustDomain}/ns/${leaf.id.namespace}/sa/${leaf.id.service}`, namespace: leaf.id.namespace, service: leaf.id.service };
}

export class PeerIdentityError extends Error {
  readonly code = 'ERR_MESH_PEER_IDENTITY';
}

/** The server-side identity check of every outbound mesh connection (pools and tunnels): exactly one SPIFFE id, `expected`. */
export function serverIdentityCheck(expected: string): (host: string, cert: tls.PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const sans = uriSans(new X509Certificate(cert.raw));
    if (sans.length !== 1 || !parseSpiffeUri(sans[0])) return new PeerIdentityError(`server presented ${sans.length} URI SANs, expected exactly one SPIFFE id`);
    if (sans[0] !== expected) return new PeerIdentityError(`server identity is "${sans[0]}", expected "${expected}"`);
    return undefined;
  };
}

/**
 * An undici connector for one destination service: presents the sidecar's current certificate, trusts only the
 * mesh CA, and requires the server's SPIFFE id to be exactly `expected`. A new connector (and session cache) is built
 * when the credentials rotate; pooled connections keep working on the old ones.
 */
export function meshConnector(credentials: () => Credentials | undefined, expected: string, deps: { telemetry: Telemetry; connectTimeoutMs: number; h2?: boolean }): buildConnector.connector {
  let builtFor: Credentials | undefined;
  let connect: buildConnector.connector | undefined;
  const checkServerIdentity = serverIdentityCheck(expected);
  return (opts, callback) => {
    const creds = credentials();
    if (!creds) {
      callback(Object.assign(new Error('no workload certificate loaded'), { code: 'ERR_MESH_NO_CERTIFICATE' }), null);
      return;
    }
    if (creds !== builtFor || !connect) {
      builtFor = creds;
      connect = buildConnector({
        secureContext: tls.createSecureContext({ key: creds.keyPem, cert: creds.certPem, ca: creds.caPem, minVersion: 'TLSv1.3' }),
        minVersion: 'TLSv1.3',
        rejectUnauthorized: true,
        checkServerIdentity,
        timeout: deps.connectTimeoutMs,
        maxCachedSessions: 100,
        // Offers ALPN h2 beside http/1.1 (h2-pool.ts checks the server chose h2).
        allowH2: deps.h2 === true,
      } as buildConnector.BuildOptions);
    }
    connect(opts, (err, socket) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code ?? '';
        const reason = err instanceof PeerIdentityError ? 'peer-identity' : isTlsFailure(code) ? verifyReason(code) : undefined;
        if (reason) deps.telemetry.tlsHandshakeErrors.labels('outbound', reason).inc();
        callback(err, null);
      } else {
        callback(null, socket as net.Socket);
      }
    });
  };
}
