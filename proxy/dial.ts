// Raw connections to one endpoint for tunnels (WebSocket, TCP): mesh mTLS offering one ALPN id, or plain TCP; bounded by the connect timeout.
import net from 'node:net';
import tls from 'node:tls';
import { MeshError } from '../api/errors.js';
import type { Credentials } from './credentials.js';
import type { Endpoint } from './endpoint.js';
import { PeerIdentityError, serverIdentityCheck, verifyReason, isTlsFailure } from './tls.js';
import type { Telemetry } from './telemetry.js';

/** TLS sessions kept per certificate generation, as the pools' connector keeps them (undici maxCachedSessions). */
const MAX_CACHED_SESSIONS = 100;

interface Generation {
  /** Building a context parses the key and chain: too slow for every connection. */
  readonly context: tls.SecureContext;
  /** endpoint id → last session ticket, so a new tunnel resumes instead of a full handshake (insertion-ordered for eviction). */
  readonly sessions: Map<string, Buffer>;
}

/** Keyed by the credentials object: a rotation starts a new generation, and the old one is dropped with it. */
const generations = new WeakMap<Credentials, Generation>();

function generationOf(c: Credentials): Generation {
  let g = generations.get(c);
  if (!g) {
    g = { context: tls.createSecureContext({ key: c.keyPem, cert: c.certPem, ca: c.caPem, minVersion: 'TLSv1.3' }), sessions: new Map() };
    generations.set(c, g);
  }
  return g;
}

export interface MeshDialOptions {
  /** The sidecar's current workload certificate; undefined fails the dial (never plaintext for a mutual service). */
  readonly credentials: Credentials | undefined;
  /** The SPIFFE id the server must present: the destination service's. */
  readonly expected: string;
  /** The one ALPN id offered; the server must select it (a sidecar that does not know it refuses the handshake). */
  readonly alpn: string;
  readonly connectTimeoutMs: number;
  readonly telemetry: Telemetry;
}

/** Settles with the socket once `ready` fires, or fails (connect error or timeout) and destroys it. */
function settle<S extends net.Socket>(socket: S, ready: string, ep: Endpoint, timeoutMs: number): Promise<S> {
  return new Promise<S>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new MeshError('upstream-connect-failed', `connect to ${ep.id} timed out after ${timeoutMs}ms`));
    }, timeoutMs);
    const onError = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once(ready, () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** Plain TCP, for `tls: disable` services and the local app. */
export function dialPlain(ep: Endpoint, connectTimeoutMs: number): Promise<net.Socket> {
  const socket = net.connect({ host: ep.host, port: ep.port });
  return settle(socket, 'connect', ep, connectTimeoutMs);
}

/**
 * Mutual TLS 1.3 to another sidecar, with the same checks as the pools' connector (tls.ts meshConnector): our current
 * certificate, only the mesh CA trusted, the server's SPIFFE id exactly `expected`. Refusals are counted in
 * mesh_tls_handshake_errors_total{direction="outbound"} with the same reasons.
 */
export async function dialMesh(ep: Endpoint, o: MeshDialOptions): Promise<tls.TLSSocket> {
  if (!o.credentials) throw Object.assign(new Error('no workload certificate loaded'), { code: 'ERR_MESH_NO_CERTIFICATE' });
  const g = generationOf(o.credentials);
  const key = `${ep.id}\0${o.alpn}`;
  const socket = tls.connect({
    host: ep.host,
    port: ep.port,
    // SNI carries host names only; endpoints are usually addresses.
    servername: net.isIP(ep.host) ? undefined : ep.host,
    secureContext: g.context,
    session: g.sessions.get(key),
    minVersion: 'TLSv1.3',
    rejectUnauthorized: true,
    checkServerIdentity: serverIdentityCheck(o.expected),
    ALPNProtocols: [o.alpn],
  });
  socket.on('session', (ticket: Buffer) => {
    g.sessions.delete(key);
    if (g.sessions.size >= MAX_CACHED_SESSIONS) g.sessions.delete(g.sessions.keys().next().value as string);
    g.sessions.set(key, ticket);
  });
  try {
    await settle(socket, 'secureConnect', ep, o.connectTimeoutMs);
  } catch (err) {
    // A ticket the server no longer takes would fail the next dial the same way.
    g.sessions.delete(key);
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const reason = err instanceof PeerIdentityError ? 'peer-identity' : isTlsFailure(code) ? verifyReason(code) : undefined;
    if (reason) o.telemetry.tlsHandshakeErrors.labels('outbound', reason).inc();
    throw err;
  }
  if (socket.alpnProtocol !== o.alpn) {
    // A server without ALPN at all would hand these bytes to its HTTP server: refuse rather than speak past it.
    socket.destroy();
    o.telemetry.tlsHandshakeErrors.labels('outbound', 'alpn').inc();
    throw new MeshError('upstream-connect-failed', `${ep.id} did not accept ALPN "${o.alpn}" (got ${JSON.stringify(socket.alpnProtocol)})`);
  }
  return socket;
}
