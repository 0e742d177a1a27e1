// Resources → Snapshot: joins Services with their Endpoints and TrafficPolicy, and stamps the result with a version; the step between the store and the push.
import { createHash } from 'node:crypto';
import type {
  AccessPolicyResource,
  EndpointSpec,
  EndpointsResource,
  MeshConfigResource,
  Resource,
  RouteResource,
  ServiceResource,
  TrafficPolicyResource,
  TrafficPolicySpec,
} from '../api/resources.js';
import { DEFAULTS } from '../api/resources.js';
import type { AccessPolicyConfig, RouteConfig, ServiceConfig, Snapshot } from '../api/snapshot.js';
import { deepFreeze } from '../api/snapshot.js';

/** What a service without a TrafficPolicy gets: the DESIGN.md §3 defaults, no subsets, mutual TLS. */
export function defaultTrafficPolicy(service: string): TrafficPolicySpec {
  return {
    service,
    loadBalancer: { policy: 'ewma' },
    subsets: [],
    tls: { mode: 'mutual' },
    connectionPool: { ...DEFAULTS.connectionPool },
    outlierDetection: { ...DEFAULTS.outlierDetection },
    retryBudget: { ...DEFAULTS.retryBudget },
  };
}

/**
 * A JSON round trip: drops `source` and undefined fields, and copies, so freezing the snapshot never freezes
 * the caller's resources and what the sidecar receives equals what was hashed.
 */
function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

const key = (namespace: string, name: string): string => `${namespace}/${name}`;

/** Namespace then name, so the snapshot (and its hash) does not depend on file or store order. */
function byName(a: Resource, b: Resource): number {
  const ka = key(a.metadata.namespace, a.metadata.name);
  const kb = key(b.metadata.namespace, b.metadata.name);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function ofKind<K extends Resource['kind']>(resources: readonly Resource[], kind: K): Extract<Resource, { kind: K }>[] {
  return resources.filter((r): r is Extract<Resource, { kind: K }> => r.kind === kind).sort(byName);
}

function compileServices(
  services: readonly ServiceResource[],
  endpoints: readonly EndpointsResource[],
  policies: readonly TrafficPolicyResource[],
): ServiceConfig[] {
  const endpointsOf = new Map<string, EndpointSpec[]>();
  for (const e of endpoints) {
    const k = key(e.metadata.namespace, e.spec.service);
    endpointsOf.set(k, [...(endpointsOf.get(k) ?? []), ...e.spec.endpoints]);
  }
  // Validation rejects two policies for one service; should a set slip through, the first by name wins.
  const policyOf = new Map<string, TrafficPolicySpec>();
  for (const p of policies) {
    const k = key(p.metadata.namespace, p.spec.service);
    if (!policyOf.has(k)) policyOf.set(k, p.spec);
  }
  return services.map((s) => {
    const k = key(s.metadata.namespace, s.metadata.name);
    return {
      name: s.metadata.name,
      namespace: s.metadata.namespace,
      protocol: s.spec.protocol,
      endpoints: plain(endpointsOf.get(k) ?? []),
      policy: plain(policyOf.get(k) ?? defaultTrafficPolicy(s.metadata.name)),
    };
  });
}

const compileRoute = (r: RouteResource): RouteConfig => ({
  name: r.metadata.name,
  namespace: r.metadata.namespace,
  hosts: plain(r.spec.hosts),
  rules: plain(r.spec.rules),
});

const compileAccessPolicy = (r: AccessPolicyResource): AccessPolicyConfig => ({
  name: r.metadata.name,
  namespace: r.metadata.namespace,
  spec: plain(r.spec),
});

/** The short content hash used as the version when there is no store revision (standalone mode). */
export function contentVersion(body: Omit<Snapshot, 'version'>): string {
  return createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 12);
}

/**
 * Compiles validated resources into the frozen snapshot every sidecar receives. It assumes validateMeaning
 * passed: dangling references are dropped here rather than reported.
 */
export function compileSnapshot(resources: readonly Resource[], version?: string): Snapshot {
  const mesh: MeshConfigResource | undefined = ofKind(resources, 'MeshConfig')[0];
  const body: Omit<Snapshot, 'version'> = {
    meshConfig: plain(mesh?.spec ?? DEFAULTS.meshConfig),
    services: compileServices(
      ofKind(resources, 'Service'),
      ofKind(resources, 'Endpoints'),
      ofKind(resources, 'TrafficPolicy'),
    ),
    routes: ofKind(resources, 'Route').map(compileRoute),
    accessPolicies: ofKind(resources, 'AccessPolicy').map(compileAccessPolicy),
  };
  return deepFreeze({ version: version ?? contentVersion(body), ...body });
}
