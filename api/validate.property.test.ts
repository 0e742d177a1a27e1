// Property tests for YAML loading and validation (HARDENING.md "Bad config"): reject with file:line field-path issues, or
// return resources whose invariants hold; never throw.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import safeRegex from 'safe-regex2';
import { stringify } from 'yaml';
import { loadResources } from './load.js';
import { formatIssue, KINDS, type Issue, type Resource } from './resources.js';
import { MAX_TIMER_MS } from './schema.js';
import { validateAll } from './validate-meaning.js';

const RUNS = 200;
const FILE = 'mesh.yaml';

// --- Generators: a coherent mesh (so whole files are often accepted) with rare wrong values and random mutations ---

/** The good value most of the time, now and then the bad one: files stay mostly valid, so acceptance gets tested too. */
const rare = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>): fc.Arbitrary<T | U> =>
  fc.oneof({ weight: 60, arbitrary: good as fc.Arbitrary<T | U> }, { weight: 1, arbitrary: bad as fc.Arbitrary<T | U> });

const SERVICES = ['a', 'b', 'c', 'd'];
const SUBSETS = ['v1', 'v2', 'v3'];
const namespace = rare(fc.constant(undefined), fc.constantFrom('default', 'team', 'Bad_NS'));

const GOOD_DURATIONS = ['0s', '250ms', '2s', '1.5s', '1m', '24h', '0.5ms'];
const ODD_DURATIONS = ['1h30m', '-1s', '1e3ms', '100', '1S', ' 1s', '.5s', '1_000ms', '999999999999999h', '0.0001ms', '2147483648ms', 'P1D', ''];
const duration = rare(fc.constantFrom(...GOOD_DURATIONS), fc.constantFrom<unknown>(...ODD_DURATIONS, 100, -1));

const ODD_NUMBERS: unknown[] = [-1, -0, 0.5, 101, 1e308, Infinity, -Infinity, NaN, 2 ** 53 + 1, '50', true, null, [], {}];
const oddNumber = fc.constantFrom(...ODD_NUMBERS);
const percent = rare(fc.oneof(fc.integer({ min: 0, max: 100 }), fc.double({ min: 0, max: 100, noNaN: true })), oddNumber);
const SAFE_REGEXES = ['^/v[0-9]+/.*$', '/a.*', '^(GET|POST)$', '\\p{L}+'];
const BAD_REGEXES = ['(a+)+$', '(', '[z-a]', '(?<n>x)\\k<n>', 'a{1,99999}', `${'(a|b)*'.repeat(30)}`, 'x'.repeat(1100), '(x*)*y'];
const regex = rare(fc.constantFrom(...SAFE_REGEXES), fc.constantFrom(...BAD_REGEXES));

/** The services of the mesh and the subsets each one's TrafficPolicy defines (undefined: no policy). */
interface World { readonly services: string[]; readonly subsets: Map<string, string[] | undefined> }
const world: fc.Arbitrary<World> = fc.subarray(SERVICES, { minLength: 1 }).chain((services) =>
  fc.tuple(...services.map(() => fc.option(fc.subarray(SUBSETS), { nil: undefined }))).map((subs) => ({
    services, subsets: new Map(services.map((svc, i) => [svc, subs[i]])),
  })));

const meta = (name: string) => namespace.map((ns) => (ns === undefined ? { name } : { name, namespace: ns }));
const doc = (kind: string, name: string, spec: fc.Arbitrary<unknown>) =>
  fc.tuple(meta(name), spec).map(([metadata, s]) => ({ apiVersion: 'mesh/v1', kind, metadata, ...(s === undefined ? {} : { spec: s }) }));

