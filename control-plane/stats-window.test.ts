// Tests for window deltas of one sidecar's cumulative reports: Δt and counts between the oldest and newest report in the
// window, series that appear mid-window, counter resets (a restarted sidecar, a counter that went down), too few reports.
import { describe, expect, it } from 'vitest';
import type { StatsSeries } from '../api/protocol.js';
import { nonCumulative, seriesKey, windowDeltas, type StatsSample } from './stats-window.js';

const BOUNDS = [0.01, 0.1, 1];

function series(route: string, codes: Record<number, number>, cumBuckets: number[] = [], sum = 0): StatsSeries {
  const c = Object.keys(codes).map(Number).sort((a, b) => a - b);
  return { direction: 'inbound', sourceService: 'web', destinationService: 'api', route, codes: c, codeCounts: c.map((k) => codes[k]), bucketCounts: cumBuckets, durationSum: sum };
}

function sample(t: number, list: StatsSeries[], startedUnixMs = 1, bucketBounds = BOUNDS): StatsSample {
  return { t, startedUnixMs, bucketBounds, series: new Map(list.map((s) => [seriesKey(s), s])) };
}

const codesOf = (d: { codes: number[]; codeCounts: number[] }) => Object.fromEntries(d.codes.map((c, i) => [c, d.codeCounts[i]]));

describe('windowDeltas', () => {
  it('differences the oldest and newest report inside the window; Δt is theirs, not the window length', () => {
    const samples = [
      sample(0, [series('a', { 200: 10, 503: 1 }, [5, 9, 11, 11], 1)]),
      sample(1_000, [series('a', { 200: 20, 503: 2 }, [10, 19, 22, 22], 2)]),
      sample(2_000, [series('a', { 200: 40, 503: 5 }, [20, 40, 45, 45], 4)]),
      sample(3_000, [series('a', { 200: 60, 503: 5 }, [30, 60, 65, 65], 6)]),
    ];
    const [d] = windowDeltas('ns/api/1', samples, 500, 3_000);
    expect(d.seconds).toBe(2);
    expect(codesOf(d)).toEqual({ 200: 40, 503: 3 });
    // cumulative increase [20, 41, 43, 43] → per bucket
    expect(d.bucketCounts).toEqual([20, 21, 2, 0]);
    expect(d.durationSum).toBe(4);
    expect(d.bucketBounds).toEqual(BOUNDS);
    expect(d.sidecar).toBe('ns/api/1');
  });

  it('returns nothing with fewer than two reports in the window', () => {
    const samples = [sample(0, [series('a', { 200: 1 })]), sample(10_000, [series('a', { 200: 5 })])];
    expect(windowDeltas('x', samples, 5_000, 10_000)).toEqual([]);
    expect(windowDeltas('x', [], 0, 10_000)).toEqual([]);
  });

  it('counts a series that appears between two reports of the same process from 0', () => {
    const samples = [sample(0, [series('a', { 200: 5 })]), sample(1_000, [series('a', { 200: 6 }), series('b', { 200: 3 })])];
    const out = windowDeltas('x', samples, 0, 1_000);
    expect(out.map((d) => [d.route, codesOf(d)])).toEqual([['a', { 200: 1 }], ['b', { 200: 3 }]]);
  });

  it('treats a new process (startedUnixMs) as a counter reset: the new counts are all increase', () => {
    const samples = [
      sample(0, [series('a', { 200: 100 }, [50, 100, 100, 100])], 1),
      sample(1_000, [series('a', { 200: 110 }, [55, 110, 110, 110])], 1),
      // restarted: counters start again, even though 120 > 110 would look like growth
      sample(2_000, [series('a', { 200: 120 }, [60, 120, 120, 120])], 2),
    ];
    const [d] = windowDeltas('x', samples, 0, 2_000);
    expect(codesOf(d)).toEqual({ 200: 130 });
    expect(d.bucketCounts).toEqual([65, 65, 0, 0]);
  });

  it('treats a counter that went down as a reset (Prometheus rate semantics)', () => {
    const samples = [sample(0, [series('a', { 200: 100, 500: 4 })]), sample(1_000, [series('a', { 200: 7 })]), sample(2_000, [series('a', { 200: 9 })])];
    const [d] = windowDeltas('x', samples, 0, 2_000);
    expect(codesOf(d)).toEqual({ 200: 9 });
  });

  it('a changed histogram layout inside the window keeps only the newer layout’s latency figures', () => {
    const samples = [
      sample(0, [series('a', { 200: 1 }, [1, 1, 1, 1])]),
      sample(1_000, [series('a', { 200: 3 }, [3, 3, 3, 3])]),
      sample(2_000, [series('a', { 200: 2 }, [1, 2, 2])], 2, [0.05, 0.5]),
    ];
    const [d] = windowDeltas('x', samples, 0, 2_000);
    expect(codesOf(d)).toEqual({ 200: 4 });
    expect(d.bucketBounds).toEqual([0.05, 0.5]);
    expect(d.bucketCounts).toEqual([1, 1, 0]);
  });

  it('leaves out series that did nothing inside the window', () => {
    const samples = [sample(0, [series('a', { 200: 5 }, [5, 5, 5, 5])]), sample(1_000, [series('a', { 200: 5 }, [5, 5, 5, 5])])];
    expect(windowDeltas('x', samples, 0, 1_000)).toEqual([]);
  });
});

describe('nonCumulative', () => {
  it('turns ≤-bound counts into per-bucket counts, never negative', () => {
    expect(nonCumulative([1, 4, 4, 10])).toEqual([1, 3, 0, 6]);
    expect(nonCumulative([3, 2])).toEqual([3, 0]);
  });
});
