// The terminal stage for WebSocket upgrades: pick an endpoint, send the handshake, and tunnel only after the upstream's 101.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Clock } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import type { Logger } from '../api/log.js';
import type { Cluster } from './cluster.js';
import type { Endpoint } from './endpoint.js';
import type { Exchange } from './exchange.js';
import { headerValue, responseHeadersForClient, type HeaderRecord } from './headers.js';
import type { Handler } from './pipeline-types.js';
import { classifyUpstreamError } from './pool.js';
import { respondError } from './respond.js';
import type { Telemetry } from './telemetry.js';
import type { TunnelSet } from './tunnel.js';

/** How long the upstream may take to answer the handshake when the route sets no timeout (the inbound side). */
export const HANDSHAKE_TIMEOUT_MS = 15_000;
/** Endpoints tried when connecting fails; nothing was sent yet, so another endpoint is always safe. */
const CONNECT_ATTEMPTS = 2;

export interface WebSocketDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly cluster: (service: string) => Cluster | undefined;
  readonly tunnels: TunnelSet;
  readonly idleTimeoutMs: () => number;
}

type Outcome = 'tunnelled' | 'refused' | 'failed';

/** The handshake fields header hygiene removed (headers.ts strips Upgrade and Connection), put back for the next hop. */
function handshakeHeaders(ex: Exchange): HeaderRecord {
  const req = ex.req as IncomingMessage;
  const out: HeaderRecord = { ...ex.headers, connection: 'Upgrade', upgrade: 'websocket' };
  // A handshake has no body; whatever follows the request is the new protocol's, sent only after the 101.
  delete out['content-length'];
  for (const name in req.headers) {
    const v = req.headers[name];
    if (v !== undefined && name.startsWith('sec-websocket-')) out[name] = v;
  }
  return out;
}

/** Connects to an endpoint of the chosen backend, moving to another one when the connection fails. */
async function connect(ex: Exchange, cluster: Cluster, subset: string): Promise<{ socket: net.Socket; ep: Endpoint } | MeshError> {
  const exclude = new Set<Endpoint>();
  const hashHeader = cluster.hashHeader;
  const hashKey = hashHeader === undefined ? undefined : headerValue((ex.req as IncomingMessage).headers, hashHeader);
  let last: MeshError | undefined;
  for (let i = 0; i < CONNECT_ATTEMPTS; i++) {
    const ep = cluster.pick(subset, hashKey, exclude);
    if (!ep) break;
    exclude.add(ep);
    ex.attempts++;
    ex.upstream = ep.id;
    try {
      const socket = await cluster.dial(ep, 'http/1.1');
      return { socket, ep };
    } catch (err) {
      last = classifyUpstreamError(err, ep);
      // With the error, so a refused connect starts the liveness probes that eject a dead endpoint (cluster.ts).
      cluster.report(ep, false, last);
    }
  }
  const what = subset ? `subset "${subset}" of service "${cluster.name}"` : `service "${cluster.name}"`;
  return last ?? new MeshError('no-healthy-upstream', `no healthy endpoint for ${what}`);
}

/** The 101 as the client gets it: the upstream's fields minus hop-by-hop ones, then the upgrade pair. */
function switchingProtocols(res: IncomingMessage): string {
  let head = 'HTTP/1.1 101 Switching Protocols\r\n';
  const fields = responseHeadersForClient(res.headers);
  for (const name in fields) {
    const v = fields[name];
    for (const one of Array.isArray(v) ? v : [String(v)]) head += `${name}: ${one}\r\n`;
  }
  return `${head}connection: Upgrade\r\nupgrade: websocket\r\n\r\n`;
}

/**
 * Sends the GET upstream on `upstream` and waits for its answer. A 101 for websocket is passed to the client and
 * the two sockets are joined; anything else is relayed as an ordinary response and the connection closed, so bytes
 * the client sent after its request (still unread in its socket) never reach anyone.
 */