function meshDocs(w: World): fc.Arbitrary<unknown[]> {
  const ref = rare(fc.constantFrom(...w.services), fc.constantFrom('missing', 'Bad'));
  const subsetOf = (svc: string) => rare(fc.constantFrom(...(w.subsets.get(svc)?.length ? w.subsets.get(svc)! : ['v9'])), fc.constant('v9'));

  /** Weights that sum to 100, now and then ones that do not; one backend may leave its weight out. */
  const backends = fc.tuple(fc.array(ref, { minLength: 1, maxLength: 3 }), fc.array(fc.nat(100), { minLength: 3, maxLength: 3 }), rare(fc.constant(true), fc.constant(false)), fc.boolean())
    .chain(([svcs, cuts, exact, omit]) => {
      const sorted = [...cuts].sort((x, y) => x - y).slice(0, svcs.length - 1);
      const weights = svcs.map((_, i) => (exact ? (i === svcs.length - 1 ? 100 : sorted[i]) - (i === 0 ? 0 : sorted[i - 1]) : cuts[i]));
      // A subset only where the service's policy defines some (else now and then, as a mistake).
      const subset = (svc: string) => (w.subsets.get(svc)?.length ? fc.option(subsetOf(svc), { nil: undefined, freq: 2 }) : rare(fc.constant(undefined), fc.constant('v9')));
      return fc.tuple(...svcs.map(subset)).map((subs) => svcs.map((service, i) => ({
        service, ...(subs[i] === undefined ? {} : { subset: subs[i] }), ...(svcs.length === 1 && omit ? {} : { weight: weights[i] }),
      })));
    });

  /** At most one path matcher (two is a rare mistake), a method, headers. */
  const pathMatch = fc.oneof(
    fc.constant({}),
    fc.record({ path: rare(fc.constantFrom('/a', '/v2/x'), fc.constant('rel')) }),
    fc.record({ pathPrefix: fc.constantFrom('/', '/v2') }),
    fc.record({ pathRegex: regex }),
  );
  const match = fc.tuple(rare(pathMatch, fc.constant({ path: '/a', pathPrefix: '/a' })), fc.record({
    method: rare(fc.constantFrom('GET', 'POST'), fc.constant('get')),
    headers: fc.dictionary(rare(fc.constantFrom('x-a', 'X-B'), fc.constantFrom('bad name', 'x-a')), fc.oneof(
      fc.record({ exact: fc.constantFrom('1', 'yes') }),
      fc.record({ prefix: fc.constant('a') }),
      fc.record({ regex }),
      fc.record({ present: fc.boolean() }),
    ), { maxKeys: 2 }),
  }, { requiredKeys: [] })).map(([p, rest]) => ({ ...p, ...rest }));

  /** base <= max, now and then the other way round. */
  const backoff = fc.tuple(fc.constantFrom(0, 25, 1000, 5000), fc.constantFrom(0, 25, 1000, 5000), rare(fc.constant(true), fc.constant(false)), fc.nat(3))
    .map(([x, y, ordered, which]) => {
      const [base, max] = ordered ? [Math.min(x, y), Math.max(x, y)] : [x, y];
      return which === 0 ? {} : which === 1 ? { base: `${base}ms` } : which === 2 ? { max: `${Math.max(max, 250)}ms` } : { base: `${base}ms`, max: `${max}ms` };
    });

  const rule = fc.record({
    match: fc.array(match, { maxLength: 2 }),
    backends,
    timeout: duration,
    retries: fc.record({
      attempts: rare(fc.integer({ min: 1, max: 10 }), fc.constantFrom<unknown>(0, -1, 11, 2.5)),
      perTryTimeout: duration,
      retryOn: fc.array(rare(fc.constantFrom<unknown>('connect-failure', 'reset', '5xx', 503, '503'), fc.constantFrom('600', 'teapot')), { maxLength: 3 }),
      backoff: rare(backoff, fc.record({ base: duration, max: duration }, { requiredKeys: [] })),
    }, { requiredKeys: [] }),
    retryNonIdempotent: fc.boolean(),
    fault: fc.record({
      delay: fc.record({ percent, fixed: duration }),
      abort: fc.record({ percent, status: rare(fc.constantFrom(200, 503, 599), fc.constant(700)) }),
    }, { requiredKeys: [] }),
    mirror: fc.record({ service: ref, percent }, { requiredKeys: ['service'] }),
    rewrite: rare(
      fc.record({ host: rare(fc.constant('a.internal'), fc.constant('Bad_Host')) }, { requiredKeys: [] }),
      fc.record({ pathPrefix: fc.constantFrom('/', '/v1', 'v1'), host: fc.constant('a.internal') }, { requiredKeys: [] }),
    ),
  }, { requiredKeys: ['backends'] });

  const services = w.services.map((svc) => doc('Service', svc, fc.option(fc.record({ protocol: rare(fc.constantFrom('http', 'grpc', 'tcp'), fc.constant('udp')) }), { nil: undefined })));
  const policies = w.services.filter((svc) => w.subsets.get(svc) !== undefined).map((svc) => doc('TrafficPolicy', `tp-${svc}`, fc.record({
    service: rare(fc.constant(svc), ref),
    subsets: fc.constant((w.subsets.get(svc) ?? []).map((name) => ({ name, labels: { version: name } }))),
    loadBalancer: rare(fc.record({ policy: fc.constantFrom('ewma', 'random') }), fc.record({ policy: fc.constant('ring-hash'), hashOn: fc.record({ header: fc.constantFrom('x-user', 'X-User', 'bad header') }, { requiredKeys: [] }) }, { requiredKeys: [] })),
    connectionPool: fc.record({ maxConnections: rare(fc.integer({ min: 1, max: 1000 }), oddNumber), idleTimeout: duration }, { requiredKeys: [] }),
    outlierDetection: fc.record({ consecutiveFailures: rare(fc.integer({ min: 1, max: 10 }), fc.constant(0)), interval: rare(fc.constant('1s'), duration), baseEjectionTime: duration, maxEjectionPercent: rare(fc.integer({ min: 0, max: 100 }), oddNumber) }, { requiredKeys: [] }),
    retryBudget: fc.record({ ratio: rare(fc.double({ min: 0, max: 1, noNaN: true }), oddNumber), minPerSecond: fc.nat(100) }, { requiredKeys: [] }),
    rateLimit: fc.record({ requestsPerSecond: rare(fc.nat(1000), oddNumber), burst: fc.integer({ min: 1, max: 100 }), key: rare(fc.constantFrom<unknown>('source', { header: 'X-Client' }), fc.constant('client')) }, { requiredKeys: ['requestsPerSecond', 'burst'] }),
  }, { requiredKeys: ['service', 'subsets'] })));
  const endpoints = w.services.map((svc, i) => doc('Endpoints', `ep-${svc}`, fc.record({
    service: rare(fc.constant(svc), ref),
    endpoints: fc.array(fc.record({
      address: rare(fc.constantFrom(`127.0.0.1:${9000 + i}`, `10.0.0.${i + 1}:80`, `[::1]:${8080 + i}`, `node-${i}.local:80`), fc.constantFrom('::1:80', '127.0.0.1:0', '999.1.1.1:80', 'h:65536')),
      labels: fc.dictionary(fc.constant('version'), fc.constantFrom(...SUBSETS), { maxKeys: 1 }),
    }, { requiredKeys: ['address'] }), { maxLength: 1 }),
  })));
  const routes = [0, 1].map((i) => doc('Route', `r${i}`, fc.record({
    hosts: fc.tuple(rare(fc.constant(`h${i}.internal`), fc.constantFrom('shared', 'Bad_Host'))).map((h) => h),
    rules: fc.array(rule, { minLength: 1, maxLength: 2 }),
  })));
  const access = doc('AccessPolicy', 'p', fc.record({
    service: ref,
    action: rare(fc.constantFrom('allow', 'deny'), fc.constant('audit')),
    rules: fc.array(fc.record({
      from: fc.array(rare(fc.constantFrom('*', ...w.services), fc.constant('Bad')), { minLength: 1, maxLength: 2 }),
      to: fc.array(fc.record({ methods: fc.array(rare(fc.constant('GET'), fc.constant('get')), { maxLength: 1 }), paths: fc.array(rare(fc.constantFrom('/x', '/x/*'), fc.constantFrom('/*/y', 'x')), { maxLength: 2 }) }, { requiredKeys: [] }), { maxLength: 2 }),
    }, { requiredKeys: ['from'] }), { maxLength: 2 }),
  }));
  const mesh = doc('MeshConfig', 'default', fc.option(fc.record({
    trustDomain: rare(fc.constant('mesh.local'), fc.constant('Bad Domain')),
    mtls: rare(fc.constantFrom('strict', 'permissive'), fc.constant('off')),
    certificateTTL: rare(fc.constantFrom('1h', '24h', '8760h'), duration),
    tracing: fc.record({ sampling: rare(fc.double({ min: 0, max: 1, noNaN: true }), oddNumber), otlpEndpoint: rare(fc.constantFrom('', 'http://otel:4318'), fc.constant('otel')) }, { requiredKeys: [] }),
    accessLog: rare(fc.boolean(), fc.constant('yes')),
  }, { requiredKeys: [] }), { nil: undefined }));
  // Services and policies (the world) always; the rest each in or out; then shuffled, so references point both ways.
  const optional = [...endpoints, ...routes, access, mesh].map((a) => fc.option(a, { nil: undefined }));
  return fc.tuple(fc.tuple(...services, ...policies), fc.tuple(...optional)).chain(([ss, os]) => {
    const all = [...ss, ...os.filter((o) => o !== undefined)];
    return fc.shuffledSubarray(all, { minLength: all.length });
  });
}

