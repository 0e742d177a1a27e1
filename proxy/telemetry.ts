// Every metric the sidecar exports (DESIGN.md §5) plus prom-client's process metrics, declared once with fixed label sets; label children cached per route.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Counter as CounterT } from 'prom-client';

/**
 * Latency buckets in seconds, 0.1 ms … 30 s: the low end resolves a sidecar hop on loopback (a few hundred µs),
 * the high end sits above the default 15 s route timeout so timed-out requests land in a finite bucket.
 */
export const LATENCY_BUCKETS: readonly number[] = Object.freeze([
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
]);

const EVENT_LOOP_SAMPLE_MS = 50;
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export interface TelemetryOptions {
  /**
   * prom-client's default process metrics (RSS, CPU, open fds, heap, event-loop lag, GC) on this registry; default true.
   * No per-request work: they are read at scrape time, plus one event-loop-delay monitor and one GC observer.
   */
  readonly processMetrics?: boolean;
}

export interface RouteStats {
  /** Count one finished request and its duration; `grpcStatus` is '' for non-gRPC requests. */
  record(status: number, seconds: number, grpcStatus?: string): void;
}

export class Telemetry {
  readonly registry = new Registry();
  readonly requests: Counter<'direction' | 'source_service' | 'destination_service' | 'route' | 'code' | 'grpc_status'>;
  readonly duration: Histogram<'direction' | 'source_service' | 'destination_service' | 'route'>;
  readonly retries: Counter<'destination_service' | 'reason'>;
  readonly ejections: Counter<'destination_service'>;
  readonly accessDenied: Counter<'destination_service' | 'policy'>;
  readonly rateLimited: Counter<'destination_service' | 'policy'>;
  readonly overloadShed: Counter<'direction'>;
  readonly tlsHandshakeErrors: Counter<'direction' | 'reason'>;
  readonly configUpdates: Counter<'result'>;
  readonly certificateExpiry: Gauge;
  /** WebSocket handshakes by outcome (tunnelled, refused by the upstream, failed) and the tunnels open now (upgrade.ts). */
  readonly upgrades: Counter<'direction' | 'destination_service' | 'result'>;
  readonly upgradesActive: Gauge<'direction' | 'destination_service'>;
  /** `protocol: tcp` connections by outcome, open now, and their bytes (tcp-outbound.ts, tcp-inbound.ts). */
  readonly tcpConnections: Counter<'direction' | 'destination_service' | 'result'>;
  readonly tcpConnectionsActive: Gauge<'direction' | 'destination_service'>;
  /** flow="sent": toward the destination service; flow="received": from it. WebSocket tunnels count in mesh_upgrade_bytes_total. */
  readonly tcpBytes: Counter<'direction' | 'destination_service' | 'flow'>;
  readonly upgradeBytes: Counter<'direction' | 'destination_service' | 'flow'>;
  private readonly routeStatsCache = new Map<string, RouteStats>();
  private readonly retryChildren = new Map<string, CounterT.Internal>();

