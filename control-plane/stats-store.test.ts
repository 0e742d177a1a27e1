// Tests for the control plane's stats store: samples stamped on arrival and cut into windows, bounded by the retention,
// a departed sidecar forgotten a retention later (kept while it reconnects), malformed reports refused.
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import type { StatsReport, StatsSeries } from '../api/protocol.js';
import { sanitizeReport, StatsStore } from './stats-store.js';

const BOUNDS = [0.01, 0.1];

function report(ok: number, failed = 0, startedUnixMs = 1): StatsReport {
  const s: StatsSeries = {
    direction: 'inbound', sourceService: 'web', destinationService: 'api', route: 'inbound',
    codes: [200, 503], codeCounts: [ok, failed], bucketCounts: [ok + failed, ok + failed, ok + failed], durationSum: 0.001 * (ok + failed),
  };
  return { startedUnixMs, bucketBounds: BOUNDS, series: [s] };
}

const total = (d: { codeCounts: number[] }[]) => d.reduce((a, x) => a + x.codeCounts.reduce((p, q) => p + q, 0), 0);

describe('StatsStore', () => {
  it('cuts the window from the arrival times of reports', () => {
    const clock = new FakeClock();
    const store = new StatsStore(clock, 60_000);
    store.connected('default/api/1');
    for (let i = 0; i <= 20; i++) {
      store.record('default/api/1', report(i * 10, i * 2));
      clock.advance(1_000);
    }
    // now = 21 s; reports at 0..20 s. A 10 s window holds the reports at 11..20 s: 9 s apart, 90 + 18 requests.
    const d = store.deltas(10_000);
    expect(d).toHaveLength(1);
    expect(d[0].seconds).toBe(9);
    expect(total(d)).toBe(108);
    expect(d[0].sidecar).toBe('default/api/1');
  });

  it('counts a sidecar as reporting when the window holds two of its reports, even if it served nothing', () => {
    const clock = new FakeClock();
    const store = new StatsStore(clock, 60_000);
    const idle: StatsReport = { startedUnixMs: 1, bucketBounds: BOUNDS, series: [] };
    for (const sc of ['busy', 'idle', 'once']) store.connected(sc);
    for (let i = 0; i < 3; i++) {
      store.record('busy', report(i * 10));
      store.record('idle', idle);
      if (i === 2) store.record('once', idle);
      clock.advance(1_000);
    }
    // The deltas name only the sidecar that served requests; reporting also counts the idle one, not the one with a single report.
    expect(new Set(store.deltas(10_000).map((d) => d.sidecar))).toEqual(new Set(['busy']));
    expect(store.reporting(10_000)).toBe(2);
    // A window too short for two reports of anyone.
    expect(store.reporting(1_500)).toBe(0);
  });

  it('keeps no more than the retention', () => {
    const clock = new FakeClock();
    const store = new StatsStore(clock, 10_000);
    store.connected('s');
    for (let i = 0; i < 100; i++) {
      store.record('s', report(i));
      clock.advance(1_000);
    }
    // Asking for more than is kept gives what is kept: reports from the last 10 s only.
    const [d] = store.deltas(1_000_000);
    expect(d.seconds).toBeLessThanOrEqual(10);
    expect(total([d])).toBeLessThanOrEqual(10);
  });

  it('forgets a sidecar a retention after its last stream closed, not while it has another stream open', () => {
    const clock = new FakeClock();
    const store = new StatsStore(clock, 5_000);
    store.connected('s');
    store.connected('s');
    store.record('s', report(1));
    store.disconnected('s');
    clock.advance(10_000);
    store.deltas(1_000);
    expect(store.size).toBe(1);
    store.record('s', report(2));
    store.disconnected('s');
    clock.advance(4_000);
    store.deltas(1_000);
    expect(store.size).toBe(1);
    clock.advance(2_000);
    store.deltas(1_000);
    expect(store.size).toBe(0);
  });

  it('forgets at once a sidecar that never reported', () => {
    const store = new StatsStore(new FakeClock());
    store.connected('silent');
    expect(store.size).toBe(1);
    store.disconnected('silent');
    expect(store.size).toBe(0);
  });

  it('a reconnect within the retention continues the history; a restart is a counter reset', () => {
    const clock = new FakeClock();
    const store = new StatsStore(clock);
    store.connected('s');
    store.record('s', report(100));
    clock.advance(1_000);
    store.record('s', report(110));
    store.disconnected('s');
    clock.advance(1_000);
    store.connected('s');
    store.record('s', report(5, 0, 2));
    clock.advance(1_000);
    store.record('s', report(15, 0, 2));
    expect(total(store.deltas(60_000))).toBe(10 + 5 + 10);
  });

  it('refuses malformed reports and drops malformed series', () => {
    const store = new StatsStore(new FakeClock());
    expect(store.record('s', { startedUnixMs: 1, bucketBounds: [0.1, 0.01], series: [] })).toBe(false);
    const bad = report(1).series[0];
    const clean = sanitizeReport({
      startedUnixMs: 1, bucketBounds: BOUNDS,
      series: [
        { ...bad, route: 'wrong-bucket-count', bucketCounts: [1, 1] },
        { ...bad, route: 'codes-mismatch', codeCounts: [1] },
        { ...bad, route: 'negative', codeCounts: [1, -1] },
        { ...bad, route: 'nan', durationSum: NaN },
        { ...bad, route: 'fine' },
      ],
    });
    expect([...clean!.series.values()].map((s) => s.route)).toEqual(['fine']);
  });
});
