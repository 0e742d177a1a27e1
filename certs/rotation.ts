// Certificate rotation schedule: when to renew (70 % of the lifetime), how to back off after a failed renewal, and a driver on an injected clock.
import type { Clock, Random, Timer } from '../api/clock.js';

/** Renew at 70 % of the lifetime, leaving 30 % to ride out a control-plane outage before expiry. */
export const RENEW_FRACTION = 0.7;

const MIN_LEAD_MS = 1_000;
const RETRY_BASE_MS = 1_000;
const RETRY_CAP_MS = 30_000;
const JITTER = 0.2;

/**
 * Wall-clock time (ms) at which to renew. Never sooner than a second from now, so a certificate
 * already past its 70 % mark does not renew in a tight loop; never later than a second before
 * expiry; and never in the past, even when the certificate has already expired.
 */
export function renewAt(notBeforeMs: number, notAfterMs: number, nowMs: number): number {
  const planned = notBeforeMs + RENEW_FRACTION * (notAfterMs - notBeforeMs);
  const atLeast = Math.max(planned, nowMs + MIN_LEAD_MS);
  const atMost = Math.min(atLeast, notAfterMs - MIN_LEAD_MS);
  return Math.round(Math.max(atMost, nowMs));
}

/**
 * Delay (ms) before retrying after `failures` consecutive failed renewals: 1 s, 2 s, 4 s … ± 20 %,
 * never above 30 s. The cap is applied to the base before jitter as well as after, so a fleet that
 * has been failing for a while still spreads its retries over 24–30 s instead of all landing on 30 s.
 */
export function retryDelay(failures: number, random: () => number): number {
  const n = Math.max(1, Math.floor(failures));
  const base = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** (n - 1));
  const jittered = base * (1 - JITTER + 2 * JITTER * random());
  return Math.round(Math.min(RETRY_CAP_MS, jittered));
}

/** What a successful renewal reports back: the new certificate's validity window (wall-clock ms). */
export interface Validity {
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
}

export interface RotationOptions {
  /** The certificate in use now. */
  readonly current: Validity;
  /** Obtains and installs a new certificate; rejects on failure. */
  readonly renew: () => Promise<Validity>;
  /** Timers; `Clock.now()` is monotonic, so wall time comes from `wallNow`. */
  readonly clock: Clock;
  readonly random: Random;
  /** Wall-clock ms, comparable with certificate dates (default Date.now). */
  readonly wallNow?: () => number;
  readonly onError?: (err: unknown, failures: number, retryInMs: number) => void;
}

export interface Rotation {
  /** Successful renewals since start. */
  readonly rotations: number;
  /** Wall-clock ms of the next scheduled attempt, undefined once stopped. */
  readonly nextAttemptAt: number | undefined;
  stop(): void;
}

/**
 * Renews at renewAt(), and after a failure retries with retryDelay() but not past the 1 s-before-expiry
 * point while the certificate is still good, so a failing control plane is tried right up to the end.
 */
export function startRotation(opts: RotationOptions): Rotation {
  const wallNow = opts.wallNow ?? Date.now;
  let current = opts.current;
  let rotations = 0;
  let failures = 0;
  let timer: Timer | undefined;
  let nextAttemptAt: number | undefined;
  let stopped = false;

  const schedule = (at: number): void => {
    nextAttemptAt = at;
    timer = opts.clock.setTimeout(() => void attempt(), Math.max(0, at - wallNow()));
  };

  const attempt = async (): Promise<void> => {
    timer = undefined;
    try {
      const next = await opts.renew();
      if (stopped) return;
      current = next;
      rotations++;
      failures = 0;
      schedule(renewAt(current.notBeforeMs, current.notAfterMs, wallNow()));
    } catch (err) {
      if (stopped) return;
      failures++;
      const now = wallNow();
      const delay = retryDelay(failures, opts.random);
      const lastChance = current.notAfterMs - MIN_LEAD_MS;
      // Once past the last chance, plain backoff: a fleet of expired sidecars must not hammer a recovering CA.
      const at = now < lastChance ? Math.min(now + delay, lastChance) : now + delay;
      opts.onError?.(err, failures, at - now);
      schedule(at);
    }
  };

  schedule(renewAt(current.notBeforeMs, current.notAfterMs, wallNow()));
  return {
    get rotations() {
      return rotations;
    },
    get nextAttemptAt() {
      return stopped ? undefined : nextAttemptAt;
    },
    stop() {
      stopped = true;
      timer?.cancel();
      timer = undefined;
    },
  };
}
