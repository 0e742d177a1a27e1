// One try: pick an endpoint with the cluster's balancer, pass the circuit limits, forward through its pool, report health.
import { MeshError } from '../api/errors.js';
import type { Clock } from '../api/clock.js';
import { formatGrpcTimeout, GRPC_STATUS } from './grpc.js';
import { forwardH2 } from './h2-forward.js';
import { headerValue } from './headers.js';
import { forward, type AttemptResult, type RequestBody } from './pool.js';
import type { TryHandler } from './retry.js';

/** A failed try is fed to EWMA as at least this slow, so a fast-failing endpoint does not look attractive. */
const FAILURE_PENALTY_MS = 1_000;
const UNAVAILABLE_LABEL = String(GRPC_STATUS.UNAVAILABLE);

export function balanceTry(clock: Clock): TryHandler {
  return async (ex, t) => {
    const { cluster } = t;
    const hashHeader = cluster.hashHeader;
    const ep = cluster.pick(t.subset, hashHeader === undefined ? undefined : headerValue(ex.req.headers, hashHeader), t.exclude);
    if (!ep) {
      const what = t.subset ? `subset "${t.subset}" of service "${cluster.name}"` : `service "${cluster.name}"`;
      return { kind: 'failed', error: new MeshError('no-healthy-upstream', `no healthy endpoint for ${what}`) };
    }
    if (cluster.admit(ep) === 'refused') {
      return { kind: 'failed', error: new MeshError('circuit-open', `too many pending requests to service "${cluster.name}"`) };
    }
    t.exclude.add(ep);
    ex.attempts++;
    ex.upstream = ep.id;
    const body = ex.body;
    ep.inflight++;
    const t0 = clock.now();
    let result: AttemptResult;
    const path = ex.path + ex.query;
    const data = (body.kind === 'none' ? null : body.data) as RequestBody;
    try {
      // gRPC services, and HTTP/2 callers of mesh peers, go over HTTP/2; everything else over undici's HTTP/1.1.
      // Each branch builds its request object in one literal: this runs per try, and a shared object spread into
      // another cost a measurable share of the HTTP/1.1 hot path.
      result = cluster.speaksH2(ex)
        ? await forwardH2({
          ex, endpoint: ep, path, headers: ex.headers, body: data, perTryTimeoutMs: t.perTryTimeoutMs, clock, accept: t.accept,
          pool: cluster.h2PoolFor(ep),
          // The caller's deadline travels on, shrunk to what is left for this try.
          grpcTimeout: ex.deadline === undefined ? undefined : formatGrpcTimeout(t.perTryTimeoutMs),
        }, t.onStart)
        : await forward({
          ex, endpoint: ep, path, headers: ex.headers, body: data, perTryTimeoutMs: t.perTryTimeoutMs, clock, accept: t.accept,
          pool: cluster.poolFor(ep),
        }, t.onStart);
    } finally {
      ep.inflight--;
    }
    const rtt = clock.now() - t0;
    let ok: boolean;
    // gRPC errors travel as HTTP 200: UNAVAILABLE counts against the endpoint as a 503 would (Envoy maps it so too).
    if (result.kind === 'failed') ok = false;
    else if (result.kind === 'declined') ok = result.status < 500 && result.grpcStatus !== GRPC_STATUS.UNAVAILABLE;
    else ok = ex.res.statusCode < 500 && ex.grpcStatus !== UNAVAILABLE_LABEL;
    ep.observe(ok ? rtt : Math.max(rtt, FAILURE_PENALTY_MS), clock.now());
    // A client that went away says nothing about the endpoint's health.
    if (!ex.clientGone) cluster.report(ep, ok, result.kind === 'failed' ? result.error : undefined);
    return result;
  };
}
