// Inbound rate limiting: token buckets on an injected clock, one per limited service or one per client (`rateLimit.key`).
import type { Clock } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import type { RateLimitKey, RateLimitSpec } from '../api/resources.js';
import type { Exchange } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';

/** What the rate-limit layer asks before letting a request through. */
export interface RateLimiter {
  take(ex: Exchange): boolean;
}

/** Float slack so refills like 3 rps over 333⅓ ms still produce a whole token. */
const EPSILON = 1e-9;

/**
 * Holds up to `burst` tokens (at least one, or nothing could ever pass), starts full, and refills
 * continuously at `requestsPerSecond`. Refilling lazily on take() means no timer per bucket.
 * It ignores the exchange, so the unkeyed path costs what it did before keys existed.
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

/** Distinct clients remembered at once; beyond it the least recently seen one is forgotten. */
export const MAX_KEYS = 10_000;

/**
 * Header values are cut to their first 256 bytes rather than hashed: cutting costs nothing per request, and values that
 * differ only after byte 256 share one bucket, which limits them more, never less. With MAX_KEYS this bounds the keys
 * to ~2.5 MB however long the values sent. Node decodes header values as latin1, so 256 characters are 256 bytes.
 */
export const MAX_KEY_BYTES = 256;

/**
 * The client a request counts against, or undefined for the shared "no key" bucket: a missing or empty header, or a
 * plaintext caller (permissive mode) under `source`. Node joins repeated header lines with ", ", and HTTP lets a
 * recipient treat `a, b` as two lines, so the first comma-separated element is the key either way.
 */
export function clientKey(key: RateLimitKey, ex: Pick<Exchange, 'req' | 'peer'>): string | undefined {
  if (key === 'source') return ex.peer?.service;
  const raw = ex.req.headers[key.header];
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (v === undefined) return undefined;
  let s = v.length > MAX_KEY_BYTES ? v.slice(0, MAX_KEY_BYTES) : v;
  const comma = s.indexOf(',');
  if (comma >= 0) s = s.slice(0, comma);
  s = s.trim();
  return s === '' ? undefined : s;
}

/**
 * One token bucket per client, each with the policy's rate and burst, in a Map kept in least-recently-used order
 * (a hit is deleted and re-inserted, so the first key is the stalest) and bounded to `maxKeys`. Requests without a
 * key share one bucket kept outside the map, so no client-chosen value can collide with it or evict it.
 *
 * An evicted client's bucket restarts full when it returns. That is the usual trade-off for bounded per-client state
 * (Envoy's local rate limit descriptors have it too): a flood of new keys can reset a quiet client's bucket, and a
 * client that rotates header values gets a fresh burst each time. Per-client buckets share capacity fairly among
 * clients who send their own key honestly; they do not protect the backend. The service-wide limits do that: the
 * connection pool's maxConnections and maxPendingRequests in front of the app, and `total`: one more bucket every
 * request takes from after its own, as Envoy's local rate limit consumes its default bucket beside a descriptor's.
 */
export class KeyedTokenBuckets implements RateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly noKey: TokenBucket;
  private readonly total: TokenBucket | undefined;
  /** The key touched last: a client sending in a row skips the delete and re-insert. */
  private newest: string | undefined;

  constructor(
    private readonly cfg: RateLimitSpec & { readonly key: RateLimitKey },
    private readonly clock: Clock,
    private readonly maxKeys = MAX_KEYS,
  ) {
    this.noKey = new TokenBucket(cfg, clock);
    this.total = cfg.total && new TokenBucket(cfg.total, clock);
  }

  /** Clients with a bucket now, not counting the shared "no key" one. */
  get size(): number {
    return this.buckets.size;
  }

  take(ex: Exchange): boolean {
    // The client's own bucket first: a client over its share is refused without spending the service-wide tokens.
    return this.takeFor(clientKey(this.cfg.key, ex)) && (this.total === undefined || this.total.take());
  }

  /** take() once the key is known; undefined takes from the shared "no key" bucket. */
  takeFor(key: string | undefined): boolean {
    if (key === undefined) return this.noKey.take();
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value as string);
      b = new TokenBucket(this.cfg, this.clock);
      this.buckets.set(key, b);
    } else if (key !== this.newest) {
      this.buckets.delete(key);
      this.buckets.set(key, b);
    }
    this.newest = key;
    return b.take();
  }
}

const sameKey = (a: RateLimitKey | undefined, b: RateLimitKey | undefined): boolean =>
  a === b || (typeof a === 'object' && typeof b === 'object' && a.header === b.header);

/** Whether two specs describe the same limit, so the buckets built for one can serve the other. */
export function sameRateLimit(a: RateLimitSpec, b: RateLimitSpec): boolean {
  return a.requestsPerSecond === b.requestsPerSecond && a.burst === b.burst && sameKey(a.key, b.key)
    && a.total?.requestsPerSecond === b.total?.requestsPerSecond && a.total?.burst === b.total?.burst;
}

/**
 * The limiter for a snapshot. The previous one (and its tokens) is kept when the limit did not change, so a config
 * push neither resets the buckets nor forgets the clients.
 */
export function compileRateLimiter(
  spec: RateLimitSpec | undefined,
  clock: Clock,
  previous?: { readonly spec: RateLimitSpec | undefined; readonly limiter: RateLimiter | undefined },
): RateLimiter | undefined {
  if (!spec) return undefined;
  if (previous?.limiter && previous.spec && sameRateLimit(previous.spec, spec)) return previous.limiter;
  return spec.key ? new KeyedTokenBuckets({ ...spec, key: spec.key }, clock) : new TokenBucket(spec, clock);
}

/** The inbound rate-limit stage: 429 `rate-limited` once the request's bucket is empty. */
export function rateLimitLayer(limiter: () => RateLimiter | undefined, onLimited: () => void): Layer {
  return (next: Handler): Handler => (ex: Exchange) => {
    const l = limiter();
    if (l && !l.take(ex)) {
      onLimited();
      respondError(ex, new MeshError('rate-limited', `rate limit exceeded for service "${ex.authority}"`));
      return Promise.resolve();
    }
    return next(ex);
  };
}
