// Retry decisions, pure and clock-injected: the compiled RetryPolicy, wouldRetry-style checks, backoff, per-try clamping and the per-service RetryBudget.
import type { RetryCondition, RetrySpec } from '../api/resources.js';
import type { ErrorCode } from '../api/errors.js';
import type { Clock, Random } from '../api/clock.js';

/** Compiled once per snapshot from a rule's RetrySpec; shared by every request on that rule. */
export interface RetryPolicy {
  /** Total tries including the first (at least 1). */
  readonly attempts: number;
  /** 0 = no per-try limit. */
  readonly perTryTimeoutMs: number;
  readonly backoff: { readonly baseMs: number; readonly maxMs: number };
  readonly retryNonIdempotent: boolean;
  /** The configured list, kept for config_dump. */
  readonly retryOn: readonly RetryCondition[];
  readonly on: {
    readonly connectFailure: boolean;
    readonly refusedStream: boolean;
    readonly reset: boolean;
    readonly gatewayError: boolean;
    readonly any5xx: boolean;
    readonly retriable4xx: boolean;
  };
  /** gRPC status code → the condition naming it, for the gRPC conditions this policy lists. */
  readonly grpc: ReadonlyMap<number, RetryReason>;
  /** Exact statuses from numeric conditions such as "503". */
  readonly statuses: ReadonlySet<number>;
}

/** How one try ended, as the retry layer saw it. */
export type AttemptOutcome =
  /** `grpcStatus` only for a Trailers-Only gRPC response: the call ended before any response message. */
  | { readonly kind: 'response'; readonly status: number; readonly grpcStatus?: number }
  | { readonly kind: 'error'; readonly code: ErrorCode; readonly refusedStream?: boolean };

/** The `reason` label of mesh_retries_total: a fixed set plus the configured numeric statuses. */
export type RetryReason =
  | 'connect-failure'
  | 'reset'
  | 'refused-stream'
  | 'per-try-timeout'
  | '5xx'
  | 'gateway-error'
  | 'retriable-4xx'
  | GrpcCondition
  | `${number}`;

type GrpcCondition = 'unavailable' | 'cancelled' | 'deadline-exceeded' | 'resource-exhausted';

/** The gRPC retry conditions and their status codes (gRPC's codes.proto). */
const GRPC_CONDITIONS: readonly (readonly [GrpcCondition, number])[] = [
  ['cancelled', 1], ['deadline-exceeded', 4], ['resource-exhausted', 8], ['unavailable', 14],
];

/**
 * Reasons that mean the server never started on the request: nothing was connected, the stream was refused, or a
 * gRPC server answered Trailers-Only with a status the route lists. A gRPC call (always POST) may be retried on these.
 */
export function unprocessed(reason: RetryReason): boolean {
  return reason === 'connect-failure' || reason === 'refused-stream' || GRPC_CONDITIONS.some(([c]) => c === reason);
}

export function compileRetryPolicy(spec: RetrySpec, retryNonIdempotent: boolean): RetryPolicy {
  const has = (c: RetryCondition): boolean => spec.retryOn.includes(c);
  const statuses = new Set<number>();
  for (const c of spec.retryOn) {
    const n = Number(c);
    // Named conditions parse to NaN; the validator has already rejected anything else that is not a status.
    if (Number.isInteger(n) && n >= 100 && n <= 599) statuses.add(n);
  }
  return Object.freeze({
    attempts: Math.max(1, Math.floor(spec.attempts)),
    perTryTimeoutMs: Math.max(0, spec.perTryTimeoutMs),
    backoff: Object.freeze({ baseMs: spec.backoff.baseMs, maxMs: spec.backoff.maxMs }),
    retryNonIdempotent,
    retryOn: Object.freeze([...spec.retryOn]),
    on: Object.freeze({
      connectFailure: has('connect-failure'),
      refusedStream: has('refused-stream'),
      reset: has('reset'),
      gatewayError: has('gateway-error'),
      any5xx: has('5xx'),
      retriable4xx: has('retriable-4xx'),
    }),
    statuses,
    grpc: new Map(GRPC_CONDITIONS.filter(([c]) => has(c)).map(([c, code]) => [code, c as RetryReason])),
  });
}

/**
 * Which condition makes `outcome` retriable, or undefined. When several match, the most specific wins
 * (an exact status before retriable-4xx before gateway-error before 5xx) so the metric label does not
 * depend on the order conditions were written in.
 *
 * As in Envoy's RetryStateImpl, an attempt that got no response at all (connect failure, reset, refused
 * stream, per-try timeout) counts under `reset`, `gateway-error` and `5xx`, because the sidecar answers
 * it with a 502/503/504 itself. A per-try timeout is always labelled `per-try-timeout`, since no
 * condition is named after it; it also matches a "504" condition, the status the caller would see.
 */
