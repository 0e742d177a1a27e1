// Unit tests for YAML loading and structural validation: exact rendered issues with lines, and the defaults filled in.
import { describe, it, expect } from 'vitest';
import { fileURLToPath } from 'node:url';
import { lineOf, loadResourceFiles, loadResources } from './load.js';
import type { Resource, RouteResource, TrafficPolicyResource } from './resources.js';
import { DEFAULTS, formatIssue } from './resources.js';

const issuesOf = (text: string): string[] => loadResources(text, 't.yaml').issues.map(formatIssue);
const only = (text: string): Resource => {
  const r = loadResources(text, 't.yaml');
  expect(r.issues.map(formatIssue)).toEqual([]);
  expect(r.resources).toHaveLength(1);
  return r.resources[0];
};
const head = (kind: string, name = 'a'): string => `apiVersion: mesh/v1\nkind: ${kind}\nmetadata: { name: ${name} }\n`;
const route = (rule: string): string => `${head('Route')}spec:\n  hosts: [a]\n  rules:\n${rule}`;

describe('loadResources rejects bad input with exact messages', () => {
  const cases: [string, string, string[]][] = [
    ['unknown field', `${head('Service')}spec:\n  protocol: http\n  portocol: grpc\n`, ['t.yaml:6 Service/a spec.portocol: unknown field']],
    ['bad enum', `${head('Service')}spec: { protocol: udp }\n`, ['t.yaml:4 Service/a spec.protocol: must be one of: http, grpc, tcp']],
    ['wrong apiVersion', 'apiVersion: mesh/v2\nkind: Service\nmetadata: { name: a }\n', ['t.yaml:1 Service/a apiVersion: must be "mesh/v1"']],
    ['unknown kind', 'apiVersion: mesh/v1\nkind: Foo\nmetadata: { name: a }\nspec: {}\n', ['t.yaml:2 Foo/a kind: unknown kind "Foo"']],
    ['missing name, line of the parent', 'apiVersion: mesh/v1\nkind: Service\nmetadata: {}\n', ['t.yaml:3 Service metadata.name: is required']],
    [
      'bad name',
      head('Service', 'Billing_1'),
      ['t.yaml:3 Service/Billing_1 metadata.name: must be a lowercase name of letters, digits and "-", at most 63 characters'],
    ],
    ['missing spec', head('Route'), ['t.yaml:1 Route/a spec: is required']],
    [
      'bad duration and weight out of range, both reported',
      route('    - backends:\n        - { service: b, weight: 150 }\n      timeout: 2\n'),
      ['t.yaml:8 Route/a spec.rules[0].backends[0].weight: must be an integer 0..100', 't.yaml:9 Route/a spec.rules[0].timeout: must be a duration like 250ms, 2s, 1m'],
    ],
    [
      'several backends without weights',
      route('    - backends:\n        - { service: b }\n        - { service: c }\n'),
      [
        't.yaml:8 Route/a spec.rules[0].backends[0].weight: is required when a rule has several backends',
        't.yaml:9 Route/a spec.rules[0].backends[1].weight: is required when a rule has several backends',
      ],
    ],
    [
      'match: two path kinds, relative path, lowercase method, two matchers',
      route(
        '    - match:\n        - { path: /a, pathRegex: "/a.*" }\n        - { pathPrefix: v2, method: get }\n' +
          '        - headers: { x-a: { exact: "1", prefix: "2" } }\n      backends: [ { service: b } ]\n',
      ),
      [
        't.yaml:8 Route/a spec.rules[0].match[0]: must have at most one of path, pathPrefix, pathRegex',
        't.yaml:9 Route/a spec.rules[0].match[1].pathPrefix: must start with "/"',
        't.yaml:9 Route/a spec.rules[0].match[1].method: must be an uppercase method like GET',
        't.yaml:10 Route/a spec.rules[0].match[2].headers.x-a: must have exactly one of exact, prefix, regex, present',
      ],
    ],
    [
      'retries, fault and rewrite out of range',
      route(
        '    - backends: [ { service: b } ]\n      retries: { attempts: 0, retryOn: [reset, "600", teapot] }\n' +
          '      fault: { delay: { percent: 120, fixed: 1s }, abort: { percent: 5, status: 700 } }\n      rewrite: { pathPrefix: v2 }\n',
      ),
      [
        't.yaml:8 Route/a spec.rules[0].retries.attempts: must be an integer 1..10',
        't.yaml:8 Route/a spec.rules[0].retries.retryOn[1]: must be one of: connect-failure, refused-stream, reset, gateway-error, 5xx, retriable-4xx, unavailable, cancelled, deadline-exceeded, resource-exhausted, or a status 100..599',
        't.yaml:8 Route/a spec.rules[0].retries.retryOn[2]: must be one of: connect-failure, refused-stream, reset, gateway-error, 5xx, retriable-4xx, unavailable, cancelled, deadline-exceeded, resource-exhausted, or a status 100..599',
        't.yaml:9 Route/a spec.rules[0].fault.delay.percent: must be a number 0..100',
        't.yaml:9 Route/a spec.rules[0].fault.abort.status: must be an integer 200..599',
        't.yaml:10 Route/a spec.rules[0].rewrite.pathPrefix: must start with "/"',
      ],
    ],
    [
      'hashOn without ring-hash',
      `${head('TrafficPolicy')}spec:\n  service: a\n  loadBalancer: { policy: ewma, hashOn: { header: x-user } }\n`,
      ['t.yaml:6 TrafficPolicy/a spec.loadBalancer.hashOn: is only allowed for ring-hash'],
    ],
    [
      'ring-hash without hashOn',
      `${head('TrafficPolicy')}spec:\n  service: a\n  loadBalancer: { policy: ring-hash }\n`,
      ['t.yaml:6 TrafficPolicy/a spec.loadBalancer.hashOn: is required for ring-hash'],
    ],
    [
      'rate limit keys: other words, bad header names, unknown fields, no header',
      `${head('TrafficPolicy')}spec:\n  service: a\n  rateLimit:\n    requestsPerSecond: 20\n    burst: 40\n    key: client\n---\n` +
        `${head('TrafficPolicy', 'b')}spec:\n  service: b\n  rateLimit: { requestsPerSecond: 1, burst: 1, key: { header: "x shop" } }\n---\n` +
        `${head('TrafficPolicy', 'c')}spec:\n  service: c\n  rateLimit: { requestsPerSecond: 1, burst: 1, key: { header: x-a, source: true } }\n---\n` +
        `${head('TrafficPolicy', 'd')}spec:\n  service: d\n  rateLimit: { requestsPerSecond: 1, burst: 1, key: {} }\n---\n` +
        `${head('TrafficPolicy', 'e')}spec:\n  service: e\n  rateLimit: { requestsPerSecond: 1, burst: 1, key: [source] }\n`,
      [
        't.yaml:9 TrafficPolicy/a spec.rateLimit.key: must be "source" or { header: NAME }',
        't.yaml:16 TrafficPolicy/b spec.rateLimit.key.header: must be a valid header name',
        't.yaml:23 TrafficPolicy/c spec.rateLimit.key.source: unknown field',
        't.yaml:30 TrafficPolicy/d spec.rateLimit.key.header: is required',
        't.yaml:37 TrafficPolicy/e spec.rateLimit.key: must be "source" or { header: NAME }',
      ],
    ],
    [
      'endpoint addresses',
      `${head('Endpoints')}spec:\n  service: a\n  endpoints:\n    - address: "127.0.0.1:0"\n    - address: "::1:80"\n    - address: "[::1]:80"\n`,
      [
        't.yaml:7 Endpoints/a spec.endpoints[0].address: must be host:port or [v6]:port with port 1..65535',
        't.yaml:8 Endpoints/a spec.endpoints[1].address: must be host:port or [v6]:port with port 1..65535',
      ],
    ],
    ['yaml syntax error', `${head('Service')}spec:\n  protocol: http: tcp\n`, ['t.yaml:5 yaml: nested mappings are not allowed in compact mappings']],
    ['duplicate key', `${head('Service')}spec: {}\nspec: {}\n`, ['t.yaml:5 yaml: map keys must be unique']],
    ['not a map', '- a\n- b\n', ['t.yaml:1 document must be a map with apiVersion, kind, metadata and spec']],
  ];
  it.each(cases)('%s', (_name, text, want) => expect(issuesOf(text)).toEqual(want));

  it('reports every problem of a multi-document file at its own line', () => {
    const text = [
      'apiVersion: mesh/v1', // 1
      'kind: Service',
      'metadata: { name: a, namespace: Bad }',
      '---',
      '---', // 5: empty document, skipped
      'apiVersion: mesh/v1',
      'kind: TrafficPolicy',
      'metadata: { name: a }',
      'spec:',
      '  service: a', // 10
      '  connectionPool:',
      '    idleTimeout: 1x',
      '  extra: 1',
      '---',
      'apiVersion: mesh/v1', // 15
      'kind: Service',
      'metadata: { name: b }',
    ].join('\n');
    const r = loadResources(text, 'shop.yaml');
    expect(r.issues.map(formatIssue)).toEqual([
      'shop.yaml:3 Service/a metadata.namespace: must be a lowercase name of letters, digits and "-", at most 63 characters',
      'shop.yaml:12 TrafficPolicy/a spec.connectionPool.idleTimeout: must be a duration like 250ms, 2s, 1m',
      'shop.yaml:13 TrafficPolicy/a spec.extra: unknown field',
    ]);
    expect(r.resources.map((x) => `${x.kind}/${x.metadata.name}@${x.source.line}`)).toEqual(['Service/b@15']);
  });

  it('refuses a file over 1 MiB before parsing it', () => {
    expect(issuesOf(`# ${'x'.repeat(1024 * 1024)}`)).toEqual(['t.yaml:1 file is larger than 1 MiB (1048578 bytes)']);
  });

  it('skips empty documents and comment-only files', () => {
    expect(loadResources('', 'e.yaml')).toEqual({ resources: [], issues: [] });
    expect(loadResources('# nothing\n---\n---\n', 'e.yaml')).toEqual({ resources: [], issues: [] });
  });
});

