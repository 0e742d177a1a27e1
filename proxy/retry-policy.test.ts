// Retry decisions: every retryOn condition against every outcome, the request gates, backoff bounds, clamping and the budget on fake time.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FakeClock, seededRandom } from '../api/clock.js';
import { DEFAULTS, type RetryCondition, type RetrySpec } from '../api/resources.js';
import {
  backoffDelay,
  clampPerTry,
  compileRetryPolicy,
  isIdempotent,
  mayRetryRequest,
  RetryBudget,
  retryReason,
  type AttemptOutcome,
} from './retry-policy.js';

const spec = (retryOn: RetryCondition[]): RetrySpec => ({
  attempts: 3,
  perTryTimeoutMs: 500,
  retryOn,
  backoff: { baseMs: 25, maxMs: 250 },
});
const policyOn = (...retryOn: RetryCondition[]) => compileRetryPolicy(spec(retryOn), false);

// An array, not an object: integer-like keys ("200") would be reordered ahead of the others.
const COLUMN_OUTCOMES: [string, AttemptOutcome][] = [
  ['connect', { kind: 'error', code: 'upstream-connect-failed' }],
  ['reset', { kind: 'error', code: 'upstream-reset' }],
  ['refused', { kind: 'error', code: 'upstream-reset', refusedStream: true }],
  ['timeout', { kind: 'error', code: 'upstream-timeout' }],
  ...[200, 409, 429, 500, 502, 503, 504].map((status): [string, AttemptOutcome] => [`${status}`, { kind: 'response', status }]),
];
const COLUMNS = COLUMN_OUTCOMES.map(([name]) => name);
const OUTCOMES = new Map(COLUMN_OUTCOMES);
const outcome = (name: string): AttemptOutcome => {
  const o = OUTCOMES.get(name);
  if (!o) throw new Error(`no outcome "${name}"`);
  return o;
};

