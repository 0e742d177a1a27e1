// Cross-resource validation: dangling references, duplicates, weight sums and unsafe regexes over a whole set of structurally valid resources.
import safeRegex from 'safe-regex2';
import type { LoadResult } from './load.js';
import { lineOf, loadResourceFiles, loadResources } from './load.js';
import type { Issue, Resource, RouteResource, RouteRule } from './resources.js';

export const MAX_REGEX_LENGTH = 1024;

type Report = (r: Resource, path: string, message: string) => void;

const labelOf = (r: Resource): string => `${r.kind}/${r.metadata.name}`;
const where = (r: Resource, path: string): string => `${r.source.file}:${lineOf(r.source, path)}`;

/**
 * Why a regex cannot be used, or undefined. Routes run these on every request, so a pattern that backtracks
 * exponentially is a denial of service waiting for the right path.
 */
export function regexProblem(source: string): string | undefined {
  if (source.length > MAX_REGEX_LENGTH) return `regex is longer than ${MAX_REGEX_LENGTH} characters`;
  try {
    new RegExp(source);
  } catch (err) {
    // V8 says `Invalid regular expression: /(/: Unterminated group`; the last part is the useful one.
    const reason = (err as Error).message.split(': ').pop() ?? 'invalid';
    return `regex does not compile: ${reason.charAt(0).toLowerCase()}${reason.slice(1)}`;
  }
  if (!safeRegex(source)) return 'regex is too complex (nested quantifiers can backtrack catastrophically)';
  return undefined;
}

/** Same kind, namespace and name twice: the later one would silently replace the earlier in the store. */
function checkDuplicateNames(resources: readonly Resource[], report: Report): void {
  const seen = new Map<string, Resource>();
  for (const r of resources) {
    if (r.kind === 'MeshConfig') continue;
    const key = `${r.kind}/${r.metadata.namespace}/${r.metadata.name}`;
    const first = seen.get(key);
    if (first) report(r, 'metadata.name', `${labelOf(r)} is already defined at ${where(first, 'metadata.name')}`);
    else seen.set(key, r);
  }
}

function checkMeshConfig(resources: readonly Resource[], report: Report): void {
  let first: Resource | undefined;
  for (const r of resources) {
    if (r.kind !== 'MeshConfig') continue;
    if (r.metadata.name !== 'default') report(r, 'metadata.name', 'MeshConfig must be named "default"');
    if (first) report(r, 'metadata.name', `only one MeshConfig is allowed, ${labelOf(first)} is at ${where(first, '')}`);
    else first = r;
  }
}

function checkRouteRule(route: RouteResource, rule: RouteRule, path: string, ctx: Context): void {
  const ns = route.metadata.namespace;
  let sum = 0;
  rule.backends.forEach((b, i) => {
    sum += b.weight;
    const bp = `${path}.backends[${i}]`;
    if (!ctx.serviceKnown(ns, b.service)) {
      ctx.report(route, `${bp}.service`, `references unknown service "${b.service}"`);
    } else if (b.subset !== undefined && !ctx.subsetKnown(ns, b.service, b.subset)) {
      ctx.report(route, `${bp}.subset`, `references unknown subset "${b.subset}" of service "${b.service}"`);
    }
  });
  if (sum !== 100) ctx.report(route, `${path}.backends`, `weights sum to ${sum}, must be 100`);
  if (rule.mirror && !ctx.serviceKnown(ns, rule.mirror.service)) {
    ctx.report(route, `${path}.mirror.service`, `references unknown service "${rule.mirror.service}"`);
  }
  rule.match.forEach((m, i) => {
    const mp = `${path}.match[${i}]`;
    const problem = m.pathRegex === undefined ? undefined : regexProblem(m.pathRegex);
    if (problem) ctx.report(route, `${mp}.pathRegex`, problem);
    for (const [name, hm] of Object.entries(m.headers)) {
      const hp = 'regex' in hm ? regexProblem(hm.regex) : undefined;
      if (hp) ctx.report(route, `${mp}.headers.${name}.regex`, hp);
    }
  });
  // A prefix rewrite replaces the matched prefix; a regex match has no prefix to replace.
  if (rule.rewrite?.pathPrefix !== undefined && rule.match.some((m) => m.pathRegex !== undefined)) {
    ctx.report(route, `${path}.rewrite.pathPrefix`, 'rewrite.pathPrefix needs path or pathPrefix matches');
  }
}

interface Context {
  readonly report: Report;
  serviceKnown(namespace: string, service: string): boolean;
  subsetKnown(namespace: string, service: string, subset: string): boolean;
}

/**
 * `rejected` holds `Kind/name` of resources that failed structural validation: references to them are not
 * reported again, so one typo in a Service does not also produce an "unknown service" on every Route.
 */
function createContext(resources: readonly Resource[], rejected: ReadonlySet<string>, report: Report): Context {
  const services = new Set<string>();
  const policies = new Map<string, Resource & { kind: 'TrafficPolicy' }>();
  for (const r of resources) {
    const ns = r.metadata.namespace;
    if (r.kind === 'Service') services.add(`${ns}/${r.metadata.name}`);
    if (r.kind !== 'TrafficPolicy') continue;
    const key = `${ns}/${r.spec.service}`;
    const first = policies.get(key);
    if (first) report(r, 'spec.service', `service "${r.spec.service}" already has ${labelOf(first)} at ${where(first, 'spec.service')}`);
    else policies.set(key, r);
  }
  // A rejected TrafficPolicy may have been the one defining the subset; its own issues already say what is wrong.
  const policyRejected = [...rejected].some((l) => l.startsWith('TrafficPolicy/'));
  return {
    report,
    serviceKnown: (ns, service) => services.has(`${ns}/${service}`) || rejected.has(`Service/${service}`),
    subsetKnown: (ns, service, subset) => {
      const policy = policies.get(`${ns}/${service}`);
      if (!policy) return policyRejected;
      return policy.spec.subsets.some((s) => s.name === subset);
    },
  };
}

