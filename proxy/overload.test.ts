// Load shedding decisions on a hand-driven clock: the share rises with lag over the target, falls slowly under it, never reaches 100 %.
import { describe, expect, it } from 'vitest';
import type { Clock, Timer } from '../api/clock.js';
import { LoadShedder, nextShedShare } from './overload.js';

/** A clock whose single pending timer the test fires by hand, at whatever time it says: that lateness is the lag. */
class HandClock implements Clock {
  t = 0;
  pending: (() => void) | undefined;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, _ms: number): Timer {
    this.pending = fn;
    return { cancel: () => { this.pending = undefined; } };
  }
  /** Fires the pending timer `lateMs` after it was due (the interval is 25 ms). */
  tick(lateMs: number): void {
    this.t += 25 + lateMs;
    const fn = this.pending;
    this.pending = undefined;
    fn?.();
  }
}

describe('nextShedShare', () => {
  it('rises while the lag is over the target, faster the further over', () => {
    expect(nextShedShare(0, 150, 100)).toBeCloseTo(0.15);
    expect(nextShedShare(0, 400, 100)).toBeCloseTo(0.4);
    expect(nextShedShare(0, 5_000, 100)).toBeCloseTo(0.4);
  });

  it('falls slowly while under the target, and not below 0', () => {
    expect(nextShedShare(0.5, 10, 100)).toBeCloseTo(0.48);
    expect(nextShedShare(0.01, 10, 100)).toBe(0);
  });

  it('never refuses everything', () => {
    let s = 0;
    for (let i = 0; i < 100; i++) s = nextShedShare(s, 1_000, 100);
    expect(s).toBe(0.95);
  });
});

describe('LoadShedder', () => {
  it('admits everything while the loop keeps up, and never calls random() then', () => {
    const clock = new HandClock();
    let draws = 0;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => (draws++, 0) });
    for (let i = 0; i < 10; i++) clock.tick(5);
    expect(shedder.share).toBe(0);
    expect(shedder.shed()).toBe(false);
    expect(draws).toBe(0);
  });

  it('sheds a share once the loop is behind, and recovers when it catches up', () => {
    const clock = new HandClock();
    let r = 0.3;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => r });
    clock.tick(300);
    clock.tick(300);
    expect(shedder.lagMs).toBe(300);
    expect(shedder.share).toBeCloseTo(0.6);
    expect(shedder.shed()).toBe(true);
    r = 0.7;
    expect(shedder.shed()).toBe(false);
    for (let i = 0; i < 40; i++) clock.tick(0);
    expect(shedder.share).toBe(0);
    expect(shedder.shed()).toBe(false);
  });

  it('sheds nothing while few requests are in flight: a late loop with little work is starved, not overloaded', () => {
    const clock = new HandClock();
    let inFlight = 10;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0, inFlight: () => inFlight, minInFlight: 64 });
    clock.tick(500);
    expect(shedder.share).toBeGreaterThan(0);
    expect(shedder.shed()).toBe(false);
    inFlight = 64;
    expect(shedder.shed()).toBe(true);
  });

  it('sheds nothing while the queue would drain within 10 × the target, however late the loop (closed-loop callers)', () => {
    const clock = new HandClock();
    let finished = 0;
    // 2,000 callers that each wait for their answer, answered at 6,000/s: a 0.33 s queue, the loop 500 ms late.
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0, inFlight: () => 2_000, finished: () => finished });
    for (let i = 0; i < 80; i++) {
      finished += 6_000 * 0.525;
      clock.tick(500);
    }
    expect(shedder.lagMs).toBe(500);
    expect(shedder.completionRate).toBeGreaterThan(5_900);
    expect(shedder.queueMs).toBeLessThan(400);
    expect(shedder.share).toBe(0);
    expect(shedder.shed()).toBe(false);
  });

  it('sheds once the queue outgrows it, and lets go when the queue drains even while the loop stays late', () => {
    const clock = new HandClock();
    let finished = 0;
    let inFlight = 12_000;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0, inFlight: () => inFlight, finished: () => finished });
    for (let i = 0; i < 20; i++) {
      finished += 6_000 * 0.525;
      clock.tick(500);
    }
    expect(shedder.queueMs).toBeGreaterThan(1_000);
    expect(shedder.share).toBe(0.95);
    expect(shedder.shed()).toBe(true);
    expect(shedder.refused).toBe(1);
    inFlight = 3_000;
    for (let i = 0; i < 60; i++) {
      finished += 6_000 * 0.525;
      clock.tick(500);
    }
    expect(shedder.queueMs).toBeLessThan(1_000);
    expect(shedder.share).toBe(0);
  });

  it('sheds nothing while a queue estimate is long for less than its target (a thousand callers connecting at once)', () => {
    const clock = new HandClock();
    let finished = 0;
    let inFlight = 0;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0, inFlight: () => inFlight, finished: () => finished });
    // Idle, then 2,000 callers at once: nothing finishes for the first 100 ms, then 6,000/s, the loop 75 ms late.
    clock.tick(0);
    inFlight = 2_000;
    for (let t = 0; t < 2_000; t += 100) {
      if (t >= 100) finished += 600;
      clock.tick(75);
    }
    expect(shedder.queueMs).toBeLessThan(1_000);
    expect(shedder.share).toBe(0);
  });

  it('does not take its own refusals for completions', () => {
    const clock = new HandClock();
    let finished = 0;
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0, inFlight: () => 5_000, finished: () => finished });
    for (let i = 0; i < 4; i++) clock.tick(500);
    expect(shedder.share).toBeGreaterThan(0);
    // 10,000 refusals leave the listener within the next sample, and nothing admitted finishes.
    for (let i = 0; i < 10_000; i++) shedder.shed();
    finished += 10_000;
    clock.tick(500);
    expect(shedder.completionRate).toBe(0);
    expect(shedder.queueMs).toBe(Infinity);
  });

  it('is off with a target of 0 (no timer at all)', () => {
    const clock = new HandClock();
    const shedder = new LoadShedder({ lagTargetMs: 0, clock, random: () => 0 });
    expect(clock.pending).toBeUndefined();
    expect(shedder.shed()).toBe(false);
  });

  it('stops sampling when stopped', () => {
    const clock = new HandClock();
    const shedder = new LoadShedder({ lagTargetMs: 100, clock, random: () => 0 });
    shedder.stop();
    expect(clock.pending).toBeUndefined();
  });
});
