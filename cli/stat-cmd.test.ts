// Tests for `mesh stat` output: the aligned table, the stable JSON fields (null for unknown figures), the window's
// spelling, and the usage errors that need no control plane.
import { describe, expect, it } from 'vitest';
import type { StatResponse } from '../api/protocol.js';
import { formatMs, formatWindow, statCommand, statJson, statTable } from './stat-cmd.js';

const response: StatResponse = {
  windowSeconds: 60, controlPlane: 'cp-a', sidecars: 3, deltas: [], replicas: [{ name: 'cp-a', address: '127.0.0.1:15010', error: '' }],
  services: [
    {
      service: 'api', requestsPerSecond: 50.04, successRate: 0.8, latencyMs: { p50: 1.234, p95: 8.5, p99: 120.4 }, requests: 3002, source: 'inbound',
      routes: [{ route: 'api', requestsPerSecond: 50.04, successRate: 0.79993, latencyMs: { p50: 2, p95: 9, p99: 130 }, requests: 3002 }],
    },
    { service: 'idle', requestsPerSecond: 0, successRate: NaN, latencyMs: { p50: NaN, p95: NaN, p99: NaN }, requests: 0, source: 'outbound', routes: [] },
  ],
};

describe('mesh stat output', () => {
  it('prints a header and an aligned table: a service row "(all)", then its routes', () => {
    expect(statTable(response, 'x')).toEqual([
      'control plane cp-a: window 1m, 3 sidecars reporting',
      '',
      'SERVICE  ROUTE  RPS   SUCCESS  P50     P95     P99',
      'api      (all)  50.0  80.00%   1.23ms  8.50ms  120ms',
      'api      api    50.0  79.99%   2.00ms  9.00ms  130ms',
      'idle     (all)  0.0   -        -       -       -',
    ]);
  });

  it('says why the table is empty', () => {
    const lines = statTable({ ...response, services: [], sidecars: 0 }, '127.0.0.1:15010');
    expect(lines[0]).toBe('control plane cp-a: window 1m, 0 sidecars reporting');
    expect(lines[1]).toMatch(/^no requests in the last 1m \(the window must span two stats reports/);
  });

  it('JSON: stable field names, success rate 0..1, null where nothing was measured', () => {
    const j = statJson(response, 'x') as { services: Record<string, unknown>[]; window: string; windowSeconds: number };
    expect(j.window).toBe('1m');
    expect(j.windowSeconds).toBe(60);
    expect(j.services[0]).toEqual({
      service: 'api', requestsPerSecond: 50.04, successRate: 0.8, latencyMs: { p50: 1.234, p95: 8.5, p99: 120.4 }, requests: 3002, source: 'inbound',
      routes: [{ route: 'api', requestsPerSecond: 50.04, successRate: 0.7999, latencyMs: { p50: 2, p95: 9, p99: 130 }, requests: 3002 }],
    });
    expect(j.services[1]).toMatchObject({ requestsPerSecond: 0, successRate: null, latencyMs: { p50: null, p95: null, p99: null }, requests: 0 });
    // NaN must never reach the JSON text (JSON.stringify would write null anyway, but the shape is the contract).
    expect(JSON.stringify(j)).not.toContain('NaN');
  });

  it.each([[10, '10s'], [60, '1m'], [90, '1m30s'], [300, '5m']])('window %s s is written %s', (s, want) => {
    expect(formatWindow(s)).toBe(want);
  });

  it.each([[NaN, '-'], [0.42, '0.42ms'], [12.345, '12.3ms'], [250.4, '250ms'], [15_000, '15.0s']])('latency %s ms is written %s', (ms, want) => {
    expect(formatMs(ms)).toBe(want);
  });

  it('rejects a bad --window, -o or a second SERVICE with a one-line usage error and exit 2', async () => {
    for (const argv of [['--window', '0s'], ['--window', '10m'], ['--window', 'soon'], ['-o', 'yaml'], ['a', 'b']]) {
      const err: string[] = [];
      const code = await statCommand(argv, { stdout: () => undefined, stderr: (s) => err.push(s) }, {});
      expect(code, argv.join(' ')).toBe(2);
      expect(err).toHaveLength(1);
      expect(err[0]).toMatch(/^mesh: /);
    }
  });
});
