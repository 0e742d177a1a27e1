// Tests for golden-metric aggregation: histogram_quantile interpolation, merging deltas across replicas before any
// percentile, service figures from inbound series (else outbound), routes from callers' outbound series.
import { describe, expect, it } from 'vitest';
import type { SeriesDelta } from '../api/protocol.js';
import { aggregateServices, figures, histogramQuantile, mergeDeltas } from './stats-aggregate.js';

const BOUNDS = [0.01, 0.1, 1];

function delta(o: Omit<Partial<SeriesDelta>, 'codes'> & { codes?: Record<number, number> }): SeriesDelta {
  const map = o.codes ?? { 200: 0 };
  const codes = Object.keys(map).map(Number);
  return {
    sidecar: 'default/api/1', direction: 'inbound', sourceService: 'web', destinationService: 'api', route: 'inbound', seconds: 10,
    bucketCounts: [], durationSum: 0, bucketBounds: BOUNDS,
    ...o,
    codes, codeCounts: codes.map((c) => map[c]),
  };
}

describe('histogramQuantile', () => {
  it.each([
    // [q, per-bucket counts, expected] — same figures Prometheus' histogram_quantile gives for these cumulative buckets
    [0.5, [10, 0, 0, 0], 0.005],
    [0.5, [0, 10, 0, 0], 0.055],
    [0.99, [0, 10, 0, 0], 0.0991],
    [0.25, [5, 5, 5, 5], 0.01],
    [0.5, [5, 5, 5, 5], 0.1],
    [0.95, [5, 5, 5, 5], 1],
    [0.5, [0, 0, 0, 4], 1],
    [0.9, [9, 0, 0, 1], 0.01],
  ])('q=%s of %j → %s', (q, counts, want) => {
    expect(histogramQuantile(q, BOUNDS, counts)).toBeCloseTo(want, 9);
  });

  it('is NaN without observations or without buckets', () => {
    expect(histogramQuantile(0.5, BOUNDS, [0, 0, 0, 0])).toBeNaN();
    expect(histogramQuantile(0.5, [], [3])).toBeNaN();
  });
});

describe('mergeDeltas', () => {
  it('a sidecar that moved between replicas mid-window: counts and seconds add up, so its rate is not doubled', () => {
    const a = [delta({ codes: { 200: 40 }, seconds: 4, bucketCounts: [40, 0, 0, 0] })];
    const b = [delta({ codes: { 200: 50, 503: 10 }, seconds: 6, bucketCounts: [0, 60, 0, 0] })];
    const [w] = mergeDeltas([a, b]);
    expect(w.seconds).toBe(10);
    expect(w.series).toHaveLength(1);
    expect(w.series[0].codes).toEqual([200, 503]);
    expect(w.series[0].codeCounts).toEqual([90, 10]);
    expect(w.series[0].bucketCounts).toEqual([40, 60, 0, 0]);
    const [svc] = aggregateServices(mergeDeltas([a, b]));
    expect(svc.requestsPerSecond).toBeCloseTo(10, 9);
    expect(svc.successRate).toBeCloseTo(0.9, 9);
    // p50 from the merged buckets: rank 50 of 100 falls in (0.01, 0.1] at 10/60 of the way.
    expect(svc.latencyMs.p50).toBeCloseTo((0.01 + 0.09 * (10 / 60)) * 1000, 6);
  });

  it('different sidecars keep their own Δt: the service rate is the sum of their rates', () => {
    const w = mergeDeltas([[delta({ sidecar: 's1', codes: { 200: 100 }, seconds: 10 })], [delta({ sidecar: 's2', codes: { 200: 100 }, seconds: 5 })]]);
    expect(w.map((x) => x.seconds).sort()).toEqual([10, 5]);
    expect(aggregateServices(w)[0].requestsPerSecond).toBeCloseTo(30, 9);
  });

  it('percentiles come from merged buckets, not from averaging per-replica percentiles', () => {
    // Replica A: 90 fast requests; replica B: 10 slow ones. Averaged p99s would be ~0.5 s; the merged p99 is in the slow bucket.
    const a = [delta({ sidecar: 's1', codes: { 200: 90 }, bucketCounts: [90, 0, 0, 0] })];
    const b = [delta({ sidecar: 's2', codes: { 200: 10 }, bucketCounts: [0, 0, 10, 0] })];
    const [svc] = aggregateServices(mergeDeltas([a, b]));
    expect(svc.latencyMs.p50).toBeCloseTo(5.555_556, 3);
    expect(svc.latencyMs.p99).toBeCloseTo((0.1 + 0.9 * 0.9) * 1000, 6);
  });
});

