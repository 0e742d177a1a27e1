// Token bucket on fake time: a full burst first, then the steady refill rate.
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { TokenBucket } from './rate-limit.js';

const drain = (b: TokenBucket): number => {
  let n = 0;
  while (b.take()) n++;
  return n;
};

describe('TokenBucket', () => {
  it('starts full: a burst passes at once, the next request does not', () => {
    const b = new TokenBucket({ requestsPerSecond: 10, burst: 5 }, new FakeClock());
    expect(drain(b)).toBe(5);
    expect(b.take()).toBe(false);
  });

  it.each([
    { wait: 50, want: 0 },
    { wait: 100, want: 1 },
    { wait: 250, want: 2 },
    { wait: 400, want: 4 },
    { wait: 1_000, want: 5 }, // capped at burst, not 10
    { wait: 60_000, want: 5 },
  ])('after draining, $wait ms refills $want tokens at 10 rps (burst 5)', ({ wait, want }) => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 10, burst: 5 }, clock);
    drain(b);
    clock.advance(wait);
    expect(drain(b)).toBe(want);
  });

  it('holds the steady rate under constant pressure', () => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 100, burst: 20 }, clock);
    let passed = 0;
    // A request every millisecond for 10 s: the burst, plus 100 per second over the 9.999 s after it.
    for (let t = 0; t < 10_000; t++) {
      if (b.take()) passed++;
      clock.advance(1);
    }
    expect(passed).toBe(20 + 1_000 - 1);
  });

  it('keeps fractional refills: 3 rps yields 3 tokens per second exactly', () => {
    const clock = new FakeClock();
    // burst 3, not 1: with room for only one token, polling at whole milliseconds would overflow the fractions away.
    const b = new TokenBucket({ requestsPerSecond: 3, burst: 3 }, clock);
    drain(b);
    let passed = 0;
    for (let t = 0; t < 3_000; t++) {
      clock.advance(1);
      if (b.take()) passed++;
    }
    expect(passed).toBe(9);
  });

  it('treats burst 0 as 1 so something can pass', () => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 1, burst: 0 }, clock);
    expect(drain(b)).toBe(1);
    clock.advance(1_000);
    expect(drain(b)).toBe(1);
  });
});
