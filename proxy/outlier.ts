// Outlier detection for one destination service (Envoy's consecutive-5xx detector): decides when endpoints are ejected and un-ejected, on an injected clock.
import type { Clock, Timer } from '../api/clock.js';
import type { Endpoint } from './endpoint.js';

/** TrafficPolicySpec.outlierDetection. */
/** Upper bound of one ejection however often the endpoint was ejected before (Envoy's max_ejection_time default). */
export const MAX_EJECTION_MS = 300_000;

export interface OutlierConfig {
  readonly consecutiveFailures: number;
  readonly intervalMs: number;
  readonly baseEjectionTimeMs: number;
  readonly maxEjectionPercent: number;
}

export interface OutlierHooks {
  /** The ejected set changed; the cluster rebuilds its pickers. */
  onChange(): void;
  /** One endpoint was ejected (for mesh_endpoint_ejections_total). */
  onEject(ep: Endpoint): void;
}

interface Tracked {
  /** Un-ejection timer while ejected. */
  timer: Timer | undefined;
  /** Clock time of the last un-ejection; decay waits a full quiet interval after it. */
  unejectedAt: number;
}

/**
 * The counters themselves live on Endpoint (consecutiveFailures, ejectedUntil, timesEjected) so pickers and
 * /clusters can read them; this class is the only writer. The caller classifies outcomes: connect errors
 * and 5xx are failures, anything else a success.
 */
export class OutlierDetector {
  private readonly tracked = new Map<Endpoint, Tracked>();
  private tick: Timer | undefined;
  private closed = false;

  constructor(
    private readonly cfg: OutlierConfig,
    private readonly clock: Clock,
    private readonly hooks: OutlierHooks,
  ) {}

  /**
   * Endpoints already known (the same objects) keep their state. Removed ones are forgotten, and
   * onChange is not called: the caller is rebuilding its pickers for the new set anyway.
   */
  setEndpoints(eps: readonly Endpoint[]): void {
    if (this.closed) return;
    const next = new Set(eps);
    for (const [ep, t] of this.tracked) {
      if (next.has(ep)) continue;
      t.timer?.cancel();
      this.tracked.delete(ep);
      ep.consecutiveFailures = 0;
      ep.ejectedUntil = 0;
      ep.timesEjected = 0;
    }
    for (const ep of eps) {
      if (this.tracked.has(ep)) continue;
      const t: Tracked = { timer: undefined, unejectedAt: -Infinity };
      this.tracked.set(ep, t);
      // An endpoint handed over already ejected (e.g. by a detector this one replaces) still needs its way back.
      if (ep.ejected) t.timer = this.clock.setTimeout(() => this.uneject(ep), ep.ejectedUntil - this.clock.now());
    }
    this.armTick();
  }

  /** Whether this detector ejects at all (a threshold or base time of 0 turns it off). */
  get enabled(): boolean {
    return !this.closed && this.cfg.consecutiveFailures > 0 && this.cfg.baseEjectionTimeMs > 0;
  }

  reportSuccess(ep: Endpoint): void {
    if (this.closed || !this.tracked.has(ep)) return;
    ep.consecutiveFailures = 0;
  }

  reportFailure(ep: Endpoint): void {
    if (this.closed || !this.tracked.has(ep) || ep.ejected) return;
    ep.consecutiveFailures += 1;
    const threshold = this.cfg.consecutiveFailures;
    if (threshold <= 0 || this.cfg.baseEjectionTimeMs <= 0) return;
    // `>=`, not `===`: a failure refused by the percentage cap stays over the threshold and ejects on a later failure.
    if (ep.consecutiveFailures >= threshold && this.mayEjectOneMore()) this.eject(ep);
  }

  close(): void {
    this.closed = true;
    for (const t of this.tracked.values()) t.timer?.cancel();
    this.tick?.cancel();
    this.tick = undefined;
    this.tracked.clear();
  }

  /** Ejecting must never take out more than maxEjectionPercent of the service; otherwise a bad deploy empties it. */
  private mayEjectOneMore(): boolean {
    let ejected = 0;
    for (const ep of this.tracked.keys()) if (ep.ejected) ejected++;
    const max = Math.floor((this.tracked.size * this.cfg.maxEjectionPercent) / 100);
    return ejected + 1 <= max;
  }

  private eject(ep: Endpoint): void {
    const t = this.tracked.get(ep);
    if (!t) return;
    ep.timesEjected += 1;
    // Envoy's max_ejection_time default: a flapping endpoint is retried at least every 5 minutes.
    const duration = Math.min(this.cfg.baseEjectionTimeMs * ep.timesEjected, Math.max(MAX_EJECTION_MS, this.cfg.baseEjectionTimeMs));
    ep.ejectedUntil = this.clock.now() + duration;
    t.timer = this.clock.setTimeout(() => this.uneject(ep), duration);
    this.armTick();
    this.hooks.onEject(ep);
    this.hooks.onChange();
  }

  private uneject(ep: Endpoint): void {
    const t = this.tracked.get(ep);
    if (this.closed || !t) return;
    t.timer = undefined;
    t.unejectedAt = this.clock.now();
    ep.ejectedUntil = 0;
    // A fresh start: failures from before the ejection must not eject it again on its first error.
    ep.consecutiveFailures = 0;
    this.hooks.onChange();
  }

  /** The decay tick runs only while some endpoint has a multiplier to decay. */
  private armTick(): void {
    if (this.closed || this.tick || this.cfg.intervalMs <= 0) return;
    let pending = false;
    for (const ep of this.tracked.keys()) if (ep.timesEjected > 0) pending = true;
    if (pending) this.tick = this.clock.setTimeout(() => this.onTick(), this.cfg.intervalMs);
  }

  /** Envoy's multiplier decay: each quiet interval shortens the next ejection by one base time. */
  private onTick(): void {
    this.tick = undefined;
    const now = this.clock.now();
    for (const [ep, t] of this.tracked) {
      if (!ep.ejected && ep.timesEjected > 0 && now - t.unejectedAt >= this.cfg.intervalMs) ep.timesEjected -= 1;
    }
    this.armTick();
  }
}
