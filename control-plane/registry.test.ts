import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { createLogger } from '../api/log.js';
import { Registry, sweepOrphans } from './registry.js';
import { compileMesh, viewFor } from './snapshots.js';
import { MeshState, REPLICAS, registryKey, resourceKey } from './state.js';
import type { KeyValue, Store } from './store.js';
import { openEmbeddedStore } from './store-embedded.js';

const log = createLogger('error');

describe('sweepOrphans', () => {
  const reg = (key: string, session?: string, modRevision = 1) => ({ key, session, modRevision });

  it('never touches registrations of live sessions', () => {
    const since = new Map<string, number>();
    for (const now of [0, 10_000, 100_000]) expect(sweepOrphans([reg('a', 's1')], new Set(['s1']), since, now, 1_000).expired).toEqual([]);
    expect(since.size).toBe(0);
  });

  it('expires an orphan only once it has been seen orphaned for the whole grace', () => {
    const since = new Map<string, number>();
    const regs = [reg('a', 'dead', 7), reg('b'), reg('c', 's1')];
    expect(sweepOrphans(regs, new Set(['s1']), since, 100, 1_000).expired).toEqual([]);
    expect(sweepOrphans(regs, new Set(['s1']), since, 1_099, 1_000).expired).toEqual([]);
    // A record without a session (written before sessions existed) is an orphan too.
    expect(sweepOrphans(regs, new Set(['s1']), since, 1_100, 1_000).expired).toEqual([{ key: 'a', modRevision: 7 }, { key: 'b', modRevision: 1 }]);
  });

  it('forgets an orphan that re-registered under a live session, so a later loss starts a fresh grace', () => {
    const since = new Map<string, number>();
    sweepOrphans([reg('a', 'dead')], new Set(), since, 0, 1_000);
    sweepOrphans([reg('a', 's2')], new Set(['s2']), since, 500, 1_000);
    expect(since.has('a')).toBe(false);
    expect(sweepOrphans([reg('a', 's2')], new Set(), since, 2_000, 1_000).expired).toEqual([]);
    expect(sweepOrphans([reg('a', 's2')], new Set(), since, 3_000, 1_000).expired).toHaveLength(1);
  });
});

