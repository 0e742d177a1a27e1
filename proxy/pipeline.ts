// The only place the order of request stages is written: outbound and inbound chains, in packet order.
import type { Clock, Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import { DEFAULTS } from '../api/resources.js';
import type { AccessLog } from './access-log.js';
import { authzLayer, type AccessTable } from './authz.js';
import { balanceTry } from './balance.js';
import { bodyLayer } from './body.js';
import type { Cluster } from './cluster.js';
import { recordedStatus, type Exchange } from './exchange.js';
import { faultLayer } from './fault.js';
import { mirrorLayer } from './mirror.js';
import { overloadLayer, type LoadShedder } from './overload.js';
import type { Handler, Layer } from './pipeline-types.js';
import { rateLimitLayer, type RateLimiter } from './rate-limit.js';
import type { CompiledRule, RouteTable } from './compiled.js';
import { routeLayer } from './route.js';
import { retryLayer } from './retry.js';
import type { RouteStats, Telemetry } from './telemetry.js';
import { traceLayer, type ActiveTracer } from './tracing.js';

export interface PipelineDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly telemetry: Telemetry;
  readonly routes: () => RouteTable;
  readonly cluster: (service: string) => Cluster | undefined;
  /** The current snapshot's tracer; absent when the sidecar runs with tracing off (no layer at all). */
  readonly tracer: (() => ActiveTracer | undefined) | undefined;
  /** The largest request body forwarded (--max-request-body). */
  readonly maxRequestBodyBytes: number;
  readonly accessLog: AccessLog;
  /** Refuses new requests while the event loop is behind; absent when shedding is off. */
  readonly shedder?: LoadShedder;
}

export interface InboundDeps extends PipelineDeps {
  readonly service: string;
  /** The compiled rule that sends everything to the local app (single try, no timeout: the caller's sidecar owns those). */
  readonly appRule: () => CompiledRule;
  readonly appCluster: () => Cluster;
  readonly rateLimiter: () => RateLimiter | undefined;
  readonly access: () => AccessTable;
  /** This sidecar's own SPIFFE id, for x-forwarded-client-cert's By= element. */
  readonly selfUri: () => string;
}

/**
 * Records the golden metrics and the access log line once the exchange is over; requests refused before routing count
 * under `fallback`. One stage for both, so an access log that is off costs nothing per request.
 */
function observeLayer(clock: Clock, fallback: RouteStats, accessLog: AccessLog): Layer {
  return (next: Handler): Handler => async (ex: Exchange) => {
    await next(ex);
    (ex.stats ?? fallback).record(recordedStatus(ex), (clock.now() - ex.start) / 1000, ex.grpcStatus);
    accessLog.record(ex);
  };
}

function compose(terminal: Handler, ...layers: (Layer | undefined)[]): Handler {
  return layers.reduceRight<Handler>((next, layer) => (layer ? layer(next) : next), terminal);
}

/** listener → trace → metrics and access log → shed → route → fault → body → mirror → retry/timeout → balancer → pool. */
export function outboundPipeline(d: PipelineDeps, sourceService: string): Handler {
  return compose(
    retryLayer(d, balanceTry(d.clock)),
    d.tracer && traceLayer(d.tracer, 'outbound'),
    observeLayer(d.clock, d.telemetry.routeStats('outbound', sourceService, 'unknown', 'none'), d.accessLog),
    overloadLayer(d.shedder, () => d.telemetry.overloadShed.labels('outbound').inc()),
    routeLayer(d.routes, d.random),
    faultLayer(d.clock, d.random),
    bodyLayer(DEFAULTS.replayLimitBytes, d.maxRequestBodyBytes),
    mirrorLayer(d.cluster, d.random, d.log),
  );
}

/**
 * The terminal stage for WebSocket upgrades (websocket.ts), given where its clusters come from: the snapshot's on the
 * outbound side, the local app on the inbound side.
 */
export type TunnelStage = (cluster: (service: string) => Cluster | undefined) => Handler;

/**
 * WebSocket upgrades, outbound: listener → trace → metrics and access log → route → handshake, then tunnel. No fault,
 * body, mirror or retry stage: a handshake has no body, and once the upstream answered it cannot be tried again.
 */
export function outboundUpgradePipeline(d: PipelineDeps, sourceService: string, tunnel: TunnelStage): Handler {
  return compose(
    tunnel(d.cluster),
    d.tracer && traceLayer(d.tracer, 'outbound'),
    observeLayer(d.clock, d.telemetry.routeStats('outbound', sourceService, 'unknown', 'none'), d.accessLog),
    routeLayer(d.routes, d.random),
  );
}

/** The inbound stages before the app: who called (for metrics), and the app rule with XFCC. */
function inboundStages(d: InboundDeps): { anonymous: RouteStats; identify: Layer; toApp: Layer } {
  const anonymous = d.telemetry.routeStats('inbound', 'unknown', d.service, 'inbound');
  const byPeer = new Map<string, RouteStats>();
  const statsFor = (peer: Exchange['peer']): RouteStats => {
    if (!peer) return anonymous;
    let s = byPeer.get(peer.uri);
    if (!s) byPeer.set(peer.uri, (s = d.telemetry.routeStats('inbound', peer.service, d.service, 'inbound')));
    return s;
  };
  const identify: Layer = (next) => (ex) => {
    ex.stats = statsFor(ex.peer);
    return next(ex);
  };
  const toApp: Layer = (next) => (ex) => {
    ex.rule = d.appRule();
    ex.backend = ex.rule.backends[0];
    ex.headers.host = ex.upstreamHost;
    // Added after the client's copy was stripped (headers.ts), so the app can trust it.
    if (ex.peer) ex.headers['x-forwarded-client-cert'] = `By=${d.selfUri()};URI=${ex.peer.uri}`;
    return next(ex);
  };
  return { anonymous, identify, toApp };
}

/** The inbound stages every request and upgrade passes, outermost first: who called, trace, metrics, shed, authz, rate limit, app rule. */
function inboundFront(d: InboundDeps): Layer[] {
  const { anonymous, identify, toApp } = inboundStages(d);
  return [
    identify,
    ...(d.tracer ? [traceLayer(d.tracer, 'inbound')] : []),
    observeLayer(d.clock, anonymous, d.accessLog),
    ...(d.shedder ? [overloadLayer(d.shedder, () => d.telemetry.overloadShed.labels('inbound').inc())!] : []),
    authzLayer(d.access, (policy) => d.telemetry.accessDenied.labels(d.service, policy).inc()),
    rateLimitLayer(d.rateLimiter, () => d.telemetry.rateLimited.labels(d.service, d.service).inc()),
    toApp,
  ];
}

/** listener (mTLS) → trace → metrics and access log → authz → rate limit → app (through the same retry/balancer/pool stages, with one try). */
export function inboundPipeline(d: InboundDeps): Handler {
  return compose(
    retryLayer({ ...d, cluster: () => d.appCluster() }, balanceTry(d.clock)),
    ...inboundFront(d),
    bodyLayer(DEFAULTS.replayLimitBytes, d.maxRequestBodyBytes),
  );
}

/** WebSocket upgrades, inbound: the same stages as any request (AccessPolicy on GET + path, rate limit, XFCC), then handshake and tunnel to the app. */
export function inboundUpgradePipeline(d: InboundDeps, tunnel: TunnelStage): Handler {
  return compose(tunnel(() => d.appCluster()), ...inboundFront(d));
}