// One row per condition; one column per outcome in OUTCOMES order; '-' = not retriable.
const MATRIX: [RetryCondition | 'none', string[]][] = [
  //                  connect            reset            refused           timeout            200  409              429    500    502              503              504
  ['connect-failure', ['connect-failure', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-']],
  ['refused-stream', ['-', '-', 'refused-stream', '-', '-', '-', '-', '-', '-', '-', '-']],
  ['reset', ['reset', 'reset', 'reset', 'per-try-timeout', '-', '-', '-', '-', '-', '-', '-']],
  ['gateway-error', ['gateway-error', 'gateway-error', 'gateway-error', 'per-try-timeout', '-', '-', '-', '-', 'gateway-error', 'gateway-error', 'gateway-error']],
  ['5xx', ['5xx', '5xx', '5xx', 'per-try-timeout', '-', '-', '-', '5xx', '5xx', '5xx', '5xx']],
  ['retriable-4xx', ['-', '-', '-', '-', '-', 'retriable-4xx', '-', '-', '-', '-', '-']],
  ['503', ['-', '-', '-', '-', '-', '-', '-', '-', '-', '503', '-']],
  ['504', ['-', '-', '-', 'per-try-timeout', '-', '-', '-', '-', '-', '-', '504']],
  ['429', ['-', '-', '-', '-', '-', '-', '429', '-', '-', '-', '-']],
  ['none', ['-', '-', '-', '-', '-', '-', '-', '-', '-', '-', '-']],
];

describe('retryReason', () => {
  const cases = MATRIX.flatMap(([cond, row]) =>
    COLUMNS.map((col, i) => ({ cond, col, want: row[i] })),
  );
  it.each(cases)('retryOn [$cond] on $col → $want', ({ cond, col, want }) => {
    const policy = cond === 'none' ? policyOn() : policyOn(cond);
    expect(retryReason(policy, outcome(col)) ?? '-').toBe(want);
  });

  it.each([
    { retryOn: ['5xx', 'gateway-error', '503'], col: '503', want: '503' },
    { retryOn: ['5xx', 'gateway-error'], col: '503', want: 'gateway-error' },
    { retryOn: ['5xx', 'connect-failure'], col: 'connect', want: 'connect-failure' },
    { retryOn: ['5xx', 'reset'], col: 'connect', want: 'reset' },
    { retryOn: ['5xx', 'reset', 'refused-stream'], col: 'refused', want: 'refused-stream' },
    { retryOn: ['5xx', '409', 'retriable-4xx'], col: '409', want: '409' },
    { retryOn: ['5xx', '504', 'gateway-error'], col: 'timeout', want: 'per-try-timeout' },
  ] as { retryOn: RetryCondition[]; col: string; want: string }[])(
    'the most specific condition names the reason: $retryOn on $col → $want',
    ({ retryOn, col, want }) => {
      expect(retryReason(policyOn(...retryOn), outcome(col))).toBe(want);
    },
  );

  it.each([
    { col: 'connect', want: 'connect-failure' },
    { col: 'reset', want: 'reset' },
    { col: 'refused', want: 'refused-stream' },
    { col: '503', want: undefined },
  ])('the default policy on $col → $want', ({ col, want }) => {
    expect(retryReason(compileRetryPolicy(DEFAULTS.retries, false), outcome(col))).toBe(want);
  });

  it('never retries errors the sidecar decided itself', () => {
    const all = policyOn('connect-failure', 'refused-stream', 'reset', 'gateway-error', '5xx', 'retriable-4xx', '503');
    for (const code of ['no-route', 'no-healthy-upstream', 'access-denied', 'rate-limited', 'circuit-open', 'internal'] as const) {
      expect(retryReason(all, { kind: 'error', code })).toBeUndefined();
    }
  });
});

describe('compileRetryPolicy', () => {
  it('precomputes flags and statuses and freezes the result', () => {
    const p = compileRetryPolicy(spec(['reset', '503', '429']), true);
    expect(p).toMatchObject({ attempts: 3, perTryTimeoutMs: 500, retryNonIdempotent: true, backoff: { baseMs: 25, maxMs: 250 } });
    expect(p.on).toEqual({ connectFailure: false, refusedStream: false, reset: true, gatewayError: false, any5xx: false, retriable4xx: false });
    expect([...p.statuses].sort()).toEqual([429, 503]);
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.on)).toBe(true);
  });
});

describe('request gates', () => {
  it.each([
    ['GET', true], ['HEAD', true], ['OPTIONS', true], ['TRACE', true], ['PUT', true], ['DELETE', true],
    ['POST', false], ['PATCH', false], ['CONNECT', false], ['get', false],
  ] as const)('isIdempotent(%s) = %s', (method, want) => {
    expect(isIdempotent(method)).toBe(want);
  });

  it.each([
    { method: 'GET', nonIdem: false, replayable: true, want: true },
    { method: 'GET', nonIdem: false, replayable: false, want: false },
    { method: 'POST', nonIdem: false, replayable: true, want: false },
    { method: 'POST', nonIdem: true, replayable: true, want: true },
    { method: 'POST', nonIdem: true, replayable: false, want: false },
    { method: 'PUT', nonIdem: false, replayable: false, want: false },
  ])('mayRetryRequest $method retryNonIdempotent=$nonIdem replayable=$replayable → $want', ({ method, nonIdem, replayable, want }) => {
    expect(mayRetryRequest(compileRetryPolicy(spec(['5xx']), nonIdem), method, replayable)).toBe(want);
  });
});

