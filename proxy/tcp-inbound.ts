// Inbound `protocol: tcp` connections (ALPN trellis-tcp/1, handed over by tls.ts): AccessPolicy by caller identity only, then a tunnel to the local app.
import type tls from 'node:tls';
import type { Logger } from '../api/log.js';
import { authorizeConnection, type AccessTable } from './authz.js';
import type { Cluster } from './cluster.js';
import type { Peer } from './exchange.js';
import type { Telemetry } from './telemetry.js';
import { TCP_ALPN } from './tls.js';
import type { TunnelSet } from './tunnel.js';

export interface TcpInboundDeps {
  /** This sidecar's service. */
  readonly service: string;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly access: () => AccessTable;
  /** The local app; undefined before the first config. */
  readonly appCluster: () => Cluster | undefined;
  readonly tunnels: TunnelSet;
  readonly idleTimeoutMs: () => number;
}

type Result = 'ok' | 'denied' | 'not-tcp' | 'connect-failed';

/**
 * Returns the handler tls.ts calls for each verified connection that chose TCP_ALPN. Refusals are made at the TCP
 * level (the connection is closed, nothing is read from it), since there is no protocol to answer in. Only a
 * service declared `protocol: tcp` takes raw connections: for an HTTP service this path would skip every
 * per-request policy (paths, rate limit, XFCC).
 */
export function tcpInbound(d: TcpInboundDeps): (socket: tls.TLSSocket, peer: Peer) => void {
  const count = (result: Result) => d.telemetry.tcpConnections.labels('inbound', d.service, result).inc();
  const refuse = (socket: tls.TLSSocket, result: Result, detail: Record<string, unknown>) => {
    count(result);
    d.log.info('tcp_refused', { service: d.service, result, ...detail });
    socket.destroy();
  };
  return (socket, peer) => {
    socket.on('error', () => socket.destroy());
    const app = d.appCluster();
    if (!app) {
      refuse(socket, 'connect-failed', { caller: peer.uri, reason: 'no config yet' });
      return;
    }
    if (app.protocol !== 'tcp') {
      refuse(socket, 'not-tcp', { caller: peer.uri, reason: `service "${d.service}" is not protocol: tcp` });
      return;
    }
    const decision = authorizeConnection(d.access(), peer);
    if (!decision.allowed) {
      d.telemetry.accessDenied.labels(d.service, decision.policy).inc();
      refuse(socket, 'denied', { caller: peer.uri, policy: decision.policy, reason: decision.reason });
      return;
    }
    const ep = app.pick('', undefined, undefined);
    if (!ep) {
      refuse(socket, 'connect-failed', { caller: peer.uri, reason: 'no app endpoint' });
      return;
    }
    app.dial(ep, TCP_ALPN).then((upstream) => {
      if (socket.destroyed) {
        upstream.destroy();
        return;
      }
      count('ok');
      const active = d.telemetry.tcpConnectionsActive.labels('inbound', d.service);
      const sent = d.telemetry.tcpBytes.labels('inbound', d.service, 'sent');
      const received = d.telemetry.tcpBytes.labels('inbound', d.service, 'received');
      active.inc();
      d.tunnels.start(socket, upstream, {
        idleTimeoutMs: d.idleTimeoutMs(),
        onSent: (n) => sent.inc(n),
        onReceived: (n) => received.inc(n),
        onClose: (s) => {
          active.dec();
          d.log.debug('tcp_closed', { direction: 'inbound', service: d.service, caller: peer.uri, sent: s.sent, received: s.received, end: s.end });
        },
      });
    }, (err: unknown) => refuse(socket, 'connect-failed', { caller: peer.uri, app: ep.id, error: (err as Error).message }));
  };
}
