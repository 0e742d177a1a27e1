// The sidecar's tunnels: the WebSocket stage, the outbound TCP listeners and the inbound TCP handler, sharing one TunnelSet that drains with the sidecar.
import type net from 'node:net';
import type tls from 'node:tls';
import type { Clock } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { AccessTable } from './authz.js';
import type { Cluster } from './cluster.js';
import type { Peer } from './exchange.js';
import type { TunnelStage } from './pipeline.js';
import { tcpInbound } from './tcp-inbound.js';
import { createTcpListener, type TcpListenerSpec } from './tcp-outbound.js';
import type { Telemetry } from './telemetry.js';
import { TunnelSet } from './tunnel.js';
import { websocketStage } from './websocket.js';

export interface SidecarTunnelDeps {
  readonly clock: Clock;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  /** This sidecar's service. */
  readonly service: string;
  readonly cluster: (service: string) => Cluster | undefined;
  readonly appCluster: () => Cluster | undefined;
  readonly access: () => AccessTable;
  /** No bytes either way for this long closes a tunnel (WebSocket or TCP). */
  readonly idleTimeoutMs: number;
  /** `--tcp`: one outbound listener per TCP service. */
  readonly tcp: readonly TcpListenerSpec[];
}

export interface SidecarTunnels {
  /** The terminal stage of both WebSocket chains (pipeline.ts). */
  readonly websocket: TunnelStage;
  /** For tls.ts: verified connections that chose ALPN trellis-tcp/1. */
  readonly tcpInbound: (socket: tls.TLSSocket, peer: Peer) => void;
  /** Binds the TCP listeners; service → bound address. */
  listen(bind: (server: net.Server, at: TcpListenerSpec['listen']) => Promise<string>): Promise<Record<string, string>>;
  /** Stops accepting TCP connections; resolves when the listeners are closed (open tunnels are not). */
  closeListeners(): Promise<void>;
  /** Resolves when no tunnel is open (a drain waits for this, bounded by its timeout). */
  idle(): Promise<void>;
  readonly open: number;
  /** Closes every open tunnel (drain deadline). */
  closeAll(): void;
}

export function createSidecarTunnels(d: SidecarTunnelDeps): SidecarTunnels {
  const tunnels = new TunnelSet();
  const idleTimeoutMs = () => d.idleTimeoutMs;
  const common = { clock: d.clock, log: d.log, telemetry: d.telemetry, tunnels, idleTimeoutMs };
  const listeners = d.tcp.map((spec) => ({ spec, server: createTcpListener(spec.service, { ...common, cluster: d.cluster }) }));
  return {
    websocket: (cluster) => websocketStage({ ...common, cluster }),
    tcpInbound: tcpInbound({ ...common, service: d.service, access: d.access, appCluster: d.appCluster }),
    async listen(bind) {
      const bound: Record<string, string> = {};
      for (const l of listeners) bound[l.spec.service] = await bind(l.server, l.spec.listen);
      return bound;
    },
    closeListeners: () => Promise.all(listeners.map((l) => new Promise((r) => l.server.close(r)))).then(() => undefined),
    idle: () => tunnels.idle(),
    get open() {
      return tunnels.size;
    },
    closeAll: () => tunnels.closeAll(),
  };
}
