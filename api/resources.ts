// Validated resource types (DESIGN.md §3): what every program sees after YAML has passed validation, defaults applied, durations in ms.

export const API_VERSION = 'mesh/v1';

export type Kind = 'Service' | 'Endpoints' | 'Route' | 'TrafficPolicy' | 'AccessPolicy' | 'MeshConfig';
export const KINDS: readonly Kind[] = ['Service', 'Endpoints', 'Route', 'TrafficPolicy', 'AccessPolicy', 'MeshConfig'];

export interface Metadata {
  readonly name: string;
  readonly namespace: string;
}

/** Where a resource came from, so later (semantic) checks can point at file and line. */
export interface Source {
  readonly file: string;
  /** Line of the document start, and of every field path that exists in it ("spec.rules[0].backends"). */
  readonly line: number;
  readonly lines: ReadonlyMap<string, number>;
}

export interface ServiceSpec {
  readonly protocol: 'http' | 'grpc' | 'tcp';
}

export interface EndpointSpec {
  readonly address: string;
  readonly host: string;
  readonly port: number;
  readonly labels: Readonly<Record<string, string>>;
}

export interface EndpointsSpec {
  readonly service: string;
  readonly endpoints: readonly EndpointSpec[];
}

export type StringMatch =
  | { readonly exact: string }
  | { readonly prefix: string }
  | { readonly regex: string }
  | { readonly present: boolean };

export interface RouteMatch {
  readonly path?: string;
  readonly pathPrefix?: string;
  readonly pathRegex?: string;
  readonly method?: string;
  readonly headers: Readonly<Record<string, StringMatch>>;
}

export interface Backend {
  readonly service: string;
  readonly subset?: string;
  readonly weight: number;
}

export type RetryCondition =
  | 'connect-failure' | 'refused-stream' | 'reset' | 'gateway-error' | '5xx' | 'retriable-4xx'
  /** gRPC statuses in a Trailers-Only response (before any response message): UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED. */
  | 'unavailable' | 'cancelled' | 'deadline-exceeded' | 'resource-exhausted'
  | `${number}`;

export interface RetrySpec {
  /** Total tries including the first. */
  readonly attempts: number;
  /** 0 = no per-try limit (only the rule timeout). */
  readonly perTryTimeoutMs: number;
  readonly retryOn: readonly RetryCondition[];
  readonly backoff: { readonly baseMs: number; readonly maxMs: number };
}

export interface FaultSpec {
  readonly delay?: { readonly percent: number; readonly fixedMs: number };
  readonly abort?: { readonly percent: number; readonly status: number };
}

export interface RouteRule {
  /** Empty: matches every request. */
  readonly match: readonly RouteMatch[];
  readonly backends: readonly Backend[];
  /** 0 = no overall timeout. */
  readonly timeoutMs: number;
  readonly retries: RetrySpec;
  readonly retryNonIdempotent: boolean;
  readonly fault?: FaultSpec;
  readonly mirror?: { readonly service: string; readonly percent: number };
  readonly rewrite?: { readonly pathPrefix?: string; readonly host?: string };
}

export interface RouteSpec {
  readonly hosts: readonly string[];
  readonly rules: readonly RouteRule[];
}

export type LoadBalancerPolicy = 'ewma' | 'least-request' | 'round-robin' | 'random' | 'ring-hash';

/** Whose bucket a request takes from: the calling service (`source`), or each distinct value of a request header. */
export type RateLimitKey = 'source' | { readonly header: string };

/** One token bucket per limited service, or per client when `key` is set (then `total` can cap them all together). */
export interface RateLimitSpec {
  readonly requestsPerSecond: number;
  readonly burst: number;
  readonly key?: RateLimitKey;
  /** With `key` only: one more bucket that every request takes from too, whatever its key. */
  readonly total?: { readonly requestsPerSecond: number; readonly burst: number };
}

