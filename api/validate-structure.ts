// Structural validation of one resource (DESIGN.md §3): shapes, ranges and defaults per kind; cross-resource meaning lives in validate-meaning.ts.
import { isIP } from 'node:net';
import type {
  AccessPolicySpec,
  Backend,
  EndpointSpec,
  EndpointsSpec,
  Kind,
  MeshConfigSpec,
  RateLimitKey,
  RetryCondition,
  RetrySpec,
  RouteMatch,
  RouteRule,
  RouteSpec,
  ServiceSpec,
  StringMatch,
  TrafficPolicySpec,
} from './resources.js';
import { API_VERSION, DEFAULTS, KINDS } from './resources.js';
import type { Ctx, Validator } from './schema.js';
import { array, boolean, duration, enumOf, integer, join, map, number, object, record, report, string } from './schema.js';

/** Drops undefined optional fields so validated specs serialize to exactly what was configured. */
function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const isLabel = (s: string): boolean => s.length <= 63 && LABEL.test(s);
const isHostname = (s: string): boolean => s.length <= 253 && s.split('.').every(isLabel);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const name = (): Validator<string> =>
  string({ check: isLabel, message: 'must be a lowercase name of letters, digits and "-", at most 63 characters' });
const hostname = (): Validator<string> =>
  string({ check: isHostname, message: 'must be a lowercase hostname like billing or billing.internal' });
const method = (): Validator<string> =>
  string({ max: 32, check: (s) => /^[A-Z]+$/.test(s), message: 'must be an uppercase method like GET' });
const absPath = (): Validator<string> => string({ check: (s) => s.startsWith('/'), message: 'must start with "/"' });
// Regex strings may be long here; validate-meaning owns the 1024-character limit so all regex problems read alike.
const regex = (): Validator<string> => string({ max: 1_000_000 });
const labels = (): Validator<Record<string, string>> => record(string({ max: 253 }));
const headerToken = (): Validator<string> =>
  string({ max: 256, check: (s) => TOKEN.test(s), message: 'must be a valid header name' });
const headerName = (): Validator<string> => map(headerToken(), (s) => s.toLowerCase());

// --- Service and Endpoints ---

const serviceSpec: Validator<ServiceSpec> = map(object({ protocol: enumOf(['http', 'grpc', 'tcp']) }), (s) => ({
  protocol: s.protocol ?? 'http',
}));

/** `host:port` or `[v6]:port`; a bracketless IPv6 address is ambiguous with the port and rejected. */
export function parseAddress(address: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(address) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(address);
  if (!m) return undefined;
  const [, host, portText] = m;
  const port = Number(portText);
  if (port < 1 || port > 65535) return undefined;
  if (address.startsWith('[')) return isIP(host) === 6 ? { host, port } : undefined;
  // All digits and dots must be a real IPv4 address, else `999.1.1.1` would be looked up as a name.
  if (/^[\d.]+$/.test(host)) return isIP(host) === 4 ? { host, port } : undefined;
  return isHostname(host.toLowerCase()) ? { host: host.toLowerCase(), port } : undefined;
}

const endpoint: Validator<EndpointSpec> = map(
  object({ address: string(), labels: labels() }, { required: ['address'] }),
  (e, path, ctx) => {
    const hp = parseAddress(e.address);
    if (!hp) return report(ctx, join(path, 'address'), 'must be host:port or [v6]:port with port 1..65535');
    return { address: e.address, host: hp.host, port: hp.port, labels: e.labels ?? {} };
  },
);

const endpointsSpec: Validator<EndpointsSpec> = object(
  { service: name(), endpoints: array(endpoint) },
  { required: ['service', 'endpoints'] },
);

// --- Route ---

const headerMatch: Validator<StringMatch> = map(
  object({ exact: string(), prefix: string(), regex: regex(), present: boolean() }),
  (m, path, ctx) =>
    Object.keys(m).length === 1 ? (m as StringMatch) : report(ctx, path, 'must have exactly one of exact, prefix, regex, present'),
);

/** Header names are case-insensitive on the wire, so they are lowercased once here and case-only duplicates caught. */
const headers: Validator<Record<string, StringMatch>> = map(record(headerMatch, headerToken()), (h, path, ctx) => {
  const out = new Map<string, StringMatch>();
  let ok = true;
  for (const [k, m] of Object.entries(h)) {
    const lower = k.toLowerCase();
    if (out.has(lower)) {
      report(ctx, join(path, k), `duplicate header "${lower}"`);
      ok = false;
    }
    out.set(lower, m);
  }
  return ok ? Object.fromEntries(out) : undefined;
});

