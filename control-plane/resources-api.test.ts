import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../api/log.js';
import { canonicalKind, lineDiff, ResourcesApi } from './resources-api.js';
import { MeshState } from './state.js';
import type { Store } from './store.js';
import { openEmbeddedStore } from './store-embedded.js';

const SERVICES = `apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
---
apiVersion: mesh/v1
kind: Service
metadata: { name: users }
`;
const ROUTE = `apiVersion: mesh/v1
kind: Route
metadata: { name: billing }
spec:
  hosts: [billing]
  rules:
    - backends: [ { service: billing, weight: 100 } ]
`;

describe('ResourcesApi', () => {
  let dir: string;
  let store: Store;
  let state: MeshState;
  let api: ResourcesApi;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-api-'));
    store = await openEmbeddedStore(dir);
    state = new MeshState(store, createLogger('error'));
    await state.start();
    api = new ResourcesApi(store, state, 'mesh.local');
  });

  afterEach(async () => {
    state.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates, then reports unchanged, then configured', async () => {
    expect((await api.apply(SERVICES, 'svc.yaml', false)).results).toEqual(['created Service/billing', 'created Service/users']);
    expect((await api.apply(SERVICES, 'svc.yaml', false)).results).toEqual(['unchanged Service/billing', 'unchanged Service/users']);
    const r = await api.apply(SERVICES.replace('name: users }', 'name: users }\nspec: { protocol: grpc }'), 'svc.yaml', false);
    expect(r.results).toEqual(['unchanged Service/billing', 'configured Service/users']);
  });

  it("refuses a MeshConfig naming a trust domain other than the CA's, accepts it left out or equal", async () => {
    const mesh = (td?: string) => `apiVersion: mesh/v1\nkind: MeshConfig\nmetadata: { name: default }\nspec:\n  mtls: strict\n${td ? `  trustDomain: ${td}\n` : ''}`;
    const before = (await store.get('/trellis/')).revision;
    const r = await api.apply(mesh('other.local'), 'mesh.yaml', false);
    expect(r.issues).toEqual(['mesh.yaml:6 MeshConfig/default spec.trustDomain: must be "mesh.local", the trust domain of the control plane\'s CA (or left out)']);
    expect((await store.get('/trellis/')).revision).toBe(before);
    expect((await api.diff(mesh('other.local'), 'mesh.yaml')).issues).toHaveLength(1);
    expect((await api.apply(mesh(), 'mesh.yaml', false)).issues).toEqual([]);
    expect((await api.apply(mesh('mesh.local'), 'mesh.yaml', false)).issues).toEqual([]);
  });

  it('refuses an invalid write with file:line errors and writes nothing', async () => {
    await api.apply(SERVICES, 'svc.yaml', false);
    const before = (await store.get('/trellis/')).revision;
    const r = await api.apply(ROUTE.replace('service: billing, weight: 100', 'service: payments, weight: 100'), 'route.yaml', false);
    expect(r.issues).toEqual(['route.yaml:7 Route/billing spec.rules[0].backends[0].service: references unknown service "payments"']);
    expect(r.results).toEqual([]);
    expect((await store.get('/trellis/')).revision).toBe(before);
  });

  it('validates against what is stored: a second Route for the same host is refused', async () => {
    await api.apply(SERVICES + '---\n' + ROUTE, 'a.yaml', false);
    const r = await api.apply(ROUTE.replace('name: billing }', 'name: other }'), 'b.yaml', false);
    expect(r.issues[0]).toMatch(/host "billing" is already routed by Route\/billing/);
  });

  it('dry run validates and reports without writing', async () => {
    const r = await api.apply(SERVICES, 'svc.yaml', true);
    expect(r.results).toEqual(['created Service/billing (dry run)', 'created Service/users (dry run)']);
    expect((await api.get('', '', '')).resources).toEqual([]);
  });

  it('delete refuses to leave a dangling reference, and deletes what is unreferenced', async () => {
    await api.apply(SERVICES + '---\n' + ROUTE, 'a.yaml', false);
    const refused = await api.delete({ kind: 'service', name: 'billing', namespace: '' });
    expect(refused.issues[0]).toMatch(/^deleting would leave: .*references unknown service "billing"/);
    expect((await api.delete({ kind: 'routes', name: 'billing', namespace: '' })).results).toEqual(['deleted Route/billing']);
    expect((await api.delete({ kind: 'Route', name: 'billing', namespace: '' })).results).toEqual(['not found Route/billing']);
  });

  it('get filters by kind and name; diff shows what would change', async () => {
    await api.apply(SERVICES + '---\n' + ROUTE, 'a.yaml', false);
    expect((await api.get('service', '', '')).resources).toHaveLength(2);
    expect((await api.get('Route', 'billing', 'default')).resources).toEqual([
      { apiVersion: 'mesh/v1', kind: 'Route', metadata: { name: 'billing' }, spec: { hosts: ['billing'], rules: [{ backends: [{ service: 'billing', weight: 100 }] }] } },
    ]);
    expect((await api.get('gizmo', '', '')).error).toMatch(/unknown kind "gizmo"/);
    const d = await api.diff(ROUTE.replace('hosts: [billing]', 'hosts: [billing, billing.internal]'), 'a.yaml');
    expect(d.changes).toHaveLength(1);
    expect(d.changes[0]).toContain('~ Route/billing');
    expect(d.changes[0]).toContain('  + ');
    expect((await api.diff(ROUTE, 'a.yaml')).changes).toEqual([]);
  });
});

describe('canonicalKind and lineDiff', () => {
  it.each([['route', 'Route'], ['routes', 'Route'], ['trafficpolicies', 'TrafficPolicy'], ['AccessPolicy', 'AccessPolicy'], ['nope', undefined]])('%s → %s', (k, want) => {
    expect(canonicalKind(k)).toBe(want);
  });
  it('marks added and removed lines', () => {
    expect(lineDiff('X/y', 'a\nb\n', 'a\nc\n')).toBe('~ X/y\n    a\n  + c\n  - b');
    expect(lineDiff('X/y', '', 'a\n')).toBe('+ X/y\n  + a');
  });
});
