// Unit tests for the snapshot compiler: joins, defaults, ordering, content version and freezing.
import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadResources } from '../api/load.js';
import { DEFAULTS, formatIssue } from '../api/resources.js';
import type { Resource } from '../api/resources.js';
import { compileSnapshot, defaultTrafficPolicy } from './compiler.js';

const load = (text: string): Resource[] => {
  const r = loadResources(text, 'c.yaml');
  expect(r.issues.map(formatIssue)).toEqual([]);
  return r.resources;
};
const GOOD = readFileSync(fileURLToPath(new URL('../examples/validate/good.yaml', import.meta.url)), 'utf8');

const SPLIT = `
apiVersion: mesh/v1
kind: Service
metadata: { name: payments }
spec: { protocol: grpc }
---
apiVersion: mesh/v1
kind: Endpoints
metadata: { name: payments-b }
spec: { service: payments, endpoints: [ { address: "10.0.0.2:80" } ] }
---
apiVersion: mesh/v1
kind: Endpoints
metadata: { name: payments-a }
spec: { service: payments, endpoints: [ { address: "10.0.0.1:80", labels: { zone: a } } ] }
---
apiVersion: mesh/v1
kind: Service
metadata: { name: audit }
`;

describe('compileSnapshot', () => {
  it('joins services with their endpoints and policy, defaulting what is missing', () => {
    const snap = compileSnapshot(load(SPLIT), 'v7');
    expect(snap).toEqual({
      version: 'v7',
      meshConfig: DEFAULTS.meshConfig,
      services: [
        { name: 'audit', namespace: 'default', protocol: 'http', endpoints: [], policy: defaultTrafficPolicy('audit') },
        {
          name: 'payments',
          namespace: 'default',
          protocol: 'grpc',
          endpoints: [
            { address: '10.0.0.1:80', host: '10.0.0.1', port: 80, labels: { zone: 'a' } },
            { address: '10.0.0.2:80', host: '10.0.0.2', port: 80, labels: {} },
          ],
          policy: defaultTrafficPolicy('payments'),
        },
      ],
      routes: [],
      accessPolicies: [],
    });
  });

  it('carries routes, access policies, traffic policy and mesh config from the example', () => {
    const snap = compileSnapshot(load(GOOD));
    const billing = snap.services.find((s) => s.name === 'billing');
    expect(billing?.endpoints.map((e) => e.address)).toEqual(['127.0.0.1:9001', '127.0.0.1:9002']);
    expect(billing?.policy.tls.mode).toBe('disable');
    expect(billing?.policy.subsets.map((s) => s.name)).toEqual(['v1', 'v2']);
    expect(snap.routes.map((r) => [r.name, r.hosts, r.rules.length])).toEqual([['billing', ['billing'], 2]]);
    expect(snap.accessPolicies.map((a) => [a.name, a.spec.action])).toEqual([['billing', 'allow']]);
    expect(snap.meshConfig).toEqual(DEFAULTS.meshConfig);
  });

  it('is JSON without sources, and deep-frozen', () => {
    const snap = compileSnapshot(load(GOOD));
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(JSON.stringify(snap)).not.toContain('"source"');
    expect(Object.isFrozen(snap.routes[0].rules[0].backends[0])).toBe(true);
    expect(Object.isFrozen(snap.services[0].policy.connectionPool)).toBe(true);
  });

  it('does not freeze the resources it was given', () => {
    const resources = load(GOOD);
    compileSnapshot(resources);
    expect(Object.isFrozen(resources[0].spec)).toBe(false);
  });

  const versions: [string, (r: Resource[]) => Resource[], boolean][] = [
    ['the same input', (r) => r, true],
    ['the same input in another order', (r) => [...r].reverse(), true],
    ['a changed input', (r) => r.slice(1), false],
  ];
  it.each(versions)('gives a short content hash as version: %s', (_name, change, same) => {
    const resources = load(GOOD);
    const a = compileSnapshot(resources).version;
    const b = compileSnapshot(change(resources)).version;
    expect(a).toMatch(/^[0-9a-f]{12}$/);
    expect(a === b).toBe(same);
  });
});
