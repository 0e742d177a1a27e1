// Every metric the control plane exports on --http /metrics, declared once: push and ACK/NACK counts, push latency,
// connected sidecars, store revision and health, plus prom-client's process metrics.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Snapshot send → ACK, seconds: from a loopback push (ms) to a fleet-wide push under load (seconds). */
const PUSH_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * prom-client gauges named *_total, which `promtool check metrics` rejects (a gauge must not look like a counter); each is
 * the sum of a labelled sibling (nodejs_active_handles etc.), so nothing is lost.
 */
const GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** What the gauges read at scrape time (no bookkeeping on the push path). */
export interface ControlPlaneGauges {
  readonly connectedSidecars: () => number;
  readonly storeRevision: () => number;
  readonly storeHealthy: () => boolean;
}

export class ControlPlaneTelemetry {
  readonly registry = new Registry();
  private readonly pushes: Counter;
  private readonly acks: Counter;
  private readonly nacks: Counter;
  private readonly pushLatency: Histogram;
  readonly statsReports: Counter<'result'>;

  constructor(gauges: ControlPlaneGauges, options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics ?? true) {
      // 50 ms event-loop sampling, as the sidecar does: prom-client's 10 ms wakes an idle process 100 times a second.
      collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 50 });
      for (const name of GAUGES_NAMED_TOTAL) this.registry.removeSingleMetric(name);
    }
    this.pushes = new Counter({ name: 'mesh_control_plane_pushes_total', help: 'Snapshots sent to sidecars.', registers });
    this.acks = new Counter({ name: 'mesh_control_plane_acks_total', help: 'Snapshots acknowledged (ACK) by sidecars.', registers });
    this.nacks = new Counter({ name: 'mesh_control_plane_nacks_total', help: 'Snapshots refused (NACK) by sidecars.', registers });
    this.pushLatency = new Histogram({
      name: 'mesh_control_plane_push_latency_seconds', help: 'Time from sending a snapshot to its ACK.', registers, buckets: PUSH_BUCKETS,
    });
    this.statsReports = new Counter({
      name: 'mesh_control_plane_stats_reports_total', help: 'Sidecar stats reports received (accepted or malformed).', registers, labelNames: ['result'],
    });
    this.statsReports.labels('accepted').inc(0);
    this.statsReports.labels('malformed').inc(0);
    new Gauge({
      name: 'mesh_control_plane_connected_sidecars', help: 'Sidecars with an open discovery stream to this replica.', registers,
      collect() { this.set(gauges.connectedSidecars()); },
    });
    new Gauge({
      name: 'mesh_control_plane_store_revision', help: 'Store revision this replica has seen (snapshot versions derive from it).', registers,
      collect() { this.set(gauges.storeRevision()); },
    });
    new Gauge({
      name: 'mesh_control_plane_store_healthy', help: '1 while the store answers, 0 while degraded (serving the last known revision).', registers,
      collect() { this.set(gauges.storeHealthy() ? 1 : 0); },
    });
  }

  pushed(): void {
    this.pushes.inc();
  }

  acked(seconds: number | undefined): void {
    this.acks.inc();
    if (seconds !== undefined) this.pushLatency.observe(seconds);
  }

  nacked(): void {
    this.nacks.inc();
  }
}
