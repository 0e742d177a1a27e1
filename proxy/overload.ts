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
}

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
  private timer: Timer | undefined;
  private expected = 0;
  private readonly intervalMs: number;

  constructor(private readonly o: ShedderOptions) {
    this.intervalMs = o.intervalMs ?? 25;
    if (o.lagTargetMs > 0) this.schedule();
  }

  private schedule(): void {
    this.expected = this.o.clock.now() + this.intervalMs;
    this.timer = this.o.clock.setTimeout(() => {
      this.lagMs = Math.max(0, this.o.clock.now() - this.expected);
      this.share = nextShedShare(this.share, this.lagMs, this.o.lagTargetMs);
      this.schedule();
    }, this.intervalMs);
  }

  /** Whether to refuse this request: nearly free while the loop keeps up (share 0). */
  shed(): boolean {
    return this.share > 0 && (this.o.inFlight?.() ?? Infinity) >= (this.o.minInFlight ?? 256) && this.o.random() < this.share;
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
    respondError(ex, new MeshError('overloaded', `sidecar overloaded (event loop ${Math.round(shedder.lagMs)} ms behind); refusing ${Math.round(shedder.share * 100)} % of new requests`));
    return Promise.resolve();
  };
}
