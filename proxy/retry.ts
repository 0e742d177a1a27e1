// The retry and timeout layer: tries until success, a non-retriable outcome, no attempts, no budget or the route timeout.
import { MeshError } from '../api/errors.js';
import type { Clock, Random, Timer } from '../api/clock.js';
import { forReplay, isReplayable } from './body.js';
import type { Cluster } from './cluster.js';
import type { Endpoint } from './endpoint.js';
import { closedEarly, streamGone, type Exchange } from './exchange.js';
import type { Handler } from './pipeline-types.js';
import type { AttemptResult } from './pool.js';
import { respondError } from './respond.js';
import { backoffDelay, clampPerTry, isIdempotent, retryReason, unprocessed, type AttemptOutcome, type RetryReason } from './retry-policy.js';
import type { Telemetry } from './telemetry.js';

/** What one try needs from the retry layer. */
export interface Try {
  readonly cluster: Cluster;
  readonly subset: string;
  /** Endpoints this request already tried: the balancer avoids them (DESIGN.md §3). */
  readonly exclude: Set<Endpoint>;
  readonly perTryTimeoutMs: number;
  /** Whether to send a response with this status (and Trailers-Only grpc-status) downstream; false means it will be retried. */
  readonly accept: (status: number, grpcStatus?: number) => boolean;
  /** Gives the retry layer a way to cancel the try (route timeout, client gone). */
  readonly onStart: (cancel: (reason: MeshError) => void) => void;
}

export type TryHandler = (ex: Exchange, t: Try) => Promise<AttemptResult>;

export interface RetryDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly telemetry: Telemetry;
  readonly cluster: (service: string) => Cluster | undefined;
}

/**
 * The longest a retry waits for a request body to finish before it gives up on replaying it. A client that is still
 * streaming after this (a bidi call waiting for our reply) was never going to be replayable.
 */
const SETTLE_MAX_MS = 2_000;

async function settleWithin(settle: () => Promise<void>, ms: number, clock: Clock): Promise<void> {
  if (ms <= 0) return;
  let timer: Timer | undefined;
  await Promise.race([settle(), new Promise<void>((resolve) => { timer = clock.setTimeout(resolve, ms); })]);
  timer?.cancel();
}

function outcomeOf(r: AttemptResult): AttemptOutcome {
  if (r.kind === 'declined') return { kind: 'response', status: r.status, grpcStatus: r.grpcStatus };
  const failed = r as Extract<AttemptResult, { kind: 'failed' }>;
  return { kind: 'error', code: failed.error.code, refusedStream: failed.refusedStream };
}

/**
 * Terminal stage of the outbound pipeline. Retries never happen after a response byte reached the client: the
 * decision is taken on response headers, before they are written (Attempt.accept).
 */