/** Two Endpoints resources listing one address would double that endpoint's share of the traffic. */
function checkAddresses(resources: readonly Resource[], report: Report): void {
  const addresses = new Map<string, Resource>();
  for (const r of resources) {
    if (r.kind !== 'Endpoints') continue;
    r.spec.endpoints.forEach((e, i) => {
      const key = `${r.metadata.namespace}/${r.spec.service}/${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
      const first = addresses.get(key);
      if (!first) addresses.set(key, r);
      else {
        const message = `address "${e.address}" is already an endpoint of service "${r.spec.service}" in ${labelOf(first)}`;
        report(r, `spec.endpoints[${i}].address`, message);
      }
    });
  }
}

/** Hosts are global: a sidecar picks the Route by Host header alone, so two Routes for one host would be a coin toss. */
function checkRoutes(resources: readonly Resource[], ctx: Context): void {
  const hosts = new Map<string, Resource>();
  for (const r of resources) {
    if (r.kind !== 'Route') continue;
    r.spec.hosts.forEach((h, i) => {
      const first = hosts.get(h);
      if (first) ctx.report(r, `spec.hosts[${i}]`, `host "${h}" is already routed by ${labelOf(first)}`);
      else hosts.set(h, r);
    });
    r.spec.rules.forEach((rule, i) => checkRouteRule(r, rule, `spec.rules[${i}]`, ctx));
  }
}

/** Every cross-resource problem in the set, each pointing at the file, line and field it is about. */
export function validateMeaning(resources: readonly Resource[], rejected: ReadonlySet<string> = new Set()): Issue[] {
  const issues: Issue[] = [];
  const report: Report = (r, path, message) =>
    issues.push({ file: r.source.file, line: lineOf(r.source, path), resource: labelOf(r), path, message });
  checkDuplicateNames(resources, report);
  checkMeshConfig(resources, report);
  const ctx = createContext(resources, rejected, report);
  for (const r of resources) {
    if (r.kind !== 'Endpoints' && r.kind !== 'TrafficPolicy' && r.kind !== 'AccessPolicy') continue;
    if (!ctx.serviceKnown(r.metadata.namespace, r.spec.service)) {
      report(r, 'spec.service', `references unknown service "${r.spec.service}"`);
    }
  }
  checkAddresses(resources, report);
  checkRoutes(resources, ctx);
  return issues;
}

/**
 * Problems that are legal but most likely mistakes, which `mesh validate` prints as warnings without failing: an
 * AccessPolicy caller one or two edits away from a Service in the set (a typo denies the caller it meant). A name far
 * from every Service is no warning: a client-only caller (a cron job, a CLI) needs no Service resource.
 */
export function validateWarnings(resources: readonly Resource[]): Issue[] {
  const names = new Map<string, string[]>();
  for (const r of resources) if (r.kind === 'Service') (names.get(r.metadata.namespace) ?? names.set(r.metadata.namespace, []).get(r.metadata.namespace)!).push(r.metadata.name);
  const warnings: Issue[] = [];
  for (const r of resources) {
    if (r.kind !== 'AccessPolicy') continue;
    const known = names.get(r.metadata.namespace) ?? [];
    r.spec.rules.forEach((rule, i) => rule.from.forEach((name, j) => {
      if (name === '*' || known.includes(name)) return;
      const near = known.find((k) => editDistance(k, name) <= Math.min(2, Math.floor(name.length / 3)));
      if (near === undefined) return;
      const path = `spec.rules[${i}].from[${j}]`;
      warnings.push({
        file: r.source.file, line: lineOf(r.source, path), resource: labelOf(r), path,
        message: `warning: no Service "${name}" in these files (did you mean "${near}"?); as written, it matches only a caller whose certificate names "${name}"`,
      });
    }));
  }
  return sortIssues(warnings);
}

/** Levenshtein distance (names are short: at most 63 characters). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/** Issues in reading order: by file, then line; issues on one line keep the order they were found in. */
export function sortIssues(issues: readonly Issue[]): Issue[] {
  return [...issues].sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line));
}

/** Labels of resources that have structural issues but did not load, for validateMeaning's `rejected`. */
function rejectedLabels(loaded: LoadResult): Set<string> {
  const ok = new Set(loaded.resources.map(labelOf));
  return new Set(loaded.issues.map((i) => i.resource).filter((l) => l !== '' && !ok.has(l)));
}

function finish(loaded: LoadResult): LoadResult {
  const meaning = validateMeaning(loaded.resources, rejectedLabels(loaded));
  return { resources: loaded.resources, issues: sortIssues([...loaded.issues, ...meaning]) };
}

/** Structure and meaning of one YAML text: what `mesh validate` and `mesh apply` run before anything changes. */
export function validateAll(text: string, file: string): LoadResult {
  return finish(loadResources(text, file));
}

export async function validateFiles(paths: readonly string[]): Promise<LoadResult> {
  return finish(await loadResourceFiles(paths));
}
