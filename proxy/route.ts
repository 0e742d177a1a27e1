// Outbound routing: compileRoutes(snapshot) builds the host → rules table once; matchRoute picks the first matching rule.
import type { IncomingHttpHeaders } from 'node:http';
import { MeshError } from '../api/errors.js';
import { DEFAULTS, type RouteMatch, type RouteRule, type StringMatch } from '../api/resources.js';
import type { Snapshot } from '../api/snapshot.js';
import type { Exchange } from './exchange.js';
import { headerValue } from './headers.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';
import type { CompiledBackend, CompiledMatch, CompiledRule, HeaderTest, RouteTable } from './compiled.js';
import { compileRetryPolicy } from './retry-policy.js';
import type { Telemetry } from './telemetry.js';

/** Compiles every Route, plus a default rule for each Service no Route claims (DESIGN.md §3). */
export function compileRoutes(snapshot: Snapshot, telemetry: Telemetry, sourceService: string): RouteTable {
  const byHost = new Map<string, CompiledRule[]>();
  for (const route of snapshot.routes) {
    const rules = route.rules.map((r) => compileRule(route.name, r, telemetry, sourceService));
    for (const host of route.hosts) byHost.set(host.toLowerCase(), rules);
  }
  for (const svc of snapshot.services) {
    if (byHost.has(svc.name)) continue;
    const rule: RouteRule = {
      match: [],
      backends: [{ service: svc.name, weight: 100 }],
      timeoutMs: DEFAULTS.timeoutMs,
      retries: DEFAULTS.retries,
      retryNonIdempotent: false,
    };
    byHost.set(svc.name, [compileRule('default', rule, telemetry, sourceService)]);
  }
  return { byHost };
}

export function compileRule(routeName: string, r: RouteRule, telemetry: Telemetry, source: string): CompiledRule {
  let cumulative = 0;
  const backends = r.backends
    .filter((b) => b.weight > 0)
    .map((b) => {
      cumulative += b.weight;
      return Object.freeze({
        service: b.service,
        subset: b.subset ?? '',
        cumulative,
        stats: telemetry.routeStats('outbound', source, b.service, routeName),
      });
    });
  const f = r.fault;
  return Object.freeze({
    routeName,
    matches: r.match.map(compileMatch),
    backends,
    totalWeight: cumulative,
    timeoutMs: r.timeoutMs,
    retry: compileRetryPolicy(r.retries, r.retryNonIdempotent),
    fault: f && Object.freeze({
      delayFraction: (f.delay?.percent ?? 0) / 100,
      delayMs: f.delay?.fixedMs ?? 0,
      abortFraction: (f.abort?.percent ?? 0) / 100,
      abortStatus: f.abort?.status ?? 503,
    }),
    mirror: r.mirror && Object.freeze({ service: r.mirror.service, fraction: r.mirror.percent / 100 }),
    rewrite: r.rewrite,
  });
}

function compileMatch(m: RouteMatch): CompiledMatch {
  return Object.freeze({
    path: m.path,
    pathPrefix: m.pathPrefix,
    // Anchored: a route regex describes the whole path, as in Envoy's safe_regex.
    pathRegex: m.pathRegex === undefined ? undefined : new RegExp(`^(?:${m.pathRegex})$`),
    method: m.method,
    headers: Object.entries(m.headers).map(([name, sm]) => [name.toLowerCase(), headerTest(sm)] as const),
  });
}

function headerTest(sm: StringMatch): HeaderTest {
  if ('exact' in sm) return (v) => v === sm.exact;
  if ('prefix' in sm) return (v) => v !== undefined && v.startsWith(sm.prefix);
  if ('regex' in sm) {
    const re = new RegExp(`^(?:${sm.regex})$`);
    return (v) => v !== undefined && re.test(v);
  }
  return sm.present ? (v) => v !== undefined : (v) => v === undefined;
}

/** Segment-aware prefix: `/v2` matches `/v2` and `/v2/x`, not `/v2x` (Gateway API PathPrefix). */
export function hasPathPrefix(path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false;
  return path.length === prefix.length || prefix.endsWith('/') || path.charCodeAt(prefix.length) === 0x2f;
}

function matches(m: CompiledMatch, path: string, method: string, headers: IncomingHttpHeaders): boolean {
  if (m.method !== undefined && m.method !== method) return false;
  if (m.path !== undefined && m.path !== path) return false;
  if (m.pathPrefix !== undefined && !hasPathPrefix(path, m.pathPrefix)) return false;
  if (m.pathRegex !== undefined && !m.pathRegex.test(path)) return false;
  for (const [name, test] of m.headers) if (!test(headerValue(headers, name))) return false;
  return true;
}

/** The first rule of the host's Route that matches; any match entry may match, fields within one are ANDed. */
export function matchRoute(table: RouteTable, host: string, path: string, method: string, headers: IncomingHttpHeaders): CompiledRule | undefined {
  const rules = table.byHost.get(host);
  if (!rules) return undefined;
  for (const rule of rules) {
    if (rule.matches.length === 0) return rule;
    for (const m of rule.matches) if (matches(m, path, method, headers)) return rule;
  }
  return undefined;
}

/** Weighted choice among a rule's backends; `roll` is uniform in [0, 1). */
export function pickBackend(rule: CompiledRule, roll: number): CompiledBackend | undefined {
  const x = roll * rule.totalWeight;
  for (const b of rule.backends) if (x < b.cumulative) return b;
  return rule.backends[rule.backends.length - 1];
}

/** Applies a rule's pathPrefix rewrite to the path that matched it. */
export function rewritePath(rule: CompiledRule, path: string, method: string, headers: IncomingHttpHeaders): string {
  const to = rule.rewrite?.pathPrefix;
  if (to === undefined) return path;
  let from = '/';
  for (const m of rule.matches) {
    if (!matches(m, path, method, headers)) continue;
    from = m.path ?? m.pathPrefix ?? '/';
    break;
  }
  const rest = path.slice(from.length);
  if (to.endsWith('/') && rest.startsWith('/')) return to + rest.slice(1);
  if (!to.endsWith('/') && rest !== '' && !rest.startsWith('/')) return `${to}/${rest}`;
  return to + rest || '/';
}

/**
 * The route stage: finds the rule, picks the weighted backend, applies the rewrite. Unmatched requests get
 * 404 `no-route`, as Envoy does.
 */
export function routeLayer(table: () => RouteTable, random: () => number): Layer {
  return (next: Handler): Handler => (ex: Exchange) => {
    const rule = matchRoute(table(), ex.authority, ex.path, ex.method, ex.req.headers);
    if (!rule) {
      respondError(ex, new MeshError('no-route', `no route for host "${ex.authority}" path "${ex.path}"`));
      return Promise.resolve();
    }
    ex.rule = rule;
    const backend = rule.backends.length === 1 ? rule.backends[0] : pickBackend(rule, random());
    ex.backend = backend;
    ex.stats = backend?.stats;
    if (rule.rewrite) {
      ex.path = rewritePath(rule, ex.path, ex.method, ex.req.headers);
      if (rule.rewrite.host !== undefined) ex.upstreamHost = rule.rewrite.host;
    }
    ex.headers.host = ex.upstreamHost;
    return next(ex);
  };
}