export function retryReason(policy: RetryPolicy, outcome: AttemptOutcome): RetryReason | undefined {
  const on = policy.on;
  if (outcome.kind === 'response') {
    if (outcome.grpcStatus !== undefined) {
      const g = policy.grpc.get(outcome.grpcStatus);
      if (g !== undefined) return g;
    }
    const s = outcome.status;
    if (policy.statuses.has(s)) return `${s}`;
    if (on.retriable4xx && s === 409) return 'retriable-4xx';
    if (on.gatewayError && (s === 502 || s === 503 || s === 504)) return 'gateway-error';
    if (on.any5xx && s >= 500 && s <= 599) return '5xx';
    return undefined;
  }
  const noResponse = on.reset || on.gatewayError || on.any5xx;
  const broad = (): RetryReason | undefined =>
    on.reset ? 'reset' : on.gatewayError ? 'gateway-error' : on.any5xx ? '5xx' : undefined;
  switch (outcome.code) {
    case 'upstream-connect-failed':
      return on.connectFailure ? 'connect-failure' : broad();
    case 'upstream-reset':
      if (outcome.refusedStream && on.refusedStream) return 'refused-stream';
      return broad();
    case 'upstream-timeout':
      return noResponse || policy.statuses.has(504) ? 'per-try-timeout' : undefined;
    default:
      // Everything else the sidecar decided itself (no route, denied, rate limited…): another try would get the same answer.
      return undefined;
  }
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** RFC 9110 §9.2.2. Methods are case-sensitive, so "get" is not GET and is treated as unsafe. */
export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** Whether this request may ever be retried; `bodyReplayable` is true for a request without a body. */
export function mayRetryRequest(policy: RetryPolicy, method: string, bodyReplayable: boolean): boolean {
  return (policy.retryNonIdempotent || isIdempotent(method)) && bodyReplayable;
}

/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): spreading
 * retries over the whole interval keeps a burst of failures from retrying in lockstep.
 * `retryNumber` is 1 for the first retry.
 */
export function backoffDelay(
  retryNumber: number,
  backoff: { readonly baseMs: number; readonly maxMs: number },
  random: Random,
): number {
  const exponent = Math.max(0, Math.floor(retryNumber) - 1);
  // 2 ** large overflows to Infinity, which min() turns back into maxMs.
  const cap = Math.max(0, Math.min(backoff.maxMs, backoff.baseMs * 2 ** exponent));
  return Math.floor(random() * cap);
}

/**
 * The timeout for the next try: the per-try limit, but never past the overall deadline (an absolute clock
 * time). 0 means "no limit" both as input and as result. When the deadline has already passed this returns
 * 1 rather than 0, so the try fails at once instead of running unbounded.
 */
export function clampPerTry(perTryTimeoutMs: number, deadline: number | undefined, now: number): number {
  if (deadline === undefined || deadline === 0) return perTryTimeoutMs;
  const left = Math.max(1, deadline - now);
  return perTryTimeoutMs === 0 ? left : Math.min(perTryTimeoutMs, left);
}

const BUCKETS = 10;
/** Float slack so that e.g. 0.29 × 100 still allows the 29th retry. */
const EPSILON = 1e-9;

/**
 * Linkerd's retry budget, one per destination service: retries may add at most `ratio` of the original
 * traffic plus a floor of `minPerSecond`, so a struggling service is not flattened by a retry storm.
 * Counts live in a ring of 10 buckets spanning the window, so memory is constant and old traffic ages out.
 */
export class RetryBudget {
  private readonly bucketMs: number;
  private readonly limitFloor: number;
  private readonly epochs = new Array<number>(BUCKETS).fill(-Infinity);
  private readonly requests = new Array<number>(BUCKETS).fill(0);
  private readonly retries = new Array<number>(BUCKETS).fill(0);

  constructor(
    private readonly cfg: { readonly ratio: number; readonly minPerSecond: number },
    private readonly clock: Clock,
    windowMs = 10_000,
  ) {
    this.bucketMs = windowMs / BUCKETS;
    this.limitFloor = cfg.minPerSecond * (windowMs / 1000);
  }

  /** Each original request deposits into the budget. */
  recordRequest(): void {
    this.requests[this.current()] += 1;
  }

  /** Takes one retry from the budget if it allows; a refused retry is not counted. */
  tryWithdraw(): boolean {
    const slot = this.current();
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < BUCKETS; i++) {
      requests += this.requests[i];
      retries += this.retries[i];
    }
    if (retries + 1 > this.limitFloor + this.cfg.ratio * requests + EPSILON) return false;
    this.retries[slot] += 1;
    return true;
  }

  /** Clears every bucket that has fallen out of the window and returns the slot for now. */
  private current(): number {
    const epoch = Math.floor(this.clock.now() / this.bucketMs);
    for (let i = 0; i < BUCKETS; i++) {
      if (this.epochs[i] <= epoch - BUCKETS) {
        this.requests[i] = 0;
        this.retries[i] = 0;
      }
    }
    const slot = ((epoch % BUCKETS) + BUCKETS) % BUCKETS;
    if (this.epochs[slot] !== epoch) {
      this.epochs[slot] = epoch;
      this.requests[slot] = 0;
      this.retries[slot] = 0;
    }
    return slot;
  }
}
