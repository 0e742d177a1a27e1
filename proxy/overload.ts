// Load shedding: when the event loop falls behind, refuse a growing share of new requests at once (503 overloaded).
import { MeshError } from '../api/errors.js';
import type { Clock, Random, Timer } from '../api/clock.js';
import type { Exchange } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';

/**
 * Why the event loop and not a request count: the sidecar's own CPU is what runs out first (every request is parsed,
 * encrypted and forwarded on one thread), and event-loop lag measures exactly that, whatever the mix of requests,
 * body sizes and TLS handshakes. A request admitted into a loop that is 200 ms behind waits those 200 ms before any
 * stage runs; refusing some new requests at the door (a 503 costs a small fraction of a forwarded request) keeps the
 * lag, and so the latency of the admitted ones, near the target. Envoy's overload manager and Netflix's
 * concurrency-limits work the same way: a measured pressure signal, a share refused, adjusted continuously.
 */
export interface ShedderOptions {
  /** Lag above which shedding starts; 0 turns shedding off. */
  readonly lagTargetMs: number;
  /** How often the loop is sampled (a timer's lateness is the lag). */
  readonly intervalMs?: number;
  readonly clock: Clock;
  readonly random: Random;
  /** Requests in flight in this sidecar now (both directions). */
  readonly inFlight?: () => number;
  /**
   * Below this many requests in flight, nothing is shed whatever the lag. A late event loop with few requests is not
   * overloaded by them: it is starved of CPU by something else (other processes, a GC pause), and refusing a handful
   * of requests would not give it back any time; it would only fail them. Seen in CI, where parallel test files
   * starve every sidecar at once. Default 256: more than a test's or a small
   * service's burst, fewer than an open-loop overload piles up within a second.
   */
  readonly minInFlight?: number;
  /**
   * Exchanges finished so far (both directions, shed ones included): with the shedder's own refusal count, the
   * completion rate of admitted requests, and from it how long the requests in flight will wait (Little's law).
   */
  readonly finished?: () => number;
}

/**
 * Shed only while the requests in flight would wait longer than this (in-flight ÷ completion rate, Little's law),
 * and never for lag alone. A saturated loop answering its queue within a second is serving well: callers that wait
 * for their answers (nearly all RPC clients) cannot pile up more, and refusing them only costs CPU, since each comes
 * back at once. At 2,000 such connections a lag-only shedder spent the sidecar's CPU refusing, went to its cap and
 * cut useful throughput to a fifth (defect 29). Queues outgrow a second only under open-loop excess, which is what
 * shedding is for. Ten times the lag target: 1 s at the default 100 ms; the queue must stay that long for as long.
 */
export const QUEUE_TARGET_PER_LAG = 10;
/** Weight of each 25 ms sample in the completion-rate average (time constant about 250 ms). */
const RATE_ALPHA = 0.1;

/** Increase per sample over the target, decrease per sample under it: quick to react, slow to let go (no flapping). */
const STEP_UP = 0.1;
const STEP_DOWN = 0.02;
/** Never refuse everything: some requests keep flowing, so recovery is seen and callers' retries can succeed. */
const MAX_SHARE = 0.95;

/** The next refused share, from the current one and the lag just measured (pure, for tests). */
export function nextShedShare(share: number, lagMs: number, targetMs: number): number {
  if (lagMs > targetMs) return Math.min(MAX_SHARE, share + STEP_UP * Math.min(4, lagMs / targetMs));
  return Math.max(0, share - STEP_DOWN);
}

export class LoadShedder {
  /** The share of new requests refused now, 0..MAX_SHARE. */
  share = 0;
  /** The lag of the last sample, ms. */
  lagMs = 0;
  /** Admitted requests finished per second, smoothed; how long the queue would take to drain is inFlight / this. */
  completionRate = 0;
  /** The estimated queue wait of the last sample, ms (Infinity while requests are in flight and none finishes). */
  queueMs = 0;
  /** Requests refused by this shedder so far. */
  refused = 0;
  private timer: Timer | undefined;
  private expected = 0;
  private lastAt = 0;
  private lastServed = 0;
  /** Since when the queue estimate has been over its target (undefined: it is not). */
  private longSince: number | undefined;
  private readonly intervalMs: number;
  /** The queue estimate above which the lag counts, ms. */
  private readonly queueTargetMs: number;

  constructor(private readonly o: ShedderOptions) {
    this.intervalMs = o.intervalMs ?? 25;
    this.queueTargetMs = o.lagTargetMs * QUEUE_TARGET_PER_LAG;
    if (o.lagTargetMs > 0) {
      this.lastAt = o.clock.now();
      this.lastServed = this.served();
      this.schedule();
    }
  }

  private served(): number {
    return (this.o.finished?.() ?? 0) - this.refused;
  }

  /** Samples the completion rate and the queue wait it implies; without `finished`, lag alone decides (unit tests). */
  private sampleQueue(now: number): number {
    if (!this.o.finished) return Infinity;
    const served = this.served();
    const dt = Math.max(1, now - this.lastAt) / 1000;
    this.completionRate += RATE_ALPHA * ((served - this.lastServed) / dt - this.completionRate);
    this.lastAt = now;
    this.lastServed = served;
    const inFlight = this.o.inFlight?.() ?? 0;
    return inFlight === 0 ? 0 : this.completionRate > 0 ? (inFlight / this.completionRate) * 1000 : Infinity;
  }

  private schedule(): void {
    this.expected = this.o.clock.now() + this.intervalMs;
    this.timer = this.o.clock.setTimeout(() => {
      const now = this.o.clock.now();
      this.lagMs = Math.max(0, now - this.expected);
      this.queueMs = this.sampleQueue(now);
      // A short queue counts as no lag: the share then falls however late the loop is. So does a long one until it has
      // lasted as long as the target: when a thousand callers connect at once, the queue estimate jumps before the
      // completion rate has caught up (it starts from idle), and without the wait a start-up took 95 % for seconds.
      if (this.queueMs <= this.queueTargetMs) this.longSince = undefined;
      else this.longSince ??= now;
      const long = !this.o.finished || (this.longSince !== undefined && now - this.longSince >= this.queueTargetMs);
      const lag = long ? this.lagMs : 0;
      this.share = nextShedShare(this.share, lag, this.o.lagTargetMs);
      this.schedule();
    }, this.intervalMs);
  }

  /** Whether to refuse this request: nearly free while the loop keeps up (share 0). */
  shed(): boolean {
    if (this.share === 0 || (this.o.inFlight?.() ?? Infinity) < (this.o.minInFlight ?? 256) || this.o.random() >= this.share) return false;
    this.refused++;
    return true;
  }

  stop(): void {
    this.timer?.cancel();
  }
}

/** The admission stage: a refused request gets 503 `overloaded` before routing, and is counted. */
export function overloadLayer(shedder: LoadShedder | undefined, onShed: () => void): Layer | undefined {
  if (!shedder) return undefined;
  return (next: Handler): Handler => (ex: Exchange) => {
    if (!shedder.shed()) return next(ex);
    onShed();
    respondError(ex, new MeshError('overloaded', `sidecar overloaded (event loop ${Math.round(shedder.lagMs)} ms behind, queue ${Math.round(shedder.queueMs)} ms); refusing ${Math.round(shedder.share * 100)} % of new requests`));
    return Promise.resolve();
  };
}