  constructor(options: TelemetryOptions = {}) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) {
      // The event-loop-delay monitor wakes the process every `precision` ms even when idle: at prom-client's 10 ms an
      // idle sidecar used ~0.5 % of a core against ~0.17 % without process metrics; 50 ms brings it to ~0.25 % and still
      // takes 20 lag samples a second.
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
      // Gauges named *_total break the Prometheus naming rule (promtool check metrics fails on them); each is just
      // the sum of its labelled sibling (sum(nodejs_active_handles) and so on), so nothing is lost.
      for (const name of GAUGES_NAMED_TOTAL) this.registry.removeSingleMetric(name);
    }
    this.requests = new Counter({
      name: 'mesh_requests_total', help: 'Requests handled by the sidecar.', registers,
      labelNames: ['direction', 'source_service', 'destination_service', 'route', 'code', 'grpc_status'],
    });
    this.duration = new Histogram({
      name: 'mesh_request_duration_seconds', help: 'Request duration from request headers to response end.', registers,
      labelNames: ['direction', 'source_service', 'destination_service', 'route'], buckets: [...LATENCY_BUCKETS],
    });
    this.retries = new Counter({ name: 'mesh_retries_total', help: 'Retries sent upstream.', registers, labelNames: ['destination_service', 'reason'] });
    this.ejections = new Counter({ name: 'mesh_endpoint_ejections_total', help: 'Endpoints ejected by outlier detection.', registers, labelNames: ['destination_service'] });
    this.accessDenied = new Counter({ name: 'mesh_access_denied_total', help: 'Requests denied by an AccessPolicy.', registers, labelNames: ['destination_service', 'policy'] });
    this.rateLimited = new Counter({ name: 'mesh_rate_limited_total', help: 'Requests refused by a rate limit.', registers, labelNames: ['destination_service', 'policy'] });
    this.overloadShed = new Counter({ name: 'mesh_overload_shed_total', help: 'Requests refused with 503 overloaded because the event loop fell behind.', registers, labelNames: ['direction'] });
    this.tlsHandshakeErrors = new Counter({ name: 'mesh_tls_handshake_errors_total', help: 'Failed TLS handshakes.', registers, labelNames: ['direction', 'reason'] });
    this.configUpdates = new Counter({ name: 'mesh_config_updates_total', help: 'Config snapshots applied (ack) or refused (nack).', registers, labelNames: ['result'] });
    this.certificateExpiry = new Gauge({ name: 'mesh_certificate_expiry_timestamp_seconds', help: 'Expiry of the workload certificate, unix seconds.', registers });
    const tunnel = ['direction', 'destination_service'] as const;
    this.upgrades = new Counter({ name: 'mesh_upgrades_total', help: 'WebSocket upgrade requests by result (tunnelled, refused, failed).', registers, labelNames: [...tunnel, 'result'] });
    this.upgradesActive = new Gauge({ name: 'mesh_upgrades_active', help: 'WebSocket tunnels open now.', registers, labelNames: [...tunnel] });
    this.upgradeBytes = new Counter({ name: 'mesh_upgrade_bytes_total', help: 'Bytes through WebSocket tunnels (sent: toward the destination).', registers, labelNames: [...tunnel, 'flow'] });
    this.tcpConnections = new Counter({ name: 'mesh_tcp_connections_total', help: 'TCP connections by result (ok, denied, connect-failed, no-healthy-upstream).', registers, labelNames: [...tunnel, 'result'] });
    this.tcpConnectionsActive = new Gauge({ name: 'mesh_tcp_connections_active', help: 'TCP connections open now.', registers, labelNames: [...tunnel] });
    this.tcpBytes = new Counter({ name: 'mesh_tcp_bytes_total', help: 'Bytes through TCP connections (sent: toward the destination).', registers, labelNames: [...tunnel, 'flow'] });
    // Both outcomes exported from the start, so rate() and alerts on nack see a 0 rather than no series.
    this.configUpdates.labels('ack').inc(0);
    this.configUpdates.labels('nack').inc(0);
  }

  /** Label children for one route, made once per snapshot (and reused across snapshots) so requests only increment. */
  routeStats(direction: string, source: string, destination: string, route: string): RouteStats {
    const key = `${direction}\0${source}\0${destination}\0${route}`;
    let stats = this.routeStatsCache.get(key);
    if (!stats) {
      const hist = this.duration.labels(direction, source, destination, route);
      // status → grpc-status ('' for non-gRPC) → counter child, so a request only looks up and increments.
      const byCode = new Map<number, Map<string, CounterT.Internal>>();
      const requests = this.requests;
      stats = {
        record(status: number, seconds: number, grpcStatus = ''): void {
          let byGrpc = byCode.get(status);
          if (!byGrpc) byCode.set(status, (byGrpc = new Map()));
          let c = byGrpc.get(grpcStatus);
          if (!c) {
            c = requests.labels(direction, source, destination, route, String(status), grpcStatus);
            byGrpc.set(grpcStatus, c);
          }
          c.inc();
          hist.observe(seconds);
        },
      };
      this.routeStatsCache.set(key, stats);
    }
    return stats;
  }

  retried(destination: string, reason: string): void {
    const key = `${destination}\0${reason}`;
    let c = this.retryChildren.get(key);
    if (!c) {
      c = this.retries.labels(destination, reason);
      this.retryChildren.set(key, c);
    }
    c.inc();
  }
}