describe('Registry on the embedded store', () => {
  let dir: string;
  let store: Store;
  let state: MeshState;
  let clock: FakeClock;
  let registry: Registry;

  const settle = async (cond: () => boolean) => {
    // The state follows the store through its watch (asynchronous); this waits for it on events, not on time.
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setImmediate(r));
    expect(cond()).toBe(true);
  };

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'trellis-registry-'));
    store = await openEmbeddedStore(dir);
    state = new MeshState(store, log, 0, 0);
    await state.start();
    clock = new FakeClock();
    registry = new Registry(store, state, log, 'cp-a', clock, 1_000);
  });

  afterEach(async () => {
    await registry.close();
    state.close();
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('publishes its session with the advertised address, and registers sidecars under it without a lease', async () => {
    await registry.start('127.0.0.1:15010');
    const replicas = (await store.get(REPLICAS)).kvs;
    expect(replicas).toHaveLength(1);
    expect(JSON.parse(replicas[0].value)).toMatchObject({ session: registry.id, name: 'cp-a', address: '127.0.0.1:15010' });
    expect(replicas[0].lease).toBe(registry.id);

    await registry.register({ service: 'billing', namespace: 'default', instance: 'b1', address: '127.0.0.1:9001', labels: {}, connectedSince: 1 });
    const kv = (await store.get(registryKey('default', 'billing', 'b1'))).kvs[0];
    expect(JSON.parse(kv.value)).toMatchObject({ session: registry.id, controlPlane: 'cp-a', address: '127.0.0.1:9001' });
    expect(kv.lease).toBeUndefined();
  });

  it("collects a dead replica's registrations after the grace, keeps live ones and ones re-registered meanwhile", async () => {
    await registry.start('127.0.0.1:15010');
    const orphan = (instance: string) => store.put(registryKey('default', 'billing', instance), JSON.stringify({
      service: 'billing', namespace: 'default', instance, address: '127.0.0.1:9009', labels: {}, session: 'dead-session', controlPlane: 'cp-old',
    }));
    await orphan('gone');
    await orphan('comes-back');
    await registry.register({ service: 'billing', namespace: 'default', instance: 'live', address: '127.0.0.1:9001', labels: {}, connectedSince: 1 });
    await settle(() => state.registry.size === 3 && state.liveReplicas().size === 1);

    const instances = async () => (await store.get(registryKey('default', 'billing', ''))).kvs.map((x) => x.key.split('/').pop());
    // (Timer-driven sweeps also run during advance(); the outcome, not who removed what, is asserted.)
    await registry.sweep();
    await registry.register({ service: 'billing', namespace: 'default', instance: 'comes-back', address: '127.0.0.1:9002', labels: {}, connectedSince: 2 });
    await settle(() => JSON.parse(state.registry.get(registryKey('default', 'billing', 'comes-back'))!.value).session === registry.id);
    clock.advance(999);
    await registry.sweep();
    expect(await instances()).toEqual(['comes-back', 'gone', 'live']);
    clock.advance(1);
    await registry.sweep();
    expect(await instances()).toEqual(['comes-back', 'live']);
  });

  it('does not collect while the store is degraded', async () => {
    await registry.start('127.0.0.1:15010');
    await store.put(registryKey('default', 'billing', 'x'), JSON.stringify({ service: 'billing', namespace: 'default', instance: 'x', address: '127.0.0.1:1', labels: {}, session: 'dead' }));
    await settle(() => state.registry.size === 1);
    expect(await registry.sweep()).toBe(0);
    state.healthy = false;
    clock.advance(5_000);
    expect(await registry.sweep()).toBe(0);
    state.healthy = true;
    expect(await registry.sweep()).toBe(1);
  });
});

describe('compileMesh', () => {
  const kv = (key: string, value: unknown): KeyValue => ({ key, value: JSON.stringify(value), modRevision: 1, createRevision: 1 });
  const service = (name: string) => kv(resourceKey('Service', 'default', name), { apiVersion: 'mesh/v1', kind: 'Service', metadata: { name } });
  const registration = (instance: string, port: number) => kv(registryKey('default', 'billing', instance), {
    service: 'billing', namespace: 'default', instance, address: `127.0.0.1:${port}`, labels: {}, session: instance,
  });
  const stateWith = (entries: KeyValue[]): MeshState => {
    const s = new MeshState({} as Store, log);
    for (const e of entries) (e.key.includes('/registry/') ? s.registry : s.resources).set(e.key, e);
    return s;
  };

  it('compiles the same bytes whatever order the state learned things in (replicas must agree on hashes)', () => {
    const entries = [service('billing'), service('users'), registration('b1', 9001), registration('b2', 9002)];
    const a = viewFor(compileMesh(stateWith(entries), log, 'mesh.local'), { service: 'users', namespace: 'default' });
    const b = viewFor(compileMesh(stateWith([...entries].reverse()), log, 'mesh.local'), { service: 'users', namespace: 'default' });
    expect(b.hash).toBe(a.hash);
    expect(b.json).toBe(a.json);
  });

  it("fills in the CA's trust domain when MeshConfig leaves it out or is absent", () => {
    expect(compileMesh(stateWith([service('billing')]), log, 'corp.example').snapshot.meshConfig.trustDomain).toBe('corp.example');
    const mesh = kv(resourceKey('MeshConfig', 'default', 'default'), { apiVersion: 'mesh/v1', kind: 'MeshConfig', metadata: { name: 'default' }, spec: { mtls: 'permissive' } });
    const compiled = compileMesh(stateWith([mesh]), log, 'corp.example').snapshot.meshConfig;
    expect(compiled).toMatchObject({ trustDomain: 'corp.example', mtls: 'permissive' });
  });
});
