// The stats reports of the sidecars streaming to this replica: time-stamped cumulative samples kept for `retentionMs`
// (bounded), forgotten a retention after their sidecar left, and cut into window deltas for the Stat RPC.
import { systemClock, type Clock } from '../api/clock.js';
import type { SeriesDelta, StatsReport, StatsSeries } from '../api/protocol.js';
import { seriesKey, windowDeltas, type StatsSample } from './stats-window.js';

/** `mesh stat --window` may ask for up to this much history. */
export const STATS_RETENTION_MS = 5 * 60_000;
/** Per sidecar: 5 min of reports at 100 ms (the smallest --stats-interval) would be 3,000; a sidecar reporting faster loses old ones. */
const MAX_SAMPLES = 3_100;
/** Per report: anything beyond is a label explosion, not golden metrics. */
const MAX_SERIES = 5_000;
/** Latency layouts larger than this are refused (a sidecar's has ~20 buckets). */
const MAX_BOUNDS = 100;

interface SidecarStats {
  samples: StatsSample[];
  /** Open streams of this sidecar on this replica (a quick reconnect overlaps the old stream's close). */
  streams: number;
  /** Clock time its last stream closed; forgotten a retention later. */
  goneAt: number | undefined;
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** The parts of a report the window arithmetic can trust; malformed series are dropped, not guessed at. */
export function sanitizeReport(r: StatsReport): { bounds: number[]; series: Map<string, StatsSeries> } | undefined {
  const bounds = Array.isArray(r.bucketBounds) ? r.bucketBounds : [];
  if (bounds.length > MAX_BOUNDS || !bounds.every((b, i) => Number.isFinite(b) && (i === 0 || b > bounds[i - 1]))) return undefined;
  const series = new Map<string, StatsSeries>();
  for (const s of r.series ?? []) {
    if (series.size >= MAX_SERIES) break;
    const codes = s.codes ?? [];
    const counts = s.codeCounts ?? [];
    const buckets = s.bucketCounts ?? [];
    if (codes.length !== counts.length || !counts.every(finite) || !codes.every((c) => Number.isInteger(c) && c >= 0 && c < 1000)) continue;
    if (buckets.length !== 0 && (buckets.length !== bounds.length + 1 || !buckets.every(finite))) continue;
    if (!finite(s.durationSum ?? 0)) continue;
    const clean: StatsSeries = {
      direction: String(s.direction ?? ''), sourceService: String(s.sourceService ?? ''), destinationService: String(s.destinationService ?? ''), route: String(s.route ?? ''),
      codes: [...codes], codeCounts: [...counts], bucketCounts: [...buckets], durationSum: s.durationSum ?? 0,
    };
    series.set(seriesKey(clean), clean);
  }
  return { bounds: [...bounds], series };
}

export class StatsStore {
  private readonly sidecars = new Map<string, SidecarStats>();
  private lastSweep = -Infinity;

  constructor(private readonly clock: Clock = systemClock, private readonly retentionMs = STATS_RETENTION_MS) {}

  /** A stream of `sidecar` (namespace/service/instance) opened. */
  connected(sidecar: string): void {
    const s = this.entry(sidecar);
    s.streams++;
    s.goneAt = undefined;
  }

  /** A stream of `sidecar` closed; its samples stay a retention (a sidecar that reconnects elsewhere still counts). */
  disconnected(sidecar: string): void {
    const s = this.sidecars.get(sidecar);
    if (!s) return;
    s.streams = Math.max(0, s.streams - 1);
    if (s.streams > 0) return;
    // Nothing reported (an old sidecar, a simulated one in the push bench): nothing worth keeping.
    if (s.samples.length === 0) this.sidecars.delete(sidecar);
    else s.goneAt = this.clock.now();
  }

  /** Keeps one report; false when it was malformed as a whole. */
  record(sidecar: string, report: StatsReport): boolean {
    const clean = sanitizeReport(report);
    if (!clean) return false;
    const now = this.clock.now();
    const s = this.entry(sidecar);
    s.samples.push({ t: now, startedUnixMs: Number(report.startedUnixMs) || 0, bucketBounds: clean.bounds, series: clean.series });
    this.trim(s, now);
    this.sweep(now);
    return true;
  }

  /** Every sidecar's series deltas over the last `windowMs`. */
  deltas(windowMs: number): SeriesDelta[] {
    const now = this.clock.now();
    this.lastSweep = -Infinity;
    this.sweep(now);
    const out: SeriesDelta[] = [];
    for (const [sidecar, s] of this.sidecars) {
      this.trim(s, now);
      out.push(...windowDeltas(sidecar, s.samples, now - windowMs, now));
    }
    return out;
  }

  /**
   * Sidecars with at least two reports in the last `windowMs`: those whose figures the window covers, idle or not
   * (a sidecar that served nothing sends no series, so counting the deltas' sidecars missed it).
   */
  reporting(windowMs: number): number {
    const from = this.clock.now() - windowMs;
    let n = 0;
    for (const s of this.sidecars.values()) {
      let inside = 0;
      for (let i = s.samples.length - 1; i >= 0 && s.samples[i].t >= from && inside < 2; i--) inside++;
      if (inside >= 2) n++;
    }
    return n;
  }

  /** Sidecars with samples held (for tests and the store's own bound). */
  get size(): number {
    return this.sidecars.size;
  }

  private entry(sidecar: string): SidecarStats {
    let s = this.sidecars.get(sidecar);
    if (!s) this.sidecars.set(sidecar, (s = { samples: [], streams: 0, goneAt: undefined }));
    return s;
  }

  /** Drops this sidecar's samples older than the retention (time order: cheap), and keeps at most MAX_SAMPLES. */
  private trim(s: SidecarStats, now: number): void {
    const oldest = now - this.retentionMs;
    let drop = 0;
    while (drop < s.samples.length && s.samples[drop].t < oldest) drop++;
    if (s.samples.length - drop > MAX_SAMPLES) drop = s.samples.length - MAX_SAMPLES;
    if (drop > 0) s.samples.splice(0, drop);
  }

  /** Forgets sidecars gone for longer than the retention; at most once a second, so a report costs O(1), not O(sidecars). */
  private sweep(now: number): void {
    if (now - this.lastSweep < 1_000) return;
    this.lastSweep = now;
    for (const [key, s] of this.sidecars) {
      if (s.goneAt !== undefined && s.goneAt < now - this.retentionMs) this.sidecars.delete(key);
    }
  }
}
