// Outbound `protocol: tcp` services (`mesh sidecar --tcp SERVICE=HOST:PORT`): one loopback listener per service; each connection picks an endpoint, dials it (mTLS, ALPN trellis-tcp/1) and becomes a tunnel.
import net from 'node:net';
import type { Clock } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { Cluster } from './cluster.js';
import type { Endpoint } from './endpoint.js';
import type { Telemetry } from './telemetry.js';
import { TCP_ALPN } from './tls.js';
import { classifyUpstreamError } from './pool.js';
import type { TunnelSet } from './tunnel.js';

/** Endpoints tried per connection: the first and up to two others when connecting fails (nothing was sent yet). */
export const TCP_CONNECT_ATTEMPTS = 3;
/** A failed connect is fed to EWMA as at least this slow (as balance.ts does for requests). */
const FAILURE_PENALTY_MS = 1_000;

export interface TcpOutboundDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly cluster: (service: string) => Cluster | undefined;
  readonly tunnels: TunnelSet;
  readonly idleTimeoutMs: () => number;
}

/** `SERVICE=HOST:PORT`: where the app reaches one TCP service. */
export interface TcpListenerSpec {
  readonly service: string;
  readonly listen: { readonly host: string; readonly port: number };
}

type Result = 'ok' | 'connect-failed' | 'no-healthy-upstream' | 'not-tcp';

/**
 * Dials endpoints of `cluster` until one answers, at most TCP_CONNECT_ATTEMPTS, each bounded by the cluster's connect
 * timeout. Connect times feed the endpoint's latency estimate and failures its outlier detector, as requests do.
 */
async function dialSome(cluster: Cluster, d: TcpOutboundDeps, client: net.Socket): Promise<{ socket: net.Socket; ep: Endpoint } | Result> {
  const exclude = new Set<Endpoint>();
  for (let i = 0; i < TCP_CONNECT_ATTEMPTS && !client.destroyed; i++) {
    const ep = cluster.pick('', undefined, exclude);
    if (!ep) break;
    exclude.add(ep);
    const t0 = d.clock.now();
    // Counted while dialing too, so a burst of new connections spreads instead of all picking the same idle endpoint.
    ep.inflight++;
    try {
      const socket = await cluster.dial(ep, TCP_ALPN);
      ep.observe(d.clock.now() - t0, d.clock.now());
      cluster.report(ep, true);
      return { socket, ep };
    } catch (err) {
      ep.inflight--;
      ep.observe(Math.max(d.clock.now() - t0, FAILURE_PENALTY_MS), d.clock.now());
      // With the error, so a refused connect starts the liveness probes that eject a dead endpoint (cluster.ts).
      cluster.report(ep, false, classifyUpstreamError(err, ep));
      d.log.warn('tcp_connect_failed', { service: cluster.name, endpoint: ep.id, error: (err as Error).message });
    }
  }
  return exclude.size > 0 ? 'connect-failed' : 'no-healthy-upstream';
}

async function serveConnection(service: string, client: net.Socket, d: TcpOutboundDeps): Promise<void> {
  client.on('error', () => client.destroy());
  const count = (result: Result) => d.telemetry.tcpConnections.labels('outbound', service, result).inc();
  const cluster = d.cluster(service);
  if (cluster && cluster.protocol !== 'tcp') {
    // The callee's sidecar would refuse it anyway (tcp-inbound.ts); say why here, where the operator looks.
    d.log.warn('tcp_refused', { service, reason: `service "${service}" is protocol: ${cluster.protocol}, not tcp` });
    count('not-tcp');
    client.destroy();
    return;
  }
  const up = cluster ? await dialSome(cluster, d, client) : 'no-healthy-upstream';
  if (typeof up === 'string') {
    count(up);
    client.destroy();
    return;
  }
  if (client.destroyed) {
    up.ep.inflight--;
    up.socket.destroy();
    return;
  }
  count('ok');
  const active = d.telemetry.tcpConnectionsActive.labels('outbound', service);
  const sent = d.telemetry.tcpBytes.labels('outbound', service, 'sent');
  const received = d.telemetry.tcpBytes.labels('outbound', service, 'received');
  active.inc();
  d.tunnels.start(client, up.socket, {
    idleTimeoutMs: d.idleTimeoutMs(),
    onSent: (n) => sent.inc(n),
    onReceived: (n) => received.inc(n),
    onClose: (s) => {
      up.ep.inflight--;
      active.dec();
      d.log.debug('tcp_closed', { direction: 'outbound', service, endpoint: up.ep.id, sent: s.sent, received: s.received, end: s.end });
    },
  });
}

/**
 * The listener for one TCP service. Balancing is per connection: the cluster's picker (its policy, ejected endpoints
 * left out) chooses once, and every byte of the connection goes there. Accepted sockets stay paused until the
 * upstream is connected, so nothing is read that could not be delivered.
 */
export function createTcpListener(service: string, d: TcpOutboundDeps): net.Server {
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    serveConnection(service, socket, d).catch((err: unknown) => {
      d.log.error('tcp_failed', { service, error: err });
      socket.destroy();
    });
  });
  return server;
}