describe('aggregateServices', () => {
  it('service figures from inbound series when any; routes from outbound series grouped by route name', () => {
    const w = mergeDeltas([[
      delta({ sidecar: 'api-1', codes: { 200: 80, 503: 20 }, bucketCounts: [100, 0, 0, 0] }),
      delta({ sidecar: 'web-1', direction: 'outbound', route: 'api-v1', codes: { 200: 60, 503: 20 } }),
      delta({ sidecar: 'web-1', direction: 'outbound', route: 'api-v2', codes: { 200: 30 } }),
      delta({ sidecar: 'web-2', direction: 'outbound', route: 'api-v1', codes: { 200: 10 } }),
    ]]);
    const [svc] = aggregateServices(w);
    expect(svc.service).toBe('api');
    expect(svc.source).toBe('inbound');
    expect(svc.requests).toBe(100);
    expect(svc.successRate).toBeCloseTo(0.8, 9);
    expect(svc.requestsPerSecond).toBeCloseTo(10, 9);
    expect(svc.routes.map((r) => [r.route, r.requests, Number(r.successRate.toFixed(4)), r.requestsPerSecond])).toEqual([
      ['api-v1', 90, 0.7778, 9],
      ['api-v2', 30, 1, 3],
    ]);
  });

  it('a service without reporting sidecars (outside the mesh) is measured at its callers', () => {
    const w = mergeDeltas([[delta({ sidecar: 'web-1', direction: 'outbound', destinationService: 'ext', route: 'default', codes: { 200: 5, 500: 5 } })]]);
    const [svc] = aggregateServices(w);
    expect(svc).toMatchObject({ service: 'ext', source: 'outbound', requests: 10, successRate: 0.5 });
    expect(svc.routes.map((r) => r.route)).toEqual(['default']);
  });

  it('filters by service and skips series that name no service', () => {
    const w = mergeDeltas([[
      delta({ destinationService: 'unknown', direction: 'outbound', codes: { 404: 3 } }),
      delta({ destinationService: 'billing', codes: { 200: 1 } }),
      delta({ destinationService: 'api', codes: { 200: 1 } }),
    ]]);
    expect(aggregateServices(w).map((s) => s.service)).toEqual(['api', 'billing']);
    expect(aggregateServices(w, 'billing').map((s) => s.service)).toEqual(['billing']);
    expect(aggregateServices(w, 'nope')).toEqual([]);
  });

  it('sidecars with different bucket layouts: each bucket counts at its upper bound in the union layout', () => {
    const f = figures([
      { seconds: 1, delta: delta({ codes: { 200: 10 }, bucketBounds: [0.01, 0.1, 1], bucketCounts: [0, 10, 0, 0] }) },
      { seconds: 1, delta: delta({ codes: { 200: 10 }, bucketBounds: [0.05, 1], bucketCounts: [10, 0, 0] }) },
    ]);
    // union [0.01, 0.05, 0.1, 1] with counts [0, 10, 10, 0, 0]: p50 = rank 10 → top of (0.01, 0.05]
    expect(f.latencyMs.p50).toBeCloseTo(50, 6);
    expect(f.requests).toBe(20);
  });

  it('no requests: success rate and percentiles are NaN, rate 0', () => {
    const f = figures([]);
    expect(f.requests).toBe(0);
    expect(f.requestsPerSecond).toBe(0);
    expect(f.successRate).toBeNaN();
    expect(f.latencyMs.p99).toBeNaN();
  });
});