/** One change to a document: at the `at`-th node (in a walk of the tree), replace, add an unknown field, or delete. */
interface Mutation { readonly at: number; readonly kind: 'replace' | 'unknown' | 'delete' | 'wrap'; readonly value: unknown }
const mutation = fc.record({
  at: fc.nat(200),
  kind: fc.constantFrom('replace', 'unknown', 'delete', 'wrap'),
  value: fc.oneof(oddNumber, fc.constantFrom<unknown>('x', '', 'GET', 'a', '/x', 'v1', '-1s', 1e400, { a: 1 }, ['a', 1]), fc.string({ maxLength: 5 })),
}) as fc.Arbitrary<Mutation>;

function nodes(v: unknown, out: [Record<string, unknown> | unknown[], string | number][] = []): typeof out {
  if (Array.isArray(v)) v.forEach((x, i) => { out.push([v, i]); nodes(x, out); });
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) { out.push([v as Record<string, unknown>, k]); nodes(x, out); }
  return out;
}

function mutate(d: unknown, m: Mutation): void {
  const all = nodes(d);
  if (all.length === 0) return;
  const [parent, key] = all[m.at % all.length];
  const slot = parent as Record<string | number, unknown>;
  if (m.kind === 'replace') slot[key] = m.value;
  else if (m.kind === 'wrap') slot[key] = [slot[key]];
  else if (m.kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(key as number, 1);
    else delete slot[key];
  } else if (slot[key] && typeof slot[key] === 'object' && !Array.isArray(slot[key])) (slot[key] as Record<string, unknown>).unknwon = m.value;
  else if (!Array.isArray(parent)) slot[`${String(key)}x`] = m.value;
}