const routeMatch: Validator<RouteMatch> = map(
  object({ path: absPath(), pathPrefix: absPath(), pathRegex: regex(), method: method(), headers }),
  (m, path, ctx) => {
    const paths = [m.path, m.pathPrefix, m.pathRegex].filter((p) => p !== undefined);
    if (paths.length > 1) return report(ctx, path, 'must have at most one of path, pathPrefix, pathRegex');
    return { ...m, headers: m.headers ?? {} };
  },
);

/** One backend may omit its weight (it gets everything); with several, a missing weight is a guess we refuse to make. */
const backends: Validator<Backend[]> = map(
  array(object({ service: name(), subset: name(), weight: integer(0, 100) }, { required: ['service'] }), { min: 1 }),
  (bs, path, ctx) => {
    if (bs.length === 1) return [compact({ ...bs[0], weight: bs[0].weight ?? 100 })];
    let ok = true;
    bs.forEach((b, i) => {
      if (b.weight !== undefined) return;
      report(ctx, `${path}[${i}].weight`, 'is required when a rule has several backends');
      ok = false;
    });
    return ok ? (bs as Backend[]) : undefined;
  },
);

const RETRY_ON = [
  'connect-failure', 'refused-stream', 'reset', 'gateway-error', '5xx', 'retriable-4xx',
  'unavailable', 'cancelled', 'deadline-exceeded', 'resource-exhausted',
] as const;

const retryCondition: Validator<RetryCondition> = (value, path, ctx) => {
  if (typeof value === 'string' && (RETRY_ON as readonly string[]).includes(value)) return value as RetryCondition;
  // YAML reads a bare 503 as a number and "503" as a string; both mean the status.
  const code = typeof value === 'number' ? value : typeof value === 'string' && /^\d{3}$/.test(value) ? Number(value) : NaN;
  if (Number.isInteger(code) && code >= 100 && code <= 599) return `${code}` as RetryCondition;
  return report(ctx, path, `must be one of: ${RETRY_ON.join(', ')}, or a status 100..599`);
};

/** A partial retry spec overrides only what it names; the rest comes from DEFAULTS.retries. */
const retries: Validator<RetrySpec> = map(
  object({
    attempts: integer(1, 10),
    perTryTimeout: duration(),
    retryOn: array(retryCondition, { max: 32 }),
    backoff: object({ base: duration(), max: duration() }),
  }),
  (r, path, ctx) => {
    const d = DEFAULTS.retries;
    const baseMs = r.backoff?.base ?? d.backoff.baseMs;
    const maxMs = r.backoff?.max ?? Math.max(d.backoff.maxMs, baseMs);
    if (maxMs < baseMs) return report(ctx, join(path, 'backoff.max'), 'must be at least backoff.base');
    return {
      attempts: r.attempts ?? d.attempts,
      perTryTimeoutMs: r.perTryTimeout ?? d.perTryTimeoutMs,
      retryOn: r.retryOn ?? [...d.retryOn],
      backoff: { baseMs, maxMs },
    };
  },
);

const fault = map(
  object({
    delay: object({ percent: number(0, 100), fixed: duration() }, { required: ['percent', 'fixed'] }),
    abort: object({ percent: number(0, 100), status: integer(200, 599) }, { required: ['percent', 'status'] }),
  }),
  (f) => compact({ delay: f.delay && { percent: f.delay.percent, fixedMs: f.delay.fixed }, abort: f.abort }),
);

const rule: Validator<RouteRule> = map(
  object(
    {
      match: array(routeMatch, { max: 256 }),
      backends,
      timeout: duration(),
      retries,
      retryNonIdempotent: boolean(),
      fault,
      mirror: map(object({ service: name(), percent: number(0, 100) }, { required: ['service'] }), (m) => ({
        service: m.service,
        percent: m.percent ?? 100,
      })),
      rewrite: object({ pathPrefix: absPath(), host: hostname() }),
    },
    { required: ['backends'] },
  ),
  (r) =>
    compact({
      match: r.match ?? [],
      backends: r.backends,
      timeoutMs: r.timeout ?? DEFAULTS.timeoutMs,
      retries: r.retries ?? { ...DEFAULTS.retries, retryOn: [...DEFAULTS.retries.retryOn], backoff: { ...DEFAULTS.retries.backoff } },
      retryNonIdempotent: r.retryNonIdempotent ?? false,
      fault: r.fault,
      mirror: r.mirror,
      rewrite: r.rewrite,
    }),
);

