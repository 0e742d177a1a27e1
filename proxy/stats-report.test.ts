// Tests for the sidecar's stats report: built from prom-client values (pure), read from a real Telemetry, sent only while connected.
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { createLogger } from '../api/log.js';
import type { StatsReport } from '../api/protocol.js';
import { buildStatsReport, readStatsReport, startStatsReporter, type MetricSample } from './stats-report.js';
import { Telemetry } from './telemetry.js';

const quiet = createLogger('error', {}, () => undefined);
const L = { direction: 'outbound', source_service: 'web', destination_service: 'api', route: 'r1' };

describe('buildStatsReport', () => {
  it('groups codes and histogram values by series, cumulative buckets with +Inf last, bounds sorted', () => {
    const requests: MetricSample[] = [
      { labels: { ...L, code: '200' }, value: 8 },
      { labels: { ...L, code: 503 }, value: 2 },
      { labels: { ...L, route: 'r2', code: '200' }, value: 1 },
    ];
    const duration: MetricSample[] = [
      { metricName: 'd_bucket', labels: { ...L, le: 0.1 }, value: 6 },
      { metricName: 'd_bucket', labels: { ...L, le: 0.01 }, value: 3 },
      { metricName: 'd_bucket', labels: { ...L, le: '+Inf' }, value: 10 },
      { metricName: 'd_sum', labels: L, value: 1.5 },
      { metricName: 'd_count', labels: L, value: 10 },
    ];
    const r = buildStatsReport(requests, duration, 1234);
    expect(r.startedUnixMs).toBe(1234);
    expect(r.bucketBounds).toEqual([0.01, 0.1]);
    expect(r.series).toEqual([
      { direction: 'outbound', sourceService: 'web', destinationService: 'api', route: 'r1', codes: [200, 503], codeCounts: [8, 2], bucketCounts: [3, 6, 10], durationSum: 1.5 },
      { direction: 'outbound', sourceService: 'web', destinationService: 'api', route: 'r2', codes: [200], codeCounts: [1], bucketCounts: [], durationSum: 0 },
    ]);
  });

  it('leaves out series that counted nothing (children made at snapshot time, before any request)', () => {
    const duration: MetricSample[] = [
      { metricName: 'd_bucket', labels: { ...L, le: 0.1 }, value: 0 },
      { metricName: 'd_bucket', labels: { ...L, le: '+Inf' }, value: 0 },
      { metricName: 'd_sum', labels: L, value: 0 },
      { metricName: 'd_count', labels: L, value: 0 },
    ];
    expect(buildStatsReport([], duration, 1).series).toEqual([]);
  });

  it('ignores values without a usable code', () => {
    const r = buildStatsReport([{ labels: { ...L, code: 'x' }, value: 3 }, { labels: { ...L }, value: 1 }], [], 1);
    expect(r.series).toEqual([]);
  });
});

describe('readStatsReport on a real Telemetry', () => {
  it('reports what routeStats recorded, with the histogram layout the sidecar uses', async () => {
    const t = new Telemetry();
    const s = t.routeStats('inbound', 'web', 'api', 'inbound');
    for (let i = 0; i < 4; i++) s.record(200, 0.002);
    s.record(503, 0.3);
    t.routeStats('outbound', 'api', 'db', 'default');
    const r = await readStatsReport(t, 99);
    expect(r.series).toHaveLength(1);
    const [x] = r.series;
    expect(x).toMatchObject({ direction: 'inbound', sourceService: 'web', destinationService: 'api', route: 'inbound', codes: [200, 503], codeCounts: [4, 1] });
    expect(x.bucketCounts).toHaveLength(r.bucketBounds.length + 1);
    expect(x.bucketCounts.at(-1)).toBe(5);
    const under = (sec: number) => x.bucketCounts[r.bucketBounds.findIndex((b) => b >= sec)];
    expect(under(0.002)).toBe(4);
    expect(under(0.3)).toBe(5);
    expect(x.durationSum).toBeCloseTo(0.308, 6);
  });
});

describe('startStatsReporter', () => {
  it('sends one report per interval while connected, none while disconnected, none after stop', async () => {
    const clock = new FakeClock();
    const t = new Telemetry();
    t.routeStats('outbound', 'web', 'api', 'r').record(200, 0.01);
    let connected = false;
    const sent: StatsReport[] = [];
    const reporter = startStatsReporter({ telemetry: t, clock, log: quiet, intervalMs: 1_000, startedUnixMs: 7, connected: () => connected, send: (r) => sent.push(r) });
    const tick = async () => {
      clock.advance(1_000);
      // readStatsReport awaits metric.get(): let its promise chain settle.
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    await tick();
    expect(sent).toHaveLength(0);
    connected = true;
    await tick();
    await tick();
    expect(sent).toHaveLength(2);
    expect(sent[0].startedUnixMs).toBe(7);
    expect(sent[1].series[0].codeCounts).toEqual([1]);
    connected = false;
    await tick();
    expect(sent).toHaveLength(2);
    connected = true;
    reporter.stop();
    await tick();
    await tick();
    expect(sent).toHaveLength(2);
  });
});