/** Raw YAML documents no generator of objects produces: syntax errors, aliases, tags, YAML 1.1 types, odd keys. */
const RAW_DOCS: string[] = [
  '- a\n- b\n', 'just a string\n', 'kind: Service\nmetadata: { name: [\n', '? [a, b]\n: c\n', 'a: &x { b: 1 }\nc: *x\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: !!binary YQ== }\n', 'apiVersion: mesh/v1\nkind: Service\nmetadata: &m { name: d }\nspec: *m\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: d }\nmetadata: { name: e }\n', '__proto__: { kind: Service }\nkind: Service\n',
  'apiVersion: mesh/v1\nkind: [Service]\nmetadata: { name: d }\n', 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: d, constructor: 1 }\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: d }\nspec: { protocol: !!str 5 }\n', '\t- tab\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: d }\nspec: !!set { a, b }\n', '? *undefined\n: x\n', '*undefined\n',
  'apiVersion: mesh/v1\nkind: Route\nmetadata: { name: d }\nspec:\n  hosts: [d]\n  rules:\n    - backends: [ { service: a, weight: 1e400 } ]\n',
];
RAW_DOCS.push(
  'a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n',
  'apiVersion: mesh/v1\nkind: Route\nmetadata: { name: d }\nspec:\n  hosts: [d]\n  rules:\n    - backends: [ { service: a, weight: 0x64 } ]\n      timeout: !!float 1\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: d }\n? { a: 1 }\n: complex key\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: "\\u0000" }\n',
  'apiVersion: mesh/v1\nkind: Service\nmetadata:\n  name: d\n  <<: { namespace: x }\n',
  '!!map { apiVersion: mesh/v1, kind: Service, metadata: { name: d } }\n', '--- |\n  text\n', '%TAG ! tag:x,2000:\n---\n!foo { a: 1 }\n',
);
const YAML11 = '%YAML 1.1\n---\napiVersion: mesh/v1\nkind: TrafficPolicy\nmetadata: { name: y, ts: 2001-12-14 }\nspec: { service: a, connectionPool: { maxConnections: 1_000 } }\n';

