// The snapshot: everything one sidecar needs, compiled from resources once per store revision and sent as JSON.
import type { AccessPolicySpec, EndpointSpec, MeshConfigSpec, RouteRule, ServiceSpec, TrafficPolicySpec } from './resources.js';

export interface ServiceConfig {
  readonly name: string;
  readonly namespace: string;
  readonly protocol: ServiceSpec['protocol'];
  readonly endpoints: readonly EndpointSpec[];
  /** The service's TrafficPolicy, or the defaults when it has none. */
  readonly policy: TrafficPolicySpec;
}

export interface RouteConfig {
  readonly name: string;
  readonly namespace: string;
  readonly hosts: readonly string[];
  readonly rules: readonly RouteRule[];
}

export interface AccessPolicyConfig {
  readonly name: string;
  readonly namespace: string;
  readonly spec: AccessPolicySpec;
}

export interface Snapshot {
  /** Derived from the store revision in dynamic mode; a content hash in standalone mode. */
  readonly version: string;
  readonly meshConfig: MeshConfigSpec;
  readonly services: readonly ServiceConfig[];
  readonly routes: readonly RouteConfig[];
  readonly accessPolicies: readonly AccessPolicyConfig[];
}

/** Deep-freezes a plain object graph so compiled config cannot be mutated on the hot path. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}