const routeSpec: Validator<RouteSpec> = object(
  { hosts: array(hostname(), { min: 1 }), rules: array(rule, { min: 1, max: 1000 }) },
  { required: ['hosts', 'rules'] },
);

// --- TrafficPolicy ---

const loadBalancer = map(
  object({
    policy: enumOf(['ewma', 'least-request', 'round-robin', 'random', 'ring-hash']),
    hashOn: object({ header: headerName() }, { required: ['header'] }),
  }),
  (lb, path, ctx): TrafficPolicySpec['loadBalancer'] | undefined => {
    const policy = lb.policy ?? 'ewma';
    if (policy === 'ring-hash' && !lb.hashOn) return report(ctx, join(path, 'hashOn'), 'is required for ring-hash');
    if (policy !== 'ring-hash' && lb.hashOn) return report(ctx, join(path, 'hashOn'), 'is only allowed for ring-hash');
    return compact({ policy, hashOn: lb.hashOn });
  },
);

const headerKey = object({ header: headerName() }, { required: ['header'] });

/** `source` or `{ header: NAME }`: the schema DSL has no unions, so the string form is told apart here. */
const rateLimitKey: Validator<RateLimitKey> = (value, path, ctx) => {
  if (value === 'source') return 'source';
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return headerKey(value, path, ctx);
  return report(ctx, path, 'must be "source" or { header: NAME }');
};

const subsets = map(array(object({ name: name(), labels: labels() }, { required: ['name'] })), (ss, path, ctx) => {
  const seen = new Set<string>();
  let ok = true;
  ss.forEach((s, i) => {
    if (seen.has(s.name)) {
      report(ctx, `${path}[${i}].name`, `duplicate subset "${s.name}"`);
      ok = false;
    }
    seen.add(s.name);
  });
  return ok ? ss.map((s) => ({ name: s.name, labels: s.labels ?? {} })) : undefined;
});

const trafficPolicySpec: Validator<TrafficPolicySpec> = map(
  object(
    {
      service: name(),
      loadBalancer,
      subsets,
      tls: object({ mode: enumOf(['mutual', 'disable']) }),
      connectionPool: object({ maxConnections: integer(1, 100_000), maxPendingRequests: integer(0, 1_000_000), idleTimeout: duration() }),
      outlierDetection: object({
        consecutiveFailures: integer(1, 1000),
        interval: duration({ min: 100 }),
        baseEjectionTime: duration(),
        maxEjectionPercent: integer(0, 100),
      }),
      retryBudget: object({ ratio: number(0, 1), minPerSecond: integer(0, 1_000_000) }),
      rateLimit: map(object(
        {
          requestsPerSecond: number(0, 1_000_000), burst: integer(1, 1_000_000), key: rateLimitKey,
          total: object({ requestsPerSecond: number(0, 1_000_000), burst: integer(1, 1_000_000) }, { required: ['requestsPerSecond', 'burst'] }),
        },
        { required: ['requestsPerSecond', 'burst'] },
      ), (r, path, ctx) => (r.total && !r.key ? report(ctx, `${path}.total`, 'needs key: without key the limit is already one bucket for the whole service') : r)),
    },
    { required: ['service'] },
  ),
  (t) => {
    const cp = DEFAULTS.connectionPool;
    const od = DEFAULTS.outlierDetection;
    return compact({
      service: t.service,
      loadBalancer: t.loadBalancer ?? { policy: 'ewma' },
      subsets: t.subsets ?? [],
      tls: { mode: t.tls?.mode ?? 'mutual' },
      connectionPool: {
        maxConnections: t.connectionPool?.maxConnections ?? cp.maxConnections,
        maxPendingRequests: t.connectionPool?.maxPendingRequests ?? cp.maxPendingRequests,
        idleTimeoutMs: t.connectionPool?.idleTimeout ?? cp.idleTimeoutMs,
      },
      outlierDetection: {
        consecutiveFailures: t.outlierDetection?.consecutiveFailures ?? od.consecutiveFailures,
        intervalMs: t.outlierDetection?.interval ?? od.intervalMs,
        baseEjectionTimeMs: t.outlierDetection?.baseEjectionTime ?? od.baseEjectionTimeMs,
        maxEjectionPercent: t.outlierDetection?.maxEjectionPercent ?? od.maxEjectionPercent,
      },
      retryBudget: { ...DEFAULTS.retryBudget, ...t.retryBudget },
      rateLimit: t.rateLimit,
    });
  },
);