const file = fc.tuple(
  world.chain(meshDocs),
  fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
  fc.array(fc.nat(20), { minLength: 3, maxLength: 3 }),
  rare(fc.constant([]), fc.array(fc.constantFrom(...RAW_DOCS, YAML11), { minLength: 1, maxLength: 1 })),
).map(([docs, mutations, targets, raw]) => {
  mutations.forEach((m, i) => mutate(docs[targets[i] % docs.length], m));
  const texts = docs.map((d) => stringify(d, { lineWidth: 0 }));
  if (raw.length) texts.splice(targets[0] % (texts.length + 1), 0, ...raw);
  return texts.join('---\n');
});

// --- Invariants of what loading returns ---

type Check = (v: unknown) => boolean;
type Shape = Check | { readonly [field: string]: Shape } | readonly [Shape];

const str: Check = (v) => typeof v === 'string';
const bool: Check = (v) => typeof v === 'boolean';
const int = (min: number, max: number): Check => (v) => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
const num = (min: number, max: number): Check => (v) => Number.isFinite(v) && (v as number) >= min && (v as number) <= max;
const ms = (max = MAX_TIMER_MS): Check => int(0, max);
const labelMap: Check = (v) => !!v && typeof v === 'object' && Object.values(v).every(str);
const oneOf = (...xs: string[]): Check => (v) => xs.includes(v as string);
const stringMatch: Check = (v) => {
  const keys = Object.keys(v as object);
  return keys.length === 1 && (keys[0] === 'present' ? bool((v as { present: unknown }).present) : ['exact', 'prefix', 'regex'].includes(keys[0]) && str(Object.values(v as object)[0]));
};

const SPEC_SHAPES: Readonly<Record<string, Shape>> = {
  Service: { protocol: oneOf('http', 'grpc', 'tcp') },
  Endpoints: { service: str, endpoints: [{ address: str, host: str, port: int(1, 65535), labels: labelMap }] },
  Route: {
    hosts: [str],
    rules: [{
      match: [{ path: str, pathPrefix: str, pathRegex: str, method: str, headers: (v) => !!v && typeof v === 'object' && Object.values(v).every(stringMatch) }],
      backends: [{ service: str, subset: str, weight: int(0, 100) }],
      timeoutMs: ms(),
      retries: { attempts: int(1, 10), perTryTimeoutMs: ms(), retryOn: [str], backoff: { baseMs: ms(), maxMs: ms() } },
      retryNonIdempotent: bool,
      fault: { delay: { percent: num(0, 100), fixedMs: ms() }, abort: { percent: num(0, 100), status: int(200, 599) } },
      mirror: { service: str, percent: num(0, 100) },
      rewrite: { pathPrefix: str, host: str },
    }],
  },
  TrafficPolicy: {
    service: str,
    loadBalancer: { policy: oneOf('ewma', 'least-request', 'round-robin', 'random', 'ring-hash'), hashOn: { header: str } },
    subsets: [{ name: str, labels: labelMap }],
    tls: { mode: oneOf('mutual', 'disable') },
    connectionPool: { maxConnections: int(1, 100_000), maxPendingRequests: int(0, 1_000_000), idleTimeoutMs: ms() },
    outlierDetection: { consecutiveFailures: int(1, 1000), intervalMs: ms(), baseEjectionTimeMs: ms(), maxEjectionPercent: int(0, 100) },
    retryBudget: { ratio: num(0, 1), minPerSecond: int(0, 1_000_000) },
    rateLimit: { requestsPerSecond: num(0, 1_000_000), burst: int(1, 1_000_000), key: (v) => v === 'source' || (typeof v === 'object' && v !== null && Object.keys(v).join() === 'header') },
  },
  AccessPolicy: { service: str, action: oneOf('allow', 'deny'), rules: [{ from: [str], to: [{ methods: [str], paths: [str] }] }] },
  MeshConfig: {
    trustDomain: str, mtls: oneOf('strict', 'permissive'), certificateTTLMs: ms(Number.MAX_SAFE_INTEGER), accessLog: bool,
    tracing: { sampling: num(0, 1), otlpEndpoint: str },
  },
};

