// Inbound rate limiting: a token bucket per limited service, on an injected clock.
import type { Clock } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import type { Exchange } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';

/** What the rate-limit layer asks before letting a request through. */
export interface RateLimiter {
  take(): boolean;
}

/** Float slack so refills like 3 rps over 333⅓ ms still produce a whole token. */
const EPSILON = 1e-9;

/**
 * Holds up to `burst` tokens (at least one, or nothing could ever pass), starts full, and refills
 * continuously at `requestsPerSecond`. Refilling lazily on take() means no timer per bucket.
 */
export class TokenBucket implements RateLimiter {
  private readonly capacity: number;
  private readonly perMs: number;
  private tokens: number;
  private last: number;

  constructor(
    cfg: { readonly requestsPerSecond: number; readonly burst: number },
    private readonly clock: Clock,
  ) {
    this.capacity = Math.max(1, cfg.burst);
    this.perMs = Math.max(0, cfg.requestsPerSecond) / 1000;
    this.tokens = this.capacity;
    this.last = clock.now();
  }

  take(): boolean {
    const now = this.clock.now();
    const elapsed = Math.max(0, now - this.last);
    this.last = now;
    this.tokens = Math.min(this.capacity, this.tokens + elapsed * this.perMs);
    if (this.tokens < 1 - EPSILON) return false;
    this.tokens = Math.max(0, this.tokens - 1);
    return true;
  }
}

/** The inbound rate-limit stage: 429 `rate-limited` once the service's bucket is empty. */
export function rateLimitLayer(limiter: () => RateLimiter | undefined, onLimited: () => void): Layer {
  return (next: Handler): Handler => (ex: Exchange) => {
    const l = limiter();
    if (l && !l.take()) {
      onLimited();
      respondError(ex, new MeshError('rate-limited', `rate limit exceeded for service "${ex.authority}"`));
      return Promise.resolve();
    }
    return next(ex);
  };
}
