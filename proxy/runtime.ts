// Snapshot → runtime: everything the hot path reads, compiled once per snapshot and swapped atomically.
import type { Clock } from '../api/clock.js';
import { DEFAULTS } from '../api/resources.js';
import type { ServiceConfig, Snapshot } from '../api/snapshot.js';
import { defaultTrafficPolicy } from '../control-plane/compiler.js';
import { compileAccess, type AccessTable } from './authz.js';
import { compileRateLimiter, type RateLimiter } from './rate-limit.js';
import type { CompiledRule, RouteTable } from './compiled.js';
import { compileRoutes, compileRule } from './route.js';
import type { Telemetry } from './telemetry.js';

export interface Identity {
  readonly service: string;
  readonly namespace: string;
  /** host:port of the local application. */
  readonly app: { readonly host: string; readonly port: number };
  readonly labels: Readonly<Record<string, string>>;
  /** This sidecar's instance id (registry key, `mesh status`). */
  readonly instance: string;
}

export interface Runtime {
  readonly snapshot: Snapshot;
  readonly routes: RouteTable;
  /** The inbound rule: everything to the local app, one try, no timeout of its own. */
  readonly appRule: CompiledRule;
  /** The local app as a one-endpoint cluster config; limits come from the service's own TrafficPolicy. */
  readonly appConfig: ServiceConfig;
  readonly rateLimiter: RateLimiter | undefined;
  /** AccessPolicies that target this sidecar's service. */
  readonly access: AccessTable;
}

/**
 * Compiles a snapshot for this sidecar. Throws on anything it cannot apply, so the caller can refuse the snapshot
 * (NACK) and keep serving the previous runtime. Clusters are diff-applied by the caller after this succeeds.
 */
export function compileRuntime(snapshot: Snapshot, me: Identity, telemetry: Telemetry, clock: Clock, previous?: Runtime): Runtime {
  const own = snapshot.services.find((s) => s.name === me.service);
  const ownPolicy = own?.policy ?? defaultTrafficPolicy(me.service);
  const appConfig: ServiceConfig = {
    name: me.service,
    namespace: me.namespace,
    protocol: own?.protocol ?? 'http',
    endpoints: [{ address: `${me.app.host}:${me.app.port}`, host: me.app.host, port: me.app.port, labels: me.labels }],
    policy: {
      ...ownPolicy,
      loadBalancer: { policy: 'round-robin' },
      subsets: [],
      tls: { mode: 'disable' },
      // A single local app is never ejected: there is nowhere else to send its traffic.
      outlierDetection: { ...ownPolicy.outlierDetection, consecutiveFailures: 0 },
    },
  };
  const appRule = compileRule('inbound', {
    match: [],
    backends: [{ service: me.service, weight: 100 }],
    timeoutMs: 0,
    retries: { ...DEFAULTS.retries, attempts: 1 },
    retryNonIdempotent: false,
  }, telemetry, me.service);
  const rateLimiter = compileRateLimiter(ownPolicy.rateLimit, clock, previous && {
    spec: previous.snapshot.services.find((s) => s.name === me.service)?.policy.rateLimit,
    limiter: previous.rateLimiter,
  });
  return Object.freeze({
    snapshot, routes: compileRoutes(snapshot, telemetry, me.service), appRule, appConfig, rateLimiter,
    access: compileAccess(snapshot, me.service, me.namespace),
  });
}

/** What /config_dump shows. */
export function dumpRuntime(rt: Runtime): object {
  return { version: rt.snapshot.version, snapshot: rt.snapshot };
}