// --- AccessPolicy and MeshConfig ---

const accessPath = (): Validator<string> =>
  string({
    check: (s) => s.startsWith('/') && !s.slice(0, -1).includes('*'),
    message: 'must start with "/" and may only end with "*"',
  });

// An omitted `to` (or methods/paths) is stored as [] and means "any", so a rule naming only callers admits them everywhere.
const accessRule = map(
  object(
    {
      from: array(string({ check: (s) => s === '*' || isLabel(s), message: 'must be a service name or "*"' }), { min: 1 }),
      to: array(object({ methods: array(method()), paths: array(accessPath()) })),
    },
    { required: ['from'] },
  ),
  (r) => ({ from: r.from, to: (r.to ?? []).map((t) => ({ methods: t.methods ?? [], paths: t.paths ?? [] })) }),
);

const accessPolicySpec: Validator<AccessPolicySpec> = object(
  { service: name(), action: enumOf(['allow', 'deny']), rules: array(accessRule) },
  { required: ['service', 'action', 'rules'] },
);

const isOtlpEndpoint = (s: string): boolean => s === '' || /^https?:\/\/[^\s]+$/.test(s);

const meshConfigSpec: Validator<MeshConfigSpec> = map(
  object({
    trustDomain: hostname(),
    mtls: enumOf(['strict', 'permissive']),
    // Certificates may live longer than a timer can wait; rotation code schedules against a fraction of the TTL.
    certificateTTL: duration({ min: 1, max: Number.MAX_SAFE_INTEGER }),
    tracing: object({
      sampling: number(0, 1),
      otlpEndpoint: string({ check: isOtlpEndpoint, message: 'must be empty or an http(s) URL' }),
    }),
    accessLog: boolean(),
  }),
  (m) => {
    const d = DEFAULTS.meshConfig;
    return {
      trustDomain: m.trustDomain ?? d.trustDomain,
      mtls: m.mtls ?? d.mtls,
      certificateTTLMs: m.certificateTTL ?? d.certificateTTLMs,
      tracing: { ...d.tracing, ...m.tracing },
      accessLog: m.accessLog ?? d.accessLog,
    };
  },
);

// --- The envelope ---

const SPECS: Readonly<Record<Kind, Validator<unknown>>> = {
  Service: serviceSpec,
  Endpoints: endpointsSpec,
  Route: routeSpec,
  TrafficPolicy: trafficPolicySpec,
  AccessPolicy: accessPolicySpec,
  MeshConfig: meshConfigSpec,
};

/** Kinds whose spec fields all have defaults, so `spec` may be left out entirely. */
const SPEC_OPTIONAL: ReadonlySet<Kind> = new Set(['Service', 'MeshConfig']);

const envelope = object(
  {
    apiVersion: string({ check: (s) => s === API_VERSION, message: `must be "${API_VERSION}"` }),
    kind: (v: unknown) => v,
    metadata: object({ name: name(), namespace: name() }, { required: ['name'] }),
    spec: (v: unknown) => v,
  },
  { required: ['apiVersion', 'kind', 'metadata'] },
);

export interface ValidatedResource {
  readonly kind: Kind;
  readonly metadata: { readonly name: string; readonly namespace: string };
  readonly spec: unknown;
}

/** Checks one parsed YAML document; the spec is typed by `kind` (see SPECS). */
export function validateResource(doc: unknown, ctx: Ctx): ValidatedResource | undefined {
  const env = envelope(doc, '', ctx);
  const raw = doc as Record<string, unknown> | null;
  const kind = raw?.kind;
  if (kind !== undefined && kind !== null && !(KINDS as readonly unknown[]).includes(kind)) {
    return report(ctx, 'kind', typeof kind === 'string' ? `unknown kind "${kind}"` : `must be one of: ${KINDS.join(', ')}`);
  }
  if (typeof kind !== 'string') return undefined;
  const k = kind as Kind;
  let spec: unknown;
  if (raw?.spec === undefined || raw.spec === null) {
    if (!SPEC_OPTIONAL.has(k)) return report(ctx, 'spec', 'is required');
    spec = SPECS[k]({}, 'spec', ctx);
  } else {
    spec = SPECS[k](raw.spec, 'spec', ctx);
  }
  if (!env || spec === undefined) return undefined;
  return { kind: k, metadata: { name: env.metadata.name, namespace: env.metadata.namespace ?? 'default' }, spec };
}
