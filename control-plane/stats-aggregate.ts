// Window deltas from every replica → golden metrics per service and route: deltas of one sidecar merged first (counts and
// seconds add up), then requests/s, success rate (non-5xx / all) and p50/p95/p99 from the merged latency buckets.
import type { LatencyMs, RouteStat, SeriesDelta, ServiceStat } from '../api/protocol.js';
import { seriesKey } from './stats-window.js';

/** One sidecar's window, merged across the replicas that held part of it. */
export interface SidecarWindow {
  readonly sidecar: string;
  /** Δt of its reports, summed over replicas (a sidecar that moved mid-window has two partial windows). */
  readonly seconds: number;
  readonly series: readonly SeriesDelta[];
}

/**
 * Merges the delta lists of several replicas. A sidecar's seconds are counted once per replica that reported it (every
 * series of one sidecar on one replica shares its Δt); the same series reported by two replicas has its counts added.
 */
export function mergeDeltas(perReplica: readonly (readonly SeriesDelta[])[]): SidecarWindow[] {
  const bySidecar = new Map<string, { seconds: number; series: Map<string, SeriesDelta> }>();
  for (const deltas of perReplica) {
    const secondsHere = new Map<string, number>();
    for (const d of deltas) secondsHere.set(d.sidecar, Math.max(secondsHere.get(d.sidecar) ?? 0, d.seconds));
    for (const [sidecar, seconds] of secondsHere) {
      const w = bySidecar.get(sidecar) ?? { seconds: 0, series: new Map() };
      w.seconds += seconds;
      bySidecar.set(sidecar, w);
    }
    for (const d of deltas) {
      const w = bySidecar.get(d.sidecar)!;
      const key = seriesKey(d);
      const prev = w.series.get(key);
      w.series.set(key, prev ? addDelta(prev, d) : { ...d });
    }
  }
  return [...bySidecar].map(([sidecar, w]) => ({ sidecar, seconds: w.seconds, series: [...w.series.values()] }));
}

function addDelta(a: SeriesDelta, b: SeriesDelta): SeriesDelta {
  const codes = new Map<number, number>();
  for (const d of [a, b]) d.codes.forEach((c, i) => codes.set(c, (codes.get(c) ?? 0) + (d.codeCounts[i] ?? 0)));
  const sorted = [...codes.keys()].sort((x, y) => x - y);
  const sameLayout = a.bucketBounds.length === b.bucketBounds.length && a.bucketBounds.every((v, i) => v === b.bucketBounds[i]);
  const buckets = sameLayout ? a.bucketCounts.map((v, i) => v + (b.bucketCounts[i] ?? 0)) : b.bucketCounts.length ? b.bucketCounts : a.bucketCounts;
  return {
    ...a, seconds: a.seconds + b.seconds, codes: sorted, codeCounts: sorted.map((c) => codes.get(c)!),
    bucketCounts: buckets, bucketBounds: sameLayout || !b.bucketCounts.length ? a.bucketBounds : b.bucketBounds, durationSum: a.durationSum + b.durationSum,
  };
}

/**
 * histogram_quantile: the bucket holding rank q·total, linear interpolation inside it (lower edge 0 for the first bucket);
 * a rank in +Inf answers the highest finite bound. `counts` are per bucket, +Inf last. NaN without observations.
 */
export function histogramQuantile(q: number, bounds: readonly number[], counts: readonly number[]): number {
  const total = counts.reduce((a, v) => a + v, 0);
  if (!(total > 0) || bounds.length === 0) return NaN;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c > 0 && below + c >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1];
      const lower = i === 0 ? 0 : bounds[i - 1];
      return lower + (bounds[i] - lower) * ((rank - below) / c);
    }
    below += c;
  }
  return bounds[bounds.length - 1];
}

/** Sidecars may use different layouts: each bucket (lo, hi] is counted at hi in the union (never placed below its range). */
function mergedHistogram(parts: readonly SeriesDelta[]): { bounds: number[]; counts: number[] } {
  const bounds = [...new Set(parts.flatMap((p) => (p.bucketCounts.length ? p.bucketBounds : [])))].sort((a, b) => a - b);
  const index = new Map(bounds.map((b, i) => [b, i]));
  const counts = new Array<number>(bounds.length + 1).fill(0);
  for (const p of parts) {
    p.bucketCounts.forEach((v, i) => {
      counts[i < p.bucketBounds.length ? index.get(p.bucketBounds[i])! : bounds.length] += v;
    });
  }
  return { bounds, counts };
}

/** Figures for a set of series, each with its sidecar's merged Δt. */
export function figures(parts: readonly { delta: SeriesDelta; seconds: number }[]): Omit<RouteStat, 'route'> {
  let requests = 0;
  let failures = 0;
  let rate = 0;
  for (const { delta, seconds } of parts) {
    let n = 0;
    delta.codes.forEach((c, i) => {
      const k = delta.codeCounts[i] ?? 0;
      n += k;
      if (c >= 500 && c <= 599) failures += k;
    });
    requests += n;
    if (seconds > 0) rate += n / seconds;
  }
  const h = mergedHistogram(parts.map((p) => p.delta));
  const ms = (q: number) => histogramQuantile(q, h.bounds, h.counts) * 1000;
  const latencyMs: LatencyMs = { p50: ms(0.5), p95: ms(0.95), p99: ms(0.99) };
  return { requestsPerSecond: rate, successRate: requests > 0 ? (requests - failures) / requests : NaN, latencyMs, requests };
}

function append<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}

/** Series that are not about one service: refused before routing, or calls the sidecar could not route. */
const NOT_A_SERVICE = new Set(['', 'unknown']);

/**
 * Per service: figures from its own sidecars' inbound series when there are any (what the service answered), else from
 * its callers' outbound series; routes from the callers' outbound series by route name. Sorted by service, then route.
 */
export function aggregateServices(windows: readonly SidecarWindow[], only = ''): ServiceStat[] {
  const inbound = new Map<string, { delta: SeriesDelta; seconds: number }[]>();
  const outbound = new Map<string, { delta: SeriesDelta; seconds: number }[]>();
  for (const w of windows) {
    for (const delta of w.series) {
      const svc = delta.destinationService;
      if (NOT_A_SERVICE.has(svc) || (only && svc !== only)) continue;
      const into = delta.direction === 'inbound' ? inbound : delta.direction === 'outbound' ? outbound : undefined;
      if (!into) continue;
      append(into, svc, { delta, seconds: w.seconds });
    }
  }
  const services = [...new Set([...inbound.keys(), ...outbound.keys()])].sort();
  return services.map((service) => {
    const own = inbound.get(service);
    const callers = outbound.get(service) ?? [];
    const byRoute = new Map<string, { delta: SeriesDelta; seconds: number }[]>();
    for (const p of callers) append(byRoute, p.delta.route, p);
    const routes = [...byRoute.keys()].sort().map((route) => ({ route, ...figures(byRoute.get(route)!) }));
    return { service, ...figures(own ?? callers), routes, source: own ? 'inbound' : 'outbound' };
  });
}
