// Outlier detection on fake time: ejection, reset on success, growing and decaying ejection time, the percentage cap, endpoint churn.
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { Endpoint } from './endpoint.js';
import { OutlierDetector, type OutlierConfig } from './outlier.js';

const CFG: OutlierConfig = { consecutiveFailures: 3, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 100 };

const endpoint = (port: number) => new Endpoint({ address: `127.0.0.1:${port}`, host: '127.0.0.1', port, labels: {} });

function setup(cfg: Partial<OutlierConfig> = {}, n = 3) {
  const clock = new FakeClock();
  const changes: number[] = [];
  const ejections: Endpoint[] = [];
  const det = new OutlierDetector({ ...CFG, ...cfg }, clock, {
    onChange: () => changes.push(clock.now()),
    onEject: (ep) => ejections.push(ep),
  });
  const eps = Array.from({ length: n }, (_, i) => endpoint(9001 + i));
  det.setEndpoints(eps);
  const fail = (ep: Endpoint, times: number) => {
    for (let i = 0; i < times; i++) det.reportFailure(ep);
  };
  return { clock, det, eps, changes, ejections, fail };
}

describe('OutlierDetector', () => {
  it('ejects after consecutiveFailures failures, not before', () => {
    const { eps: [a], changes, ejections, fail } = setup();
    fail(a, 2);
    expect(a.ejected).toBe(false);
    expect(a.consecutiveFailures).toBe(2);
    fail(a, 1);
    expect(a.ejected).toBe(true);
    expect(a.ejectedUntil).toBe(30_000);
    expect(a.timesEjected).toBe(1);
    expect(ejections).toEqual([a]);
    expect(changes).toEqual([0]);
  });

  it('a success resets the count', () => {
    const { det, eps: [a], fail } = setup();
    fail(a, 2);
    det.reportSuccess(a);
    expect(a.consecutiveFailures).toBe(0);
    fail(a, 2);
    expect(a.ejected).toBe(false);
    fail(a, 1);
    expect(a.ejected).toBe(true);
  });

  it('un-ejects at the right fake time, resets the count and calls onChange', () => {
    const { clock, eps: [a], changes, fail } = setup();
    clock.advance(1_000);
    fail(a, 3);
    clock.advance(29_999);
    expect(a.ejected).toBe(true);
    expect(changes).toEqual([1_000]);
    clock.advance(1);
    expect(a.ejected).toBe(false);
    expect(a.ejectedUntil).toBe(0);
    expect(a.consecutiveFailures).toBe(0);
    expect(changes).toEqual([1_000, 31_000]);
  });

  it('each ejection lasts longer, and quiet intervals shrink the next one', () => {
    const { clock, eps: [a], changes, fail } = setup();
    fail(a, 3); // t = 0: 1 × 30 s
    clock.advance(30_000);
    expect(a.ejected).toBe(false);

    fail(a, 3); // t = 30 s: 2 × 30 s
    expect(a.timesEjected).toBe(2);
    expect(a.ejectedUntil).toBe(90_000);
    clock.advance(59_999);
    expect(a.ejected).toBe(true);
    clock.advance(1);
    expect(a.ejected).toBe(false);
    expect(changes).toEqual([0, 30_000, 30_000, 90_000]);

    // No decay in the tick that coincides with un-ejection; one per full quiet interval after it.
    expect(a.timesEjected).toBe(2);
    clock.advance(10_000);
    expect(a.timesEjected).toBe(1);
    clock.advance(10_000);
    expect(a.timesEjected).toBe(0);

    fail(a, 3); // t = 110 s: back to 1 × 30 s
    expect(a.ejectedUntil).toBe(140_000);
  });

  it('a single quiet interval takes one step off the multiplier', () => {
    const { clock, eps: [a], fail } = setup();
    fail(a, 3);
    clock.advance(30_000);
    fail(a, 3);
    clock.advance(60_000 + 10_000); // t = 100 s: un-ejected at 90 s, one quiet interval
    expect(a.timesEjected).toBe(1);
    fail(a, 3);
    expect(a.timesEjected).toBe(2);
    expect(a.ejectedUntil).toBe(100_000 + 60_000);
  });

  it.each([
    { n: 3, percent: 50, max: 1 },
    { n: 4, percent: 50, max: 2 },
    { n: 10, percent: 30, max: 3 },
    { n: 1, percent: 50, max: 0 },
    { n: 3, percent: 100, max: 3 },
  ])('$n endpoints at $percent% → at most $max ejected', ({ n, percent, max }) => {
    const { eps, fail } = setup({ maxEjectionPercent: percent }, n);
    for (const ep of eps) fail(ep, 3);
    expect(eps.filter((ep) => ep.ejected)).toHaveLength(max);
  });

  it('an endpoint held back by the cap is ejected by a later failure once there is room', () => {
    const { clock, eps: [a, b], changes, fail } = setup({ maxEjectionPercent: 50 });
    fail(a, 3);
    fail(b, 3);
    expect([a.ejected, b.ejected]).toEqual([true, false]);
    expect(b.consecutiveFailures).toBe(3);
    clock.advance(30_000);
    expect(a.ejected).toBe(false);
    fail(b, 1);
    expect(b.ejected).toBe(true);
    expect(changes).toEqual([0, 30_000, 30_000]);
  });

  it('setEndpoints keeps state for endpoints still present and forgets removed ones', () => {
    const { clock, det, eps: [a, b, c], changes, fail } = setup();
    fail(a, 3);
    fail(b, 3);
    fail(c, 2);
    const d = endpoint(9100);
    det.setEndpoints([a, c, d]);
    expect(a.ejected).toBe(true);
    expect(c.consecutiveFailures).toBe(2);
    expect([b.ejected, b.consecutiveFailures, b.timesEjected]).toEqual([false, 0, 0]);

    // Reports for a removed endpoint (a request still in flight) are ignored.
    fail(b, 5);
    expect(b.ejected).toBe(false);
    fail(c, 1);
    expect(c.ejected).toBe(true);

    // a's timer survived the update; b's was cancelled.
    clock.advance(30_000);
    expect(a.ejected).toBe(false);
    expect(c.ejected).toBe(false);
    expect(changes).toEqual([0, 0, 0, 30_000, 30_000]);
  });

  it('adopts an endpoint that arrives already ejected and still un-ejects it', () => {
    const { clock, det, changes } = setup({}, 0);
    const a = endpoint(9001);
    a.ejectedUntil = 5_000;
    a.timesEjected = 1;
    det.setEndpoints([a, endpoint(9002)]);
    clock.advance(5_000);
    expect(a.ejected).toBe(false);
    expect(changes).toEqual([5_000]);
  });

  it('close() cancels every timer', () => {
    const { clock, det, eps: [a], changes, fail } = setup();
    fail(a, 3);
    det.close();
    clock.advance(120_000);
    expect(changes).toEqual([0]);
    det.reportFailure(a);
    expect(a.consecutiveFailures).toBe(3);
  });
});
