import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { exposeGc, nextForcedGcAt, startPeriodicGc } from './periodic-gc.js';

function harness(periodMs = 1_000) {
  const clock = new FakeClock();
  const collected: number[] = [];
  let notify: () => void = () => {};
  let unsubscribed = false;
  const gc = startPeriodicGc({
    periodMs, clock,
    collect: () => collected.push(clock.now()),
    onFullGc: (fn) => { notify = fn; return () => { unsubscribed = true; }; },
  });
  return { clock, collected, gc, v8Collected: () => notify(), unsubscribed: () => unsubscribed };
}

describe('periodic full GC', () => {
  it('forces a collection when none ran for a period, and again a period later', () => {
    const h = harness();
    h.clock.advance(999);
    expect(h.collected).toEqual([]);
    h.clock.advance(1);
    expect(h.collected).toEqual([1_000]);
    h.clock.advance(2_000);
    expect(h.collected).toEqual([1_000, 2_000, 3_000]);
    expect(h.gc.forced).toBe(3);
    h.gc.stop();
  });

  it("does not force one while V8's own full collections keep coming", () => {
    const h = harness();
    for (let i = 0; i < 10; i++) {
      h.clock.advance(600);
      h.v8Collected();
    }
    expect(h.collected).toEqual([]);
    // The last of V8's was at 6,000: the forced one comes a full period after it, not on the old schedule.
    h.clock.advance(999);
    expect(h.collected).toEqual([]);
    h.clock.advance(1);
    expect(h.collected).toEqual([7_000]);
    h.gc.stop();
  });

  it('stops: no more collections, and the GC subscription is dropped', () => {
    const h = harness();
    h.gc.stop();
    h.clock.advance(10_000);
    expect(h.collected).toEqual([]);
    expect(h.unsubscribed()).toBe(true);
  });

  it('nextForcedGcAt is the last full collection plus the period', () => {
    expect(nextForcedGcAt(5_000, 120_000)).toBe(125_000);
  });

  it("exposeGc returns V8's collector without leaving gc on the global object", () => {
    const had = 'gc' in globalThis;
    const gc = exposeGc();
    expect(typeof gc).toBe('function');
    gc();
    expect('gc' in globalThis).toBe(had);
  });
});
