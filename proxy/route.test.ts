import { describe, expect, it } from 'vitest';
import { seededRandom } from '../api/clock.js';
import { loadResources } from '../api/load.js';
import { compileSnapshot } from '../control-plane/compiler.js';
import { compileRoutes, hasPathPrefix, matchRoute, pickBackend, rewritePath } from './route.js';
import { Telemetry } from './telemetry.js';

const YAML = `
apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
spec: { protocol: http }
---
apiVersion: mesh/v1
kind: Service
metadata: { name: users }
spec: { protocol: http }
---
apiVersion: mesh/v1
kind: TrafficPolicy
metadata: { name: billing }
spec:
  service: billing
  subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]
---
apiVersion: mesh/v1
kind: Route
metadata: { name: billing }
spec:
  hosts: [billing, billing.example]
  rules:
    - match:
        - { pathPrefix: /v2, method: GET, headers: { x-canary: { exact: "true" } } }
        - { path: /exact }
      backends: [ { service: billing, subset: v2 } ]
      rewrite: { pathPrefix: / }
    - match: [ { pathRegex: "/invoices/[0-9]+" } ]
      backends: [ { service: billing, subset: v1 } ]
      timeout: 2s
    - match: [ { headers: { x-debug: { present: true } } }, { headers: { x-user: { prefix: "admin-" } } } ]
      backends: [ { service: billing, subset: v1 } ]
    - backends:
        - { service: billing, subset: v2, weight: 10 }
        - { service: billing, subset: v1, weight: 90 }
`;

function table() {
  const { resources, issues } = loadResources(YAML, 'routes.yaml');
  expect(issues).toEqual([]);
  return compileRoutes(compileSnapshot(resources), new Telemetry(), 'gateway');
}

describe('matchRoute', () => {
  const t = table();
  const subset = (host: string, path: string, method = 'GET', headers: Record<string, string> = {}) => {
    const rule = matchRoute(t, host, path, method, headers);
    if (!rule) return undefined;
    return rule.backends.length === 1 ? `${rule.routeName}:${rule.backends[0].subset}` : `${rule.routeName}:split`;
  };

  it.each([
    ['prefix + method + header all match', 'billing', '/v2/x', 'GET', { 'x-canary': 'true' }, 'billing:v2'],
    ['prefix matches whole segment only', 'billing', '/v2x', 'GET', { 'x-canary': 'true' }, 'billing:split'],
    ['method mismatch falls through', 'billing', '/v2/x', 'POST', { 'x-canary': 'true' }, 'billing:split'],
    ['header mismatch falls through', 'billing', '/v2/x', 'GET', { 'x-canary': 'false' }, 'billing:split'],
    ['second match entry (exact path) suffices', 'billing', '/exact', 'DELETE', {}, 'billing:v2'],
    ['exact path does not match a longer path', 'billing', '/exact/1', 'GET', {}, 'billing:split'],
    ['regex is anchored', 'billing', '/invoices/42', 'GET', {}, 'billing:v1'],
    ['regex does not match a suffix', 'billing', '/invoices/42/x', 'GET', {}, 'billing:split'],
    ['present header', 'billing', '/', 'GET', { 'x-debug': '' }, 'billing:v1'],
    ['prefix header', 'billing', '/', 'GET', { 'x-user': 'admin-7' }, 'billing:v1'],
    ['second host of the route', 'billing.example', '/invoices/1', 'GET', {}, 'billing:v1'],
    ['service without a Route gets the default rule', 'users', '/anything', 'POST', {}, 'default:'],
  ])('%s', (_name, host, path, method, headers, expected) => {
    expect(subset(host, path, method, headers)).toBe(expected);
  });

  it('unknown host has no route', () => {
    expect(matchRoute(t, 'nope', '/', 'GET', {})).toBeUndefined();
  });

  it('default rule: 15 s timeout, 2 attempts on connect-failure/refused-stream/reset', () => {
    const rule = matchRoute(t, 'users', '/', 'GET', {});
    expect(rule?.timeoutMs).toBe(15_000);
    expect(rule?.retry.attempts).toBe(2);
    expect(rule?.retry.retryOn).toEqual(['connect-failure', 'refused-stream', 'reset']);
    expect(rule?.retry.retryNonIdempotent).toBe(false);
  });

  it('rule timeout compiles to ms', () => {
    expect(matchRoute(t, 'billing', '/invoices/1', 'GET', {})?.timeoutMs).toBe(2000);
  });
});

describe('pickBackend', () => {
  it('splits by weight', () => {
    const rule = matchRoute(table(), 'billing', '/', 'GET', {});
    if (!rule) throw new Error('no rule');
    const random = seededRandom(7);
    const counts = { v1: 0, v2: 0 } as Record<string, number>;
    for (let i = 0; i < 10_000; i++) counts[pickBackend(rule, random())?.subset ?? '']++;
    expect(counts.v2 / 10_000).toBeGreaterThan(0.08);
    expect(counts.v2 / 10_000).toBeLessThan(0.12);
    expect(pickBackend(rule, 0)?.subset).toBe('v2');
    expect(pickBackend(rule, 0.0999)?.subset).toBe('v2');
    expect(pickBackend(rule, 0.1)?.subset).toBe('v1');
    expect(pickBackend(rule, 0.9999)?.subset).toBe('v1');
  });
});

describe('rewritePath', () => {
  const t = table();
  it.each([
    ['/v2/x', 'GET', { 'x-canary': 'true' }, '/x'],
    ['/v2', 'GET', { 'x-canary': 'true' }, '/'],
    ['/exact', 'GET', {}, '/'],
  ])('%s → %s', (path, method, headers, expected) => {
    const rule = matchRoute(t, 'billing', path, method, headers);
    if (!rule) throw new Error('no rule');
    expect(rewritePath(rule, path, method, headers)).toBe(expected);
  });
});

describe('hasPathPrefix', () => {
  it.each([
    ['/v2', '/v2', true], ['/v2/', '/v2', true], ['/v2/a', '/v2', true], ['/v2a', '/v2', false],
    ['/api/x', '/api/', true], ['/x', '/', true], ['/v', '/v2', false],
  ])('%s has prefix %s: %s', (path, prefix, expected) => {
    expect(hasPathPrefix(path, prefix)).toBe(expected);
  });
});
