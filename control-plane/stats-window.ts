// One sidecar's stats reports → what its series did inside a window: per-code request counts, per-bucket latency counts
// and Δt between its oldest and newest report there (Prometheus rate() without extrapolation), across counter resets.
import type { SeriesDelta, StatsSeries } from '../api/protocol.js';

/** A report as kept by the control plane: stamped with the control plane's clock on arrival. */
export interface StatsSample {
  /** Control-plane clock, ms. */
  readonly t: number;
  readonly startedUnixMs: number;
  readonly bucketBounds: readonly number[];
  /** By seriesKey(). */
  readonly series: ReadonlyMap<string, StatsSeries>;
}

export const seriesKey = (s: Pick<StatsSeries, 'direction' | 'sourceService' | 'destinationService' | 'route'>): string =>
  `${s.direction}\0${s.sourceService}\0${s.destinationService}\0${s.route}`;

interface Accum {
  labels: StatsSeries;
  codes: Map<number, number>;
  /** Cumulative increments per bound (+Inf last), in the layout of `bounds`. */
  buckets: number[];
  bounds: readonly number[];
  sum: number;
}

const sameBounds = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * How much `cur` grew since `prev`. A counter that went down, a different process (startedUnixMs) or a changed
 * histogram layout means the counters restarted from 0: then all of `cur` is growth, as Prometheus' rate() assumes.
 */
export function seriesIncrease(prev: StatsSeries | undefined, cur: StatsSeries, reset: boolean): { codes: Map<number, number>; buckets: number[]; sum: number } {
  const prevCodes = new Map<number, number>();
  if (prev && !reset) prev.codes.forEach((c, i) => prevCodes.set(c, prev.codeCounts[i] ?? 0));
  let restarted = reset || !prev;
  if (!restarted && prev) {
    if (cur.codes.some((c, i) => (cur.codeCounts[i] ?? 0) < (prevCodes.get(c) ?? 0))) restarted = true;
    else if (prev.codes.some((c) => !cur.codes.includes(c))) restarted = true;
    else if (cur.durationSum < prev.durationSum) restarted = true;
    else if (prev.bucketCounts.length > 0 && (prev.bucketCounts.length !== cur.bucketCounts.length || cur.bucketCounts.some((v, i) => v < prev.bucketCounts[i]))) restarted = true;
  }
  const codes = new Map<number, number>();
  cur.codes.forEach((c, i) => {
    const d = (cur.codeCounts[i] ?? 0) - (restarted ? 0 : prevCodes.get(c) ?? 0);
    if (d > 0) codes.set(c, d);
  });
  const base = restarted || !prev || prev.bucketCounts.length === 0 ? undefined : prev.bucketCounts;
  const buckets = cur.bucketCounts.map((v, i) => v - (base ? base[i] : 0));
  const sum = cur.durationSum - (restarted || !prev ? 0 : prev.durationSum);
  return { codes, buckets, sum: Math.max(0, sum) };
}

/**
 * What the sidecar did between its oldest and newest sample with from ≤ t ≤ to. Fewer than two samples there: nothing.
 * Series that did nothing are left out. Bucket counts come back per bucket (not cumulative), +Inf last.
 */
export function windowDeltas(sidecar: string, samples: readonly StatsSample[], from: number, to: number): SeriesDelta[] {
  const inside = samples.filter((s) => s.t >= from && s.t <= to);
  if (inside.length < 2) return [];
  const seconds = (inside[inside.length - 1].t - inside[0].t) / 1000;
  if (seconds <= 0) return [];
  const acc = new Map<string, Accum>();
  for (let i = 1; i < inside.length; i++) {
    const a = inside[i - 1];
    const b = inside[i];
    const reset = a.startedUnixMs !== b.startedUnixMs || !sameBounds(a.bucketBounds, b.bucketBounds);
    for (const [key, cur] of b.series) {
      const inc = seriesIncrease(a.series.get(key), cur, reset);
      let x = acc.get(key);
      if (!x) {
        x = { labels: cur, codes: new Map(), buckets: [], bounds: b.bucketBounds, sum: 0 };
        acc.set(key, x);
      }
      for (const [c, n] of inc.codes) x.codes.set(c, (x.codes.get(c) ?? 0) + n);
      if (inc.buckets.length > 0) {
        if (x.buckets.length !== inc.buckets.length || !sameBounds(x.bounds, b.bucketBounds)) {
          // First latency figures, or the layout changed inside the window (a sidecar upgrade): keep the newer layout's only.
          x.buckets = inc.buckets.map(() => 0);
          x.bounds = b.bucketBounds;
        }
        inc.buckets.forEach((v, j) => (x.buckets[j] += v));
      }
      x.sum += inc.sum;
    }
  }
  const out: SeriesDelta[] = [];
  for (const x of acc.values()) {
    const codes = [...x.codes.keys()].sort((p, q) => p - q);
    const total = codes.reduce((s, c) => s + x.codes.get(c)!, 0);
    const observed = x.buckets.length ? x.buckets[x.buckets.length - 1] : 0;
    if (total === 0 && observed <= 0) continue;
    out.push({
      sidecar, direction: x.labels.direction, sourceService: x.labels.sourceService, destinationService: x.labels.destinationService, route: x.labels.route,
      seconds, codes, codeCounts: codes.map((c) => x.codes.get(c)!), bucketCounts: nonCumulative(x.buckets), durationSum: x.sum, bucketBounds: [...x.bounds],
    });
  }
  return out;
}

/** Cumulative (≤ bound) → per bucket; clamped at 0 so a torn read can never produce negative counts. */
export function nonCumulative(cum: readonly number[]): number[] {
  return cum.map((v, i) => Math.max(0, v - (i === 0 ? 0 : cum[i - 1])));
}