export function retryLayer(deps: RetryDeps, tryOnce: TryHandler): Handler {
  return async (ex: Exchange): Promise<void> => {
    const rule = ex.rule;
    const backend = ex.backend;
    const cluster = backend && deps.cluster(backend.service);
    if (!rule || !backend || !cluster) {
      respondError(ex, new MeshError('no-healthy-upstream', `no cluster for service "${backend?.service ?? ex.authority}"`));
      return;
    }
    const policy = rule.retry;
    const safeMethod = policy.retryNonIdempotent || isIdempotent(ex.method);
    /**
     * Why this outcome may be retried, or undefined. The body must be replayable (asked each time: a recorded gRPC body
     * becomes so once it has ended). A gRPC call is a POST: unless the rule allows non-idempotent retries it is retried
     * only on outcomes that mean the server never processed it (gRPC retry design A6).
     */
    const reasonFor = (o: AttemptOutcome): RetryReason | undefined => {
      const reason = retryReason(policy, o);
      if (reason === undefined || !isReplayable(ex.body)) return undefined;
      return safeMethod || (ex.grpc && unprocessed(reason)) ? reason : undefined;
    };
    const routeDeadline = rule.timeoutMs > 0 ? ex.start + rule.timeoutMs : undefined;
    // The caller's grpc-timeout (listener.ts) and the route timeout: whichever ends first.
    const deadline = ex.deadline === undefined ? routeDeadline : Math.min(ex.deadline, routeDeadline ?? Infinity);
    const timeoutError = () => new MeshError('upstream-timeout', deadline === routeDeadline
      ? `no response from "${cluster.name}" within ${rule.timeoutMs}ms`
      : `deadline from grpc-timeout exceeded calling "${cluster.name}"`);
    cluster.budget.recordRequest();

    let cancel: ((reason: MeshError) => void) | undefined;
    let timedOut = false;
    let sleeping: Timer | undefined;
    let wake: (() => void) | undefined;
    const stop = (reason: MeshError) => {
      cancel?.(reason);
      sleeping?.cancel();
      wake?.();
    };
    const routeTimer = deadline === undefined ? undefined : deps.clock.setTimeout(() => {
      timedOut = true;
      stop(timeoutError());
    }, Math.max(0, deadline - deps.clock.now()));
    const onClose = () => {
      if (!closedEarly(ex.res)) return;
      ex.clientGone = true;
      stop(new MeshError('upstream-reset', 'client closed the connection'));
    };
    ex.res.once('close', onClose);
    if (streamGone(ex.res)) onClose();

    const exclude = new Set<Endpoint>();
    let n = 1;
    const accept = (status: number, grpcStatus?: number): boolean =>
      !(n < policy.attempts && reasonFor({ kind: 'response', status, grpcStatus }) !== undefined && cluster.budget.tryWithdraw());
    try {
      for (;; n++) {
        // The client left before this try (or before the first: while its body was read): nothing is sent for it.
        if (ex.clientGone) return;
        const result = await tryOnce(ex, {
          cluster,
          subset: backend.subset,
          exclude,
          perTryTimeoutMs: clampPerTry(policy.perTryTimeoutMs, deadline, deps.clock.now()),
          accept,
          onStart: (c) => { cancel = c; },
        });
        cancel = undefined;
        if (result.kind === 'committed' || ex.clientGone) return;
        if (timedOut) {
          respondError(ex, timeoutError());
          return;
        }
        const outcome = outcomeOf(result);
        let reason = reasonFor(outcome);
        if (reason === undefined && result.kind === 'failed' && n < policy.attempts && ex.body.kind === 'stream' && ex.body.settle
          && retryReason(policy, outcome) !== undefined) {
          // A gRPC call that failed before its body was read (a connect failure arrives before the client's END_STREAM):
          // read the rest into the recording, within what is left of the deadline, and decide again.
          await settleWithin(ex.body.settle, deadline === undefined ? SETTLE_MAX_MS : Math.min(SETTLE_MAX_MS, deadline - deps.clock.now()), deps.clock);
          if (ex.clientGone) return;
          reason = reasonFor(outcome);
        }
        if (result.kind === 'failed') {
          // A declined response already passed the budget in accept(); a failure must pass it here.
          if (n >= policy.attempts || reason === undefined || !cluster.budget.tryWithdraw()) {
            respondError(ex, result.error);
            return;
          }
        }
        deps.telemetry.retried(cluster.name, reason ?? 'unknown');
        const delay = backoffDelay(n, policy.backoff, deps.random);
        if (delay > 0) {
          // Interruptible: the route timeout or a departed client ends the wait early.
          await new Promise<void>((resolve) => {
            wake = resolve;
            sleeping = deps.clock.setTimeout(resolve, delay);
          });
          sleeping = wake = undefined;
          if (ex.clientGone) return;
          if (timedOut) {
            respondError(ex, timeoutError());
            return;
          }
        }
        ex.body = forReplay(ex.body);
      }
    } finally {
      routeTimer?.cancel();
      ex.res.off('close', onClose);
    }
  };
}