describe('backoffDelay', () => {
  it('stays within [0, min(max, base·2^(n-1))] for any seed', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 80 }),
        fc.integer({ min: 0, max: 10_000 }),
        fc.integer({ min: 0, max: 100_000 }),
        fc.integer(),
        (n, baseMs, maxMs, seed) => {
          const random = seededRandom(seed);
          const cap = Math.min(maxMs, baseMs * 2 ** (n - 1));
          for (let i = 0; i < 20; i++) {
            const d = backoffDelay(n, { baseMs, maxMs }, random);
            if (!(d >= 0 && d <= cap)) return false;
          }
          return true;
        },
      ),
      { numRuns: 500 },
    );
  });

  it.each([
    [1, 12], [2, 25], [3, 50], [4, 100], [5, 125], [6, 125], [1000, 125],
  ])('with random() = 0.5, retry %i waits %i ms (base 25, max 250)', (n, want) => {
    expect(backoffDelay(n, { baseMs: 25, maxMs: 250 }, () => 0.5)).toBe(want);
  });
});

describe('clampPerTry', () => {
  it.each([
    { perTry: 0, deadline: undefined, now: 0, want: 0, why: 'no limits at all' },
    { perTry: 500, deadline: undefined, now: 0, want: 500, why: 'no overall timeout' },
    { perTry: 500, deadline: 0, now: 0, want: 500, why: 'deadline 0 is no overall timeout' },
    { perTry: 0, deadline: 2000, now: 500, want: 1500, why: 'no per-try limit: what is left' },
    { perTry: 500, deadline: 2000, now: 500, want: 500, why: 'plenty left' },
    { perTry: 500, deadline: 2000, now: 1800, want: 200, why: 'clamped to what is left' },
    { perTry: 500, deadline: 2000, now: 2000, want: 1, why: 'nothing left' },
    { perTry: 0, deadline: 2000, now: 2500, want: 1, why: 'past the deadline' },
  ])('$why: clampPerTry($perTry, $deadline, $now) = $want', ({ perTry, deadline, now, want }) => {
    expect(clampPerTry(perTry, deadline, now)).toBe(want);
  });
});

describe('RetryBudget', () => {
  const withdrawAll = (b: RetryBudget): number => {
    let n = 0;
    while (b.tryWithdraw()) n++;
    return n;
  };

  it('allows minPerSecond × 10 s + 20% of 1,000 requests = 300 retries', () => {
    const b = new RetryBudget({ ratio: 0.2, minPerSecond: 10 }, new FakeClock());
    for (let i = 0; i < 1000; i++) b.recordRequest();
    expect(withdrawAll(b)).toBe(300);
  });

  it('counts requests spread across the whole window', () => {
    const clock = new FakeClock();
    const b = new RetryBudget({ ratio: 0.2, minPerSecond: 10 }, clock);
    for (let s = 0; s < 10; s++) {
      if (s > 0) clock.advance(1000);
      for (let i = 0; i < 100; i++) b.recordRequest();
    }
    expect(clock.now()).toBe(9_000);
    expect(withdrawAll(b)).toBe(300);
  });

  it('recovers as the window passes', () => {
    const clock = new FakeClock();
    const b = new RetryBudget({ ratio: 0.2, minPerSecond: 10 }, clock);
    for (let i = 0; i < 1000; i++) b.recordRequest();
    expect(withdrawAll(b)).toBe(300);
    clock.advance(5_000);
    expect(b.tryWithdraw()).toBe(false);
    clock.advance(4_999);
    expect(b.tryWithdraw()).toBe(false);
    clock.advance(1);
    // The requests aged out with the retries: only the floor is left.
    expect(withdrawAll(b)).toBe(100);
    clock.advance(10_000);
    expect(withdrawAll(b)).toBe(100);
  });

  it('frees retries bucket by bucket', () => {
    const clock = new FakeClock();
    const b = new RetryBudget({ ratio: 0, minPerSecond: 1 }, clock);
    for (let s = 0; s < 10; s++) {
      expect(b.tryWithdraw()).toBe(true);
      clock.advance(1000);
    }
    // t = 10 s: the retry from t = 0 has expired, the other nine have not.
    expect(withdrawAll(b)).toBe(1);
  });
});