describe('loadResources fills defaults', () => {
  it('completes a minimal Route rule', () => {
    const r = only(route('    - backends: [ { service: b } ]\n')) as RouteResource;
    expect(r.metadata).toEqual({ name: 'a', namespace: 'default' });
    expect(r.spec.rules[0]).toEqual({
      match: [],
      backends: [{ service: 'b', weight: 100 }],
      timeoutMs: DEFAULTS.timeoutMs,
      retries: DEFAULTS.retries,
      retryNonIdempotent: false,
    });
  });

  it('merges a partial retry spec and normalizes matches', () => {
    const r = only(
      route(
        '    - match: [ { pathPrefix: /v2, headers: { X-Canary: { exact: "true" }, x-b: { present: true } } } ]\n' +
          '      backends: [ { service: b } ]\n      retries: { attempts: 3, retryOn: [503, "5xx"], backoff: { base: 1s } }\n' +
          '      retryNonIdempotent: true\n      mirror: { service: c }\n      fault: { abort: { percent: 0.5, status: 503 } }\n',
      ),
    ) as RouteResource;
    const rule = r.spec.rules[0];
    expect(rule.match).toEqual([{ pathPrefix: '/v2', headers: { 'x-canary': { exact: 'true' }, 'x-b': { present: true } } }]);
    expect(rule.retries).toEqual({ attempts: 3, perTryTimeoutMs: 0, retryOn: ['503', '5xx'], backoff: { baseMs: 1000, maxMs: 1000 } });
    expect(rule.retryNonIdempotent).toBe(true);
    expect(rule.mirror).toEqual({ service: 'c', percent: 100 });
    expect(rule.fault).toEqual({ abort: { percent: 0.5, status: 503 } });
  });

  it('completes a minimal TrafficPolicy, Service and MeshConfig', () => {
    const tp = only(`${head('TrafficPolicy')}spec: { service: a, retryBudget: { ratio: 0.5 } }\n`) as TrafficPolicyResource;
    expect(tp.spec).toEqual({
      service: 'a',
      loadBalancer: { policy: 'ewma' },
      subsets: [],
      tls: { mode: 'mutual' },
      connectionPool: DEFAULTS.connectionPool,
      outlierDetection: DEFAULTS.outlierDetection,
      retryBudget: { ratio: 0.5, minPerSecond: 10 },
    });
    expect(only(head('Service')).spec).toEqual({ protocol: 'http' });
    expect(only(head('MeshConfig', 'default')).spec).toEqual(DEFAULTS.meshConfig);
  });

  it.each([
    ['{ requestsPerSecond: 20, burst: 40 }', { requestsPerSecond: 20, burst: 40 }],
    ['{ requestsPerSecond: 20, burst: 40, key: source }', { requestsPerSecond: 20, burst: 40, key: 'source' }],
    ['{ requestsPerSecond: 20, burst: 40, key: { header: X-Shop-Client } }', { requestsPerSecond: 20, burst: 40, key: { header: 'x-shop-client' } }],
    ['{ requestsPerSecond: 20, burst: 40, key: null }', { requestsPerSecond: 20, burst: 40 }],
  ])('accepts rateLimit %s', (text, want) => {
    const tp = only(`${head('TrafficPolicy')}spec: { service: a, rateLimit: ${text} }\n`) as TrafficPolicyResource;
    expect(tp.spec.rateLimit).toEqual(want);
  });

  it('parses endpoint addresses into host and port', () => {
    const r = only(`${head('Endpoints')}spec:\n  service: a\n  endpoints: [ { address: "[::1]:8080" }, { address: "Node-1.local:80", labels: { v: v1 } } ]\n`);
    expect(r.spec).toEqual({
      service: 'a',
      endpoints: [
        { address: '[::1]:8080', host: '::1', port: 8080, labels: {} },
        { address: 'Node-1.local:80', host: 'node-1.local', port: 80, labels: { v: 'v1' } },
      ],
    });
  });

  it('records lines for field paths and falls back to the nearest parent', () => {
    const r = only(route('    - backends:\n        - service: b\n          weight: 100\n'));
    expect(lineOf(r.source, 'spec.rules[0].backends[0].weight')).toBe(9);
    expect(lineOf(r.source, 'spec.rules[0].backends[0].subset')).toBe(8);
    expect(lineOf(r.source, 'spec.rules[0].mirror.service')).toBe(7);
    expect(lineOf(r.source, 'nowhere')).toBe(1);
  });
});

describe('loadResourceFiles', () => {
  it('loads files in order and reports a missing one', async () => {
    const good = fileURLToPath(new URL('../examples/validate/good.yaml', import.meta.url));
    const r = await loadResourceFiles([good, 'missing.yaml']);
    expect(r.resources).toHaveLength(9);
    expect(r.issues.map(formatIssue)).toEqual(['missing.yaml:1 file not found']);
  });
});