function handshake(d: WebSocketDeps, ex: Exchange, upstream: net.Socket, ep: Endpoint, timeoutMs: number, service: string): Promise<Outcome> {
  const client = (ex.req as IncomingMessage).socket;
  const res = ex.res as ServerResponse;
  return new Promise<Outcome>((resolve) => {
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      timer?.cancel();
      client.off('close', onClientClose);
      resolve(o);
    };
    const fail = (err: unknown) => {
      upstream.destroy();
      respondError(ex, classifyUpstreamError(err, ep));
      finish('failed');
    };
    const req = http.request({ method: 'GET', path: ex.path + ex.query, headers: handshakeHeaders(ex), createConnection: () => upstream });
    const onClientClose = () => {
      ex.clientGone = true;
      req.destroy();
      upstream.destroy();
      finish('failed');
    };
    client.once('close', onClientClose);
    const timer = timeoutMs > 0
      ? d.clock.setTimeout(() => fail(new MeshError('upstream-timeout', `upstream ${ex.upstream} did not answer the upgrade within ${timeoutMs}ms`)), timeoutMs)
      : undefined;
    req.on('error', (err) => {
      if (!done) fail(err);
    });
    req.on('response', (answer: IncomingMessage) => {
      if (done) return answer.destroy();
      // Refused (or answered some other way): relay it as a response, never tunnel.
      ex.committed = true;
      const relayed = answer.headers['x-mesh-error'];
      if (typeof relayed === 'string') ex.meshError = relayed;
      res.writeHead(answer.statusCode ?? 502, responseHeadersForClient(answer.headers));
      answer.on('data', (c: Buffer) => (ex.bytesSent += c.length));
      answer.pipe(res);
      answer.once('end', () => upstream.destroy());
      answer.once('error', () => res.destroy());
      timer?.cancel();
      // upgrade.ts detaches the socket on 'finish', after which no 'close' comes: either one ends the relay.
      res.once('finish', () => finish('refused'));
      res.once('close', () => finish('refused'));
    });
    req.on('upgrade', (answer: IncomingMessage, socket: net.Socket, upHead: Buffer) => {
      if (done) return socket.destroy();
      if (!isWebSocketUpgrade(answer)) {
        fail(new MeshError('upstream-reset', `upstream ${ex.upstream} answered 101 without "upgrade: websocket"`));
        return;
      }
      ex.committed = true;
      res.statusCode = 101;
      res.detachSocket(client);
      client.write(switchingProtocols(answer));
      if (upHead.length > 0) client.write(upHead);
      const labels = [ex.direction, service] as const;
      const active = d.telemetry.upgradesActive.labels(...labels);
      const sent = d.telemetry.upgradeBytes.labels(...labels, 'sent');
      const received = d.telemetry.upgradeBytes.labels(...labels, 'received');
      active.inc();
      d.tunnels.start(client, socket, {
        idleTimeoutMs: d.idleTimeoutMs(),
        onSent: (n) => sent.inc(n),
        onReceived: (n) => received.inc(n),
        onClose: (s) => {
          active.dec();
          d.log.debug('websocket_closed', { direction: ex.direction, service, upstream: ex.upstream, sent: s.sent, received: s.received, end: s.end });
        },
      });
      finish('tunnelled');
    });
    req.end();
  });
}

function isWebSocketUpgrade(res: IncomingMessage): boolean {
  return (res.headers.upgrade ?? '').split(',').some((t) => t.trim().toLowerCase() === 'websocket');
}

/**
 * Terminal stage of both upgrade chains (pipeline.ts): the route (outbound) or the local app rule (inbound) has
 * chosen the backend. Resolves once the handshake is over; the tunnel then lives on in `d.tunnels`.
 */
export function websocketStage(d: WebSocketDeps): Handler {
  return async (ex: Exchange): Promise<void> => {
    const backend = ex.backend;
    const cluster = backend && d.cluster(backend.service);
    const service = backend?.service ?? ex.authority;
    const count = (result: Outcome) => d.telemetry.upgrades.labels(ex.direction, service, result).inc();
    if (!backend || !cluster) {
      respondError(ex, new MeshError('no-healthy-upstream', `no cluster for service "${service}"`));
      count('failed');
      return;
    }
    const up = await connect(ex, cluster, backend.subset);
    if (up instanceof MeshError) {
      respondError(ex, up);
      count('failed');
      return;
    }
    if (ex.clientGone || (ex.req as IncomingMessage).socket.destroyed) {
      up.socket.destroy();
      count('failed');
      return;
    }
    const timeoutMs = ex.rule && ex.rule.timeoutMs > 0 ? Math.min(ex.rule.timeoutMs, HANDSHAKE_TIMEOUT_MS) : HANDSHAKE_TIMEOUT_MS;
    const outcome = await handshake(d, ex, up.socket, up.ep, timeoutMs, service);
    // A refusal is the app's answer, not a sick endpoint; only a handshake that failed outright counts against it.
    if (!ex.clientGone) cluster.report(up.ep, outcome !== 'failed');
    count(outcome);
  };
}
