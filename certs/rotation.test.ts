// Tests for the rotation schedule: renewAt and retryDelay tables, and the renewal driver on a fake clock.
import { describe, it, expect } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { RENEW_FRACTION, renewAt, retryDelay, startRotation, type Validity } from './rotation.js';

const S = 1_000;
const H = 3_600_000;
const EPOCH = 1_900_000_000_000;

describe('renewAt', () => {
  const cases: [string, number, number, number, number][] = [
    // name, notBefore, notAfter, now, want
    ['a fresh 24 h certificate renews at 70 %', 0, 24 * H, 0, 0.7 * 24 * H],
    ['midway, still at 70 %', 0, 24 * H, 10 * H, 0.7 * 24 * H],
    ['a backdated notBefore counts in the lifetime', -60 * S, 10 * 60 * S, 0, -60 * S + 0.7 * 11 * 60 * S],
    ['past the 70 % mark: one second from now', 0, 100 * S, 80 * S, 81 * S],
    ['near expiry: one second before notAfter', 0, 100 * S, 98.5 * S, 99 * S],
    ['within the last second: now', 0, 100 * S, 99.5 * S, 99.5 * S],
    ['already expired: now', 0, 100 * S, 200 * S, 200 * S],
    ['a 2 s certificate: the lead and the tail collide, the tail wins', 0, 2 * S, 0, 1 * S],
  ];
  it.each(cases)('%s', (_name, nb, na, now, want) => {
    expect(renewAt(nb, na, now)).toBe(Math.round(want));
  });

  it('uses the documented fraction', () => {
    expect(RENEW_FRACTION).toBe(0.7);
  });
});

describe('retryDelay', () => {
  const cases: [number, number, number][] = [
    // failures, random, want
    [1, 0.5, 1_000],
    [1, 0, 800],
    [1, 0.999999, 1_200],
    [2, 0.5, 2_000],
    [3, 0.5, 4_000],
    [5, 0.5, 16_000],
    [5, 1, 19_200],
    [6, 0.5, 30_000], // 32 s capped
    [6, 0, 24_000], // capped base still spreads downwards
    [50, 0.999, 30_000],
    [2000, 0.3, 27_600], // 2^1999 is Infinity; the cap still holds
    [0, 0.5, 1_000], // treated as the first failure
  ];
  it.each(cases)('failure %d, random %d → %d ms', (failures, r, want) => {
    expect(retryDelay(failures, () => r)).toBe(want);
  });

  it('never exceeds 30 s or drops below 80 % of the base', () => {
    for (let n = 1; n <= 40; n++) {
      for (const r of [0, 0.25, 0.5, 0.75, 0.9999]) {
        const d = retryDelay(n, () => r);
        expect(d).toBeLessThanOrEqual(30_000);
        expect(d).toBeGreaterThanOrEqual(Math.min(30_000, 1_000 * 2 ** (n - 1)) * 0.8 - 1);
      }
    }
  });
});

describe('startRotation', () => {
  /** Wall time = a fixed epoch plus the fake clock, so certificate dates and timers agree. */
  function setup(current: Validity, outcomes: ('ok' | 'fail')[]) {
    const clock = new FakeClock();
    const wallNow = (): number => EPOCH + clock.now();
    const attempts: number[] = [];
    const errors: number[] = [];
    const ttl = current.notAfterMs - current.notBeforeMs;
    const rotation = startRotation({
      current,
      clock,
      random: () => 0.5,
      wallNow,
      renew: async () => {
        attempts.push(wallNow() - EPOCH);
        if ((outcomes.shift() ?? 'ok') === 'fail') throw new Error('control plane unreachable');
        return { notBeforeMs: wallNow(), notAfterMs: wallNow() + ttl };
      },
      onError: (_err, failures) => errors.push(failures),
    });
    // Renewals resolve on the microtask queue; let them settle between clock steps.
    const advance = async (ms: number): Promise<void> => {
      for (let t = 0; t < ms; t += 100) {
        clock.advance(Math.min(100, ms - t));
        await Promise.resolve();
        await Promise.resolve();
      }
    };
    return { rotation, attempts, errors, advance };
  }

  it('renews at 70 % of each lifetime', async () => {
    const { rotation, attempts, advance } = setup({ notBeforeMs: EPOCH, notAfterMs: EPOCH + 100 * S }, []);
    await advance(200 * S);
    expect(attempts).toEqual([70 * S, 140 * S]);
    expect(rotation.rotations).toBe(2);
    rotation.stop();
  });

  it('backs off after failures, then returns to the 70 % schedule', async () => {
    const { rotation, attempts, errors, advance } = setup({ notBeforeMs: EPOCH, notAfterMs: EPOCH + 100 * S }, ['fail', 'fail', 'fail']);
    await advance(90 * S);
    // 70 s fails; retries 1 s, 2 s, 4 s later; the fourth try succeeds at 77 s, next renewal at 77 + 70 s.
    expect(attempts).toEqual([70 * S, 71 * S, 73 * S, 77 * S]);
    expect(errors).toEqual([1, 2, 3]);
    expect(rotation.rotations).toBe(1);
    expect(rotation.nextAttemptAt).toBe(EPOCH + 147 * S);
    rotation.stop();
    expect(rotation.nextAttemptAt).toBeUndefined();
  });

  it('squeezes retries in before expiry', async () => {
    const outcomes = Array<'fail'>(20).fill('fail');
    const { rotation, attempts, advance } = setup({ notBeforeMs: EPOCH, notAfterMs: EPOCH + 20 * S }, outcomes);
    await advance(25 * S);
    // 14 s, +1, +2, then 4 s would overshoot: the last chance is 19 s (one second before notAfter).
    expect(attempts.slice(0, 4)).toEqual([14 * S, 15 * S, 17 * S, 19 * S]);
    rotation.stop();
  });

  it('stops cleanly', async () => {
    const { rotation, attempts, advance } = setup({ notBeforeMs: EPOCH, notAfterMs: EPOCH + 100 * S }, []);
    rotation.stop();
    await advance(200 * S);
    expect(attempts).toEqual([]);
  });
});