/** Every field of `v` is one the shape names (no unknown field survives) and every leaf passes its check. */
function shapeProblems(v: unknown, shape: Shape, path: string, out: string[]): string[] {
  if (typeof shape === 'function') {
    if (!shape(v)) out.push(`${path}: ${JSON.stringify(v)}`);
  } else if (Array.isArray(shape)) {
    if (!Array.isArray(v)) out.push(`${path}: not a list`);
    else v.forEach((x, i) => shapeProblems(x, (shape as readonly [Shape])[0], `${path}[${i}]`, out));
  } else if (!v || typeof v !== 'object' || Array.isArray(v)) {
    out.push(`${path}: not a map`);
  } else {
    for (const [k, x] of Object.entries(v)) {
      const s = (shape as Record<string, Shape>)[k];
      if (!Object.hasOwn(shape, k)) out.push(`${path}.${k}: unknown field survived`);
      else shapeProblems(x, s, `${path}.${k}`, out);
    }
  }
  return out;
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** What holds for every resource the loader returns, whatever else in the file was wrong. */
function structuralProblems(r: Resource): string[] {
  const out: string[] = [];
  if (!KINDS.includes(r.kind)) out.push(`kind ${r.kind}`);
  if (!NAME.test(r.metadata.name) || !NAME.test(r.metadata.namespace)) out.push(`metadata ${JSON.stringify(r.metadata)}`);
  if (Object.keys(r.metadata).sort().join() !== 'name,namespace') out.push('metadata has unknown fields');
  shapeProblems(r.spec, SPEC_SHAPES[r.kind], `${r.kind}/${r.metadata.name} spec`, out);
  if (r.kind === 'Route') {
    for (const rule of r.spec.rules) {
      if (rule.backends.length === 0) out.push('rule without backends');
      if (rule.retries.backoff.maxMs < rule.retries.backoff.baseMs) out.push('backoff.max < backoff.base');
    }
  }
  return out;
}

/** What holds once the whole file was accepted: the cross-resource invariants validate-meaning owns. */
function meaningProblems(resources: readonly Resource[]): string[] {
  const out: string[] = [];
  const services = new Set(resources.filter((r) => r.kind === 'Service').map((r) => `${r.metadata.namespace}/${r.metadata.name}`));
  const subsets = new Map<string, Set<string>>();
  for (const r of resources) if (r.kind === 'TrafficPolicy') subsets.set(`${r.metadata.namespace}/${r.spec.service}`, new Set(r.spec.subsets.map((s) => s.name)));
  const known = (ns: string, s: string) => services.has(`${ns}/${s}`);
  for (const r of resources) {
    const ns = r.metadata.namespace;
    if ((r.kind === 'Endpoints' || r.kind === 'TrafficPolicy' || r.kind === 'AccessPolicy') && !known(ns, r.spec.service)) out.push(`${r.kind} names missing ${r.spec.service}`);
    if (r.kind !== 'Route') continue;
    r.spec.rules.forEach((rule, i) => {
      const sum = rule.backends.reduce((a, b) => a + b.weight, 0);
      if (sum !== 100) out.push(`Route/${r.metadata.name} rule ${i} weights sum to ${sum}`);
      for (const b of rule.backends) {
        if (!known(ns, b.service)) out.push(`backend names missing service ${b.service}`);
        else if (b.subset !== undefined && !subsets.get(`${ns}/${b.service}`)?.has(b.subset)) out.push(`backend names missing subset ${b.service}/${b.subset}`);
      }
      if (rule.mirror && !known(ns, rule.mirror.service)) out.push(`mirror names missing service ${rule.mirror.service}`);
      for (const m of rule.match) {
        for (const re of [m.pathRegex, ...Object.values(m.headers).map((h) => ('regex' in h ? h.regex : undefined))]) {
          if (re === undefined) continue;
          if (re.length > 1024 || !safeRegex(re)) out.push(`unsafe regex ${re.slice(0, 40)}`);
          else new RegExp(re);
        }
      }
    });
  }
  return out;
}

/** An issue names the file, a line inside it, and a field path (only document-level problems have none). */
function issueProblems(i: Issue, text: string): string[] {
  const out: string[] = [];
  const lines = text.split('\n').length;
  if (i.file !== FILE) out.push(`file ${i.file}`);
  if (!Number.isInteger(i.line) || i.line < 1 || i.line > lines) out.push(`line ${i.line} of ${lines}`);
  if (!formatIssue(i).startsWith(`${FILE}:${i.line} `)) out.push(`formatted as ${formatIssue(i)}`);
  if (i.path === '' && !(i.resource === '' && /^(yaml: |document must be a map)/.test(i.message))) out.push(`no field path: ${formatIssue(i)}`);
  if (i.message === '') out.push('empty message');
  return out;
}

describe('loading and validation properties', () => {
  // Guards against YAML features (aliases, tags, complex keys, YAML 1.1 types, syntax errors) crashing the loader.
  it('never throws on hostile YAML, and still names file:line for every issue', () => {
    const hostile = fc.array(fc.constantFrom(...RAW_DOCS, YAML11, ...RAW_DOCS.map((d) => `%YAML 1.1\n---\n${d}`)), { minLength: 1, maxLength: 3 });
    fc.assert(fc.property(hostile, fc.option(world.chain(meshDocs), { nil: undefined }), (raw, docs) => {
      const text = [...raw, ...(docs ?? []).map((d) => stringify(d))].join('\n---\n');
      let result: ReturnType<typeof validateAll> | undefined;
      expect(() => { result = validateAll(text, FILE); }).not.toThrow();
      expect(result!.issues.flatMap((i) => issueProblems(i, text))).toEqual([]);
      expect(result!.resources.flatMap(structuralProblems)).toEqual([]);
    }), { numRuns: 100, examples: RAW_DOCS.map((d): [string[], unknown[] | undefined] => [[d], undefined]) });
  });

  // Guards against a crafted or mistyped file crashing `mesh validate`, `mesh apply` or the control plane.
  it('never throws, and every issue names file:line and a field path', () => {
    fc.assert(fc.property(file, (text) => {
      let result: ReturnType<typeof validateAll> | undefined;
      expect(() => { result = validateAll(text, FILE); }).not.toThrow();
      const problems = result!.issues.flatMap((i) => issueProblems(i, text));
      expect(problems).toEqual([]);
    }), { numRuns: RUNS });
  });

  // Guards against a half-valid resource (wrong type, out-of-range number, unknown field) slipping into a snapshot.
  it('returns only resources whose fields are known, typed and in range', () => {
    fc.assert(fc.property(file, (text) => {
      const { resources } = loadResources(text, FILE);
      expect(resources.flatMap(structuralProblems)).toEqual([]);
    }), { numRuns: RUNS });
  });

  // Guards against accepting a mesh with dangling references, weights not summing to 100, or a catastrophic regex.
  it('accepts a file only when every cross-resource invariant holds', () => {
    fc.assert(fc.property(file, (text) => {
      const { resources, issues } = validateAll(text, FILE);
      if (issues.length > 0) return;
      expect(meaningProblems(resources)).toEqual([]);
    }), { numRuns: RUNS });
  });
});

