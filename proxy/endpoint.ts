// One upstream endpoint as the balancer and outlier detector see it: identity plus live load and health.
import type { EndpointSpec } from '../api/resources.js';

/** Peak-EWMA decay constant (Finagle and Linkerd use 10 s). */
export const EWMA_DECAY_MS = 10_000;
/** RTT assumed for an endpoint never measured, so new endpoints get tried but not flooded. */
export const EWMA_DEFAULT_RTT_MS = 30;

export class Endpoint {
  readonly id: string;
  readonly host: string;
  readonly port: number;
  readonly labels: Readonly<Record<string, string>>;

  /** Requests currently outstanding to this endpoint. */
  inflight = 0;
  /** Peak-EWMA round-trip estimate in ms and when it was last updated (clock ms). */
  ewmaMs = EWMA_DEFAULT_RTT_MS;
  ewmaAt = 0;

  /** Outlier-detection state: owned by proxy/outlier.ts. */
  consecutiveFailures = 0;
  ejectedUntil = 0;
  timesEjected = 0;

  constructor(spec: EndpointSpec) {
    this.id = `${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}`;
    this.host = spec.host;
    this.port = spec.port;
    this.labels = spec.labels;
  }

  get ejected(): boolean {
    return this.ejectedUntil > 0;
  }

  /** The EWMA estimate decayed to `now`; pure read. */
  rttAt(now: number): number {
    const dt = Math.max(0, now - this.ewmaAt);
    const w = Math.exp(-dt / EWMA_DECAY_MS);
    // With no new observations the estimate decays toward the default, so a once-slow endpoint gets retried.
    return this.ewmaMs * w + EWMA_DEFAULT_RTT_MS * (1 - w);
  }

  /** Record one finished request's latency: peaks are taken at once, improvements are averaged in. */
  observe(rttMs: number, now: number): void {
    const current = this.rttAt(now);
    if (rttMs > current) {
      this.ewmaMs = rttMs;
    } else {
      const w = Math.exp(-Math.max(0, now - this.ewmaAt) / EWMA_DECAY_MS);
      this.ewmaMs = current * w + rttMs * (1 - w);
    }
    this.ewmaAt = now;
  }
}

/**
 * An immutable picker over one endpoint set, rebuilt whenever endpoints or their health change.
 * `pick` is synchronous; `exclude` holds endpoints already tried by this request, avoided when others exist.
 */
export interface Picker {
  pick(hashKey: string | undefined, exclude: ReadonlySet<Endpoint> | undefined): Endpoint | undefined;
}
