// Sidecar → control plane golden metrics: every --stats-interval, the request counters and latency histogram are read from
// the prom-client registry (metric.get(), off the request path) and sent, cumulative and compact, on the discovery stream.
import type { Clock, Timer } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { StatsReport, StatsSeries } from '../api/protocol.js';
import type { Telemetry } from './telemetry.js';

/** One value as prom-client's `metric.get()` returns it. */
export interface MetricSample {
  readonly value: number;
  readonly labels: Readonly<Partial<Record<string, string | number>>>;
  /** Histograms: `<name>_bucket` (with `le`), `<name>_sum`, `<name>_count`. */
  readonly metricName?: string;
}

/** A report larger than this would be a label explosion; the first series (by key) are kept and the rest dropped. */
export const MAX_SERIES = 5_000;

const SERIES_LABELS = ['direction', 'source_service', 'destination_service', 'route'] as const;

interface Building {
  series: StatsSeries;
  codes: Map<number, number>;
  buckets: Map<number, number>;
  count: number;
}

const str = (v: string | number | undefined): string => (v === undefined ? '' : String(v));

/**
 * Builds the report from `mesh_requests_total` and `mesh_request_duration_seconds` values. Pure: the same values give
 * the same report. Series with no request and no observation are left out (the control plane reads absent as 0).
 */
export function buildStatsReport(requests: readonly MetricSample[], duration: readonly MetricSample[], startedUnixMs: number): StatsReport {
  const byKey = new Map<string, Building>();
  const get = (labels: MetricSample['labels']): Building => {
    const key = SERIES_LABELS.map((l) => str(labels[l])).join('\0');
    let b = byKey.get(key);
    if (!b) {
      b = {
        series: {
          direction: str(labels.direction), sourceService: str(labels.source_service), destinationService: str(labels.destination_service), route: str(labels.route),
          codes: [], codeCounts: [], bucketCounts: [], durationSum: 0,
        },
        codes: new Map(), buckets: new Map(), count: 0,
      };
      byKey.set(key, b);
    }
    return b;
  };
  for (const s of requests) {
    const code = Number(s.labels.code);
    if (!Number.isInteger(code) || code < 0) continue;
    const b = get(s.labels);
    b.codes.set(code, (b.codes.get(code) ?? 0) + s.value);
  }
  const bounds = new Set<number>();
  for (const s of duration) {
    const name = s.metricName ?? '';
    if (name.endsWith('_bucket')) {
      const le = s.labels.le;
      if (le === '+Inf' || le === undefined) continue;
      const bound = Number(le);
      if (!Number.isFinite(bound)) continue;
      bounds.add(bound);
      get(s.labels).buckets.set(bound, s.value);
    } else if (name.endsWith('_sum')) {
      get(s.labels).series.durationSum = s.value;
    } else if (name.endsWith('_count')) {
      get(s.labels).count = s.value;
    }
  }
  const bucketBounds = [...bounds].sort((a, b) => a - b);
  const series: StatsSeries[] = [];
  for (const key of [...byKey.keys()].sort()) {
    const b = byKey.get(key)!;
    const total = [...b.codes.values()].reduce((a, v) => a + v, 0);
    if (total === 0 && b.count === 0) continue;
    const codes = [...b.codes.keys()].sort((x, y) => x - y);
    b.series.codes = codes;
    b.series.codeCounts = codes.map((c) => b.codes.get(c)!);
    // Cumulative, like the exposition: bound i holds observations ≤ bucketBounds[i]; the last entry (+Inf) is the count.
    b.series.bucketCounts = b.count === 0 ? [] : [...bucketBounds.map((bound) => b.buckets.get(bound) ?? 0), b.count];
    series.push(b.series);
    if (series.length >= MAX_SERIES) break;
  }
  return { startedUnixMs, bucketBounds, series };
}

/** Reads the sidecar's own registry into a report. */
export async function readStatsReport(telemetry: Telemetry, startedUnixMs: number): Promise<StatsReport> {
  const [requests, duration] = await Promise.all([telemetry.requests.get(), telemetry.duration.get()]);
  return buildStatsReport(requests.values, duration.values, startedUnixMs);
}

export interface StatsReporterDeps {
  readonly telemetry: Telemetry;
  readonly clock: Clock;
  readonly log: Logger;
  readonly intervalMs: number;
  /** When the counters started: the control plane sees a different value as a counter reset. */
  readonly startedUnixMs: number;
  /** True while the discovery stream is up; reports are not queued while it is down (the next one carries everything). */
  readonly connected: () => boolean;
  readonly send: (report: StatsReport) => void;
}

/** Sends a report every intervalMs while connected; stop() ends it. */
export function startStatsReporter(d: StatsReporterDeps): { stop(): void } {
  let timer: Timer | undefined;
  let stopped = false;
  const tick = async (): Promise<void> => {
    if (d.connected()) {
      try {
        const report = await readStatsReport(d.telemetry, d.startedUnixMs);
        if (!stopped && d.connected()) d.send(report);
      } catch (err) {
        d.log.warn('stats_report_failed', { error: err });
      }
    }
    if (!stopped) timer = d.clock.setTimeout(() => void tick(), d.intervalMs);
  };
  timer = d.clock.setTimeout(() => void tick(), d.intervalMs);
  return {
    stop() {
      stopped = true;
      timer?.cancel();
    },
  };
}