export interface TrafficPolicySpec {
  readonly service: string;
  readonly loadBalancer: { readonly policy: LoadBalancerPolicy; readonly hashOn?: { readonly header: string } };
  readonly subsets: readonly { readonly name: string; readonly labels: Readonly<Record<string, string>> }[];
  readonly tls: { readonly mode: 'mutual' | 'disable' };
  readonly connectionPool: { readonly maxConnections: number; readonly maxPendingRequests: number; readonly idleTimeoutMs: number };
  readonly outlierDetection: {
    readonly consecutiveFailures: number;
    readonly intervalMs: number;
    readonly baseEjectionTimeMs: number;
    readonly maxEjectionPercent: number;
  };
  readonly retryBudget: { readonly ratio: number; readonly minPerSecond: number };
  readonly rateLimit?: RateLimitSpec;
}

export interface AccessRule {
  readonly from: readonly string[];
  readonly to: readonly { readonly methods: readonly string[]; readonly paths: readonly string[] }[];
}

export interface AccessPolicySpec {
  readonly service: string;
  readonly action: 'allow' | 'deny';
  readonly rules: readonly AccessRule[];
}

export interface MeshConfigSpec {
  readonly trustDomain: string;
  readonly mtls: 'strict' | 'permissive';
  readonly certificateTTLMs: number;
  readonly tracing: { readonly sampling: number; readonly otlpEndpoint: string };
  readonly accessLog: boolean;
}

interface Base<K extends Kind, S> {
  readonly apiVersion: typeof API_VERSION;
  readonly kind: K;
  readonly metadata: Metadata;
  readonly spec: S;
  readonly source: Source;
}

export type ServiceResource = Base<'Service', ServiceSpec>;
export type EndpointsResource = Base<'Endpoints', EndpointsSpec>;
export type RouteResource = Base<'Route', RouteSpec>;
export type TrafficPolicyResource = Base<'TrafficPolicy', TrafficPolicySpec>;
export type AccessPolicyResource = Base<'AccessPolicy', AccessPolicySpec>;
export type MeshConfigResource = Base<'MeshConfig', MeshConfigSpec>;

export type Resource =
  | ServiceResource
  | EndpointsResource
  | RouteResource
  | TrafficPolicyResource
  | AccessPolicyResource
  | MeshConfigResource;

/** Defaults from DESIGN.md §3, shared by the validator (which fills them in) and the compiler. */
export const DEFAULTS = Object.freeze({
  retries: Object.freeze<RetrySpec>({
    attempts: 2,
    perTryTimeoutMs: 0,
    retryOn: Object.freeze(['connect-failure', 'refused-stream', 'reset'] as RetryCondition[]),
    backoff: Object.freeze({ baseMs: 25, maxMs: 250 }),
  }),
  timeoutMs: 15_000,
  replayLimitBytes: 64 * 1024,
  connectionPool: Object.freeze({ maxConnections: 1024, maxPendingRequests: 1024, idleTimeoutMs: 60_000 }),
  outlierDetection: Object.freeze({ consecutiveFailures: 5, intervalMs: 5_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50 }),
  retryBudget: Object.freeze({ ratio: 0.2, minPerSecond: 10 }),
  meshConfig: Object.freeze<MeshConfigSpec>({
    trustDomain: 'mesh.local',
    mtls: 'strict',
    certificateTTLMs: 24 * 3600_000,
    tracing: Object.freeze({ sampling: 0.01, otlpEndpoint: '' }),
    accessLog: false,
  }),
});

/** A validation problem, rendered as `FILE:LINE Kind/name field.path: message`. */
export interface Issue {
  readonly file: string;
  readonly line: number;
  /** `Kind/name`, or empty for problems outside any resource (YAML syntax). */
  readonly resource: string;
  readonly path: string;
  readonly message: string;
}

export function formatIssue(i: Issue): string {
  const where = [i.resource, i.path].filter(Boolean).join(' ');
  return `${i.file}:${i.line} ${where ? `${where}: ` : ''}${i.message}`;
}
