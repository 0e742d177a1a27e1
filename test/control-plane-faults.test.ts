// End-to-end faults of HARDENING.md's control-plane and etcd rows, on real processes and a real etcd: the control plane killed for 30 s
// under load, a replica killed under a sidecar (failover), etcd restarted and compacted while the control plane was cut off.
import { afterEach, describe, expect, it } from 'vitest';
import { RESOURCES, resourceKey } from '../control-plane/state.js';
import { openEtcdStore } from '../control-plane/store-etcd.js';
import type { Store } from '../control-plane/store.js';
import { newMeshDir, removeMeshDirs, startControlPlane, stopAllControlPlanes, type ControlPlaneProcess } from './harness/control-plane.js';
import {
  billingDocs, billingRoute, billingYaml, describeFailures, failed, snapshotEndpoints, snapshotWeights, startTraffic, waitAllInSync, watchEndpoints, type Traffic,
} from './harness/dynamic-mesh.js';
import { startDynamicSidecar, stopAllDynamicSidecars, type DynamicSidecar } from './harness/dynamic-sidecar.js';
import { REQUIRE_ETCD, etcdAvailable, startEtcd, type EtcdCluster } from './harness/etcd.js';
import { toYaml, type Doc } from './harness/resources.js';
import { startRelay, type Relay } from './harness/tcp-relay.js';
import { closeAllUpstreams, startUpstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

const available = etcdAvailable();
const skip = !available && !REQUIRE_ETCD;
if (skip) console.warn('control-plane fault tests skipped: no etcd binary on PATH (install etcd-server or set ETCD_BIN); with CI=true this fails instead');

interface Mesh {
  billingV1: DynamicSidecar;
  billingV2: DynamicSidecar;
  gateway: DynamicSidecar;
  all: DynamicSidecar[];
}

/** billing v1 and v2 (each in front of its own upstream, answering x-upstream: v1 / v2) and a gateway, all dynamic. */
async function startMesh(dir: string, endpoints: { billingV1: string[]; billingV2: string[]; gateway: string[] }): Promise<Mesh> {
  const [v1, v2, gw] = await Promise.all(['v1', 'v2', 'gateway-app'].map((name) => startUpstream({ name })));
  const [billingV1, billingV2, gateway] = await Promise.all([
    startDynamicSidecar({ service: 'billing', app: v1.address, labels: { version: 'v1' }, instance: 'billing-v1', controlPlanes: endpoints.billingV1, dir }),
    startDynamicSidecar({ service: 'billing', app: v2.address, labels: { version: 'v2' }, instance: 'billing-v2', controlPlanes: endpoints.billingV2, dir }),
    startDynamicSidecar({ service: 'gateway', app: gw.address, instance: 'gateway-1', controlPlanes: endpoints.gateway, dir }),
  ]);
  await waitFor(async () => (await snapshotEndpoints(gateway, 'billing')).length === 2, { timeoutMs: 10_000, what: 'both billing endpoints in the gateway snapshot' });
  return { billingV1, billingV2, gateway, all: [billingV1, billingV2, gateway] };
}

const versionsOf = (m: Mesh) => Promise.all(m.all.map(async (s) => (await s.configDump()).version));

async function stopTraffic(t: Traffic | undefined): Promise<void> {
  await t?.stop();
}

describe.skipIf(skip)(`control-plane faults${skip ? ' (skipped: no etcd binary on PATH; CI=true makes this a failure)' : ''}`, () => {
  const clusters: EtcdCluster[] = [];
  const stores: Store[] = [];
  const relays: Relay[] = [];

  afterEach(async () => {
    await stopAllDynamicSidecars();
    await stopAllControlPlanes();
    await closeAllUpstreams();
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await Promise.all(relays.splice(0).map((r) => r.close()));
    await Promise.all(clusters.splice(0).map((c) => c.stop()));
    await removeMeshDirs();
  }, 30_000);

  const etcd = async (members: 1 | 3 = 1): Promise<EtcdCluster> => {
    if (!available) throw new Error('etcd binary not found, and CI=true requires the control-plane fault suite (install etcd-server)');
    const c = await startEtcd({ members });
    clusters.push(c);
    return c;
  };

  it('control plane SIGKILLed for 15 s under 100 rps: 0 failed requests; restarted on the same port, every sidecar resyncs and a new Apply reaches them', async () => {
    const cluster = await etcd();
    const cp = await startControlPlane({ etcd: cluster.endpoints, name: 'cp-a' });
    expect((await cp.apply(billingYaml(50, 50), 'billing.yaml')).issues).toEqual([]);
    const mesh = await startMesh(cp.dir, { billingV1: [cp.grpc], billingV2: [cp.grpc], gateway: [cp.grpc] });
    await waitAllInSync(cp, 3, { atCurrent: true });

    let traffic: Traffic | undefined;
    let endpoints: ReturnType<typeof watchEndpoints> | undefined;
    try {
      traffic = startTraffic(mesh.gateway.outbound, { rate: 100, host: 'billing' });
      await waitFor(() => traffic!.samples.length >= 100, { timeoutMs: 5_000, what: '1 s of traffic before the kill' });
      const before = await versionsOf(mesh);
      await cp.kill('SIGKILL');
      const killedAt = performance.now();
      // The outage itself: 15 s without a control plane (the condition is the elapsed outage, checked while traffic runs).
      // test/hardening/faults.test.ts holds one for 90 s, long enough for the reconnect backoff to reach its cap.
      await waitFor(() => performance.now() - killedAt >= 15_000, { timeoutMs: 20_000, intervalMs: 250, what: 'a 15 s outage' });
      const during = traffic.samples.filter((s) => s.startedAt >= killedAt - traffic!.t0);
      expect(during.length).toBeGreaterThan(1_250);
      expect(failed(during).length, `during the outage: ${describeFailures(during)}`).toBe(0);
      expect(await versionsOf(mesh)).toEqual(before);
      for (const s of mesh.all) expect((await s.adminGet('/ready')).status).toBe(200);

      // From here until the resync, the gateway must never be handed a billing without its two live endpoints.
      endpoints = watchEndpoints(mesh.gateway, 'billing');
      const restarted = await startControlPlane(cp.options);
      expect(restarted.grpc).toBe(cp.grpc);
      const restartedAt = performance.now();
      // DESIGN §6: reconnect delays are capped at 30 s, so every sidecar should be back within ~30 s of the control plane.
      // The wait is longer so that the rest of the scenario still runs (and the delay is reported) when that bound is missed.
      const synced = await waitAllInSync(restarted, 3, { timeoutMs: 80_000, what: 'all three sidecars back and in sync on the restarted control plane' });
      const resyncMs = performance.now() - restartedAt;
      expect.soft(resyncMs, 'every sidecar reconnected within the 30 s backoff cap (+2 s) of the control plane coming back').toBeLessThan(32_000);
      expect(synced.sidecars.map((s) => s.instance).sort()).toEqual(['billing-v1', 'billing-v2', 'gateway-1']);
      await waitFor(async () => (await snapshotEndpoints(mesh.gateway, 'billing')).length === 2, { timeoutMs: 5_000, what: 'two billing endpoints after the resync' });
      const seen = await endpoints.stop();

      const r = await restarted.apply(toYaml([billingRoute(0, 100)]), 'shift.yaml');
      expect(r.issues).toEqual([]);
      const appliedAt = performance.now() - traffic.t0;
      await waitAllInSync(restarted, 3, { timeoutMs: 5_000, minVersion: Number(r.revision) });
      expect(await snapshotWeights(mesh.gateway, 'billing')).toEqual(['billing/v1=0', 'billing/v2=100']);
      await waitFor(() => traffic!.samples.filter((s) => s.startedAt > appliedAt + 2_000).length >= 100, { timeoutMs: 8_000, what: 'traffic after the new Apply' });
      const samples = await traffic.stop();
      expect(failed(samples).length, `whole run (resync took ${Math.round(resyncMs)} ms; fewest billing endpoints the gateway had: ${seen.min}): ${describeFailures(samples)}`).toBe(0);
      expect(samples.filter((s) => s.startedAt > appliedAt + 2_000).every((s) => s.upstream === 'v2')).toBe(true);
    } finally {
      await endpoints?.stop();
      await stopTraffic(traffic);
    }
  }, 150_000);

  it('control plane down for longer than its session lease: registrations survive, the restarted one pushes nothing new; a sidecar that died meanwhile is collected after the grace', async () => {
    const cluster = await etcd();
    // The grace must outlast the live sidecars' reconnect after the restart: by then their backoff is up to
    // 16.8 s × 1.2 (attempt 7), so a shorter grace could collect billing-v1 first and change their view (a new push).
    const cp = await startControlPlane({ etcd: cluster.endpoints, name: 'cp-a', registryGrace: '30s' });
    expect((await cp.apply(billingYaml(50, 50), 'billing.yaml')).issues).toEqual([]);
    const mesh = await startMesh(cp.dir, { billingV1: [cp.grpc], billingV2: [cp.grpc], gateway: [cp.grpc] });
    const before = await waitAllInSync(cp, 3, { atCurrent: true });
    const store = await openEtcdStore(cluster.endpoints);
    stores.push(store);
    const keys = async (prefix: string) => (await store.get(prefix)).kvs.map((kv) => kv.key.split('/').pop()).sort();

    await cp.kill('SIGKILL');
    await mesh.billingV1.stop('SIGKILL');
    // Past the session lease's expiry: under a lease, every registration would now be gone.
    await waitFor(async () => (await keys('/trellis/replicas/')).length === 0, { timeoutMs: 30_000, intervalMs: 250, what: "the dead replica's session lease to expire" });
    expect(await keys('/trellis/registry/')).toEqual(['billing-v1', 'billing-v2', 'gateway-1']);

    const endpoints = watchEndpoints(mesh.gateway, 'billing');
    const restarted = await startControlPlane(cp.options);
    // The two live sidecars reconnect and say what they run; nothing changed for them, so nothing is sent.
    let status = before;
    await waitFor(async () => {
      status = await restarted.status();
      const live = status.sidecars.filter((x) => x.instance !== 'billing-v1');
      return live.length === 2 && live.every((x) => x.inSync);
    }, { timeoutMs: 45_000, what: 'both live sidecars in sync on the restarted control plane' });
    const versionOf = (st: typeof before, instance: string) => st.sidecars.find((x) => x.instance === instance)!.ackedVersion;
    expect(versionOf(status, 'gateway-1')).toBe(versionOf(before, 'gateway-1'));
    expect(versionOf(status, 'billing-v2')).toBe(versionOf(before, 'billing-v2'));
    // The dead one is listed with why its state is unknown, until the grace runs out and it is removed.
    const orphan = status.sidecars.find((x) => x.instance === 'billing-v1');
    if (orphan) expect(orphan.unknownReason).toMatch(/registered by cp-a that is gone/);
    await waitFor(async () => (await snapshotEndpoints(mesh.gateway, 'billing')).length === 1, { timeoutMs: 50_000, what: 'billing-v1 removed from the gateway snapshot' });
    expect((await snapshotEndpoints(mesh.gateway, 'billing'))[0].labels).toEqual({ version: 'v2' });
    expect(await keys('/trellis/registry/')).toEqual(['billing-v2', 'gateway-1']);
    const seen = await endpoints.stop();
    expect(seen.min, 'the gateway never lost a live billing endpoint').toBeGreaterThanOrEqual(1);
    const settled = await waitAllInSync(restarted, 2, { timeoutMs: 5_000 });
    expect(settled.sidecars.every((x) => !x.unknownReason)).toBe(true);
  }, 150_000);

  it('two replicas on a 3-member etcd: killing the replica a sidecar is connected to moves it to the other, 0 failed requests', async () => {
    const cluster = await etcd(3);
    const dir = await newMeshDir();
    // One after the other: the first creates the CA and admin token in the shared dir, the second loads them.
    const a = await startControlPlane({ etcd: cluster.endpoints, dir, name: 'cp-a' });
    const b = await startControlPlane({ etcd: cluster.endpoints, dir, name: 'cp-b' });
    expect(b.adminToken).toBe(a.adminToken);
    expect((await b.apply(billingYaml(50, 50), 'billing.yaml')).issues).toEqual([]);
    const both = [a.grpc, b.grpc];
    const mesh = await startMesh(dir, { billingV1: both, billingV2: [b.grpc, a.grpc], gateway: both });
    const replicas = [a, b];
    // Which replica holds the gateway: the one whose Status lists it as its own sidecar.
    let holder: ControlPlaneProcess | undefined;
    await waitFor(async () => {
      for (const cp of replicas) {
        const s = await cp.status();
        if (s.sidecars.some((x) => x.instance === 'gateway-1' && x.controlPlane === cp.name && x.inSync)) holder = cp;
      }
      return holder !== undefined;
    }, { timeoutMs: 10_000, what: 'the replica holding the gateway' });
    const survivor = holder === a ? b : a;
    // Either replica answers for the whole mesh: its own sidecars, and the other's as that replica reports them.
    const view = await waitAllInSync(survivor, 3, { what: `the whole mesh in sync, seen from ${survivor.name}` });
    expect(view.sidecars.map((x) => x.instance).sort()).toEqual(['billing-v1', 'billing-v2', 'gateway-1']);
    expect(view.sidecars.find((x) => x.instance === 'gateway-1')!.controlPlane).toBe(holder!.name);
    expect(view.sidecars.every((x) => x.unknownReason === '')).toBe(true);
    expect(view.replicas.map((x) => [x.name, x.error]).sort()).toEqual([['cp-a', ''], ['cp-b', '']]);

    let traffic: Traffic | undefined;
    try {
      traffic = startTraffic(mesh.gateway.outbound, { rate: 100, host: 'billing' });
      await waitFor(() => traffic!.samples.length >= 100, { timeoutMs: 5_000, what: '1 s of traffic before the kill' });
      await holder!.kill('SIGKILL');
      const killedAt = performance.now();
      // Sidecars that moved tell the survivor what they run: same content, so they keep their version (one version mesh-wide).
      const last = await waitAllInSync(survivor, 3, {
        timeoutMs: 15_000, controlPlane: survivor.name, what: `every sidecar in sync on the survivor ${survivor.name}, on one version`,
      });
      const failoverMs = performance.now() - killedAt;
      expect(last.sidecars.map((x) => x.instance).sort()).toEqual(['billing-v1', 'billing-v2', 'gateway-1']);
      // A change through the survivor reaches the sidecars that failed over.
      const r = await survivor.apply(toYaml([billingRoute(0, 100)]), 'shift.yaml');
      expect(r.issues).toEqual([]);
      await waitFor(async () => (await snapshotWeights(mesh.gateway, 'billing')).join() === 'billing/v1=0,billing/v2=100', { timeoutMs: 5_000, what: 'the new weights on the gateway' });
      await waitFor(() => traffic!.samples.some((s) => s.startedAt > killedAt - traffic!.t0 + 3_000), { timeoutMs: 10_000, what: '3 s of traffic after the kill' });
      const samples = await traffic.stop();
      expect(failed(samples).length, `failover took ${Math.round(failoverMs)} ms: ${describeFailures(samples)}`).toBe(0);
    } finally {
      await stopTraffic(traffic);
    }
  }, 90_000);

  it('etcd restarted, then writes and a compaction while the control plane was cut off: it says degraded, then pushes exactly what etcd holds', async () => {
    const cluster = await etcd();
    const relay = await startRelay(Number(new URL(cluster.endpoints[0]).port));
    relays.push(relay);
    const cp = await startControlPlane({ etcd: [relay.endpoint], name: 'cp-a' });
    const audit: Doc = { apiVersion: 'mesh/v1', kind: 'Service', metadata: { name: 'audit' }, spec: { protocol: 'http' } };
    expect((await cp.apply(toYaml([...billingDocs(100, 0), audit]), 'billing.yaml')).issues).toEqual([]);
    const mesh = await startMesh(cp.dir, { billingV1: [cp.grpc], billingV2: [cp.grpc], gateway: [cp.grpc] });
    await waitAllInSync(cp, 3, { atCurrent: true });

    let traffic: Traffic | undefined;
    try {
      traffic = startTraffic(mesh.gateway.outbound, { rate: 50, host: 'billing' });

      // 1. etcd stopped: the control plane says it is degraded, refuses writes, keeps its sidecars; etcd back: it recovers.
      await cluster.kill();
      await waitFor(async () => (await cp.httpGet('/ready')).status === 503, { timeoutMs: 15_000, intervalMs: 100, what: '/ready 503 while etcd is down' });
      expect((await cp.status()).storeHealthy).toBe(false);
      await expect(cp.apply(toYaml([billingRoute(50, 50)]), 'down.yaml')).rejects.toThrow();
      await cluster.restart();
      // Nothing is written under /trellis/ meanwhile: readiness must come back from etcd being back, not from a new change.
      const readyAgain = await waitFor(async () => (await cp.httpGet('/ready')).status === 200, { timeoutMs: 10_000, intervalMs: 100, what: '/ready 200 after etcd restarted' })
        .then(() => 'ready', (e: Error) => e.message);
      const healthyAgain = (await cp.status()).storeHealthy;
      let r: Awaited<ReturnType<ControlPlaneProcess['apply']>> | undefined;
      await waitFor(async () => (r = await cp.apply(toYaml([billingRoute(50, 50)]), 'up.yaml')).issues.length === 0, { timeoutMs: 10_000, intervalMs: 200, what: 'an Apply after etcd restarted' });
      await waitFor(async () => (await snapshotWeights(mesh.gateway, 'billing')).join() === 'billing/v1=50,billing/v2=50', { timeoutMs: 5_000, what: 'weights 50/50 pushed after the restart' });
      await waitAllInSync(cp, 3, { timeoutMs: 5_000, minVersion: Number(r!.revision) });
      // Checked here, not where it was measured, so the rest of the scenario still runs when it fails.
      expect.soft(readyAgain, 'control plane /ready after etcd restarted, before any new write').toBe('ready');
      expect.soft(healthyAgain, 'Status storeHealthy after etcd restarted, before any new write').toBe(true);

      // 2. The control plane cut off from etcd; meanwhile two changes are written straight into etcd and history is compacted.
      const admin = await openEtcdStore(cluster.endpoints, { dialTimeoutMs: 5_000 });
      stores.push(admin);
      relay.cut();
      await waitFor(async () => (await cp.httpGet('/ready')).status === 503, { timeoutMs: 15_000, intervalMs: 50, what: '/ready 503 while cut off from etcd' });
      const cutAt = performance.now();
      await admin.put(resourceKey('Route', 'default', 'billing'), JSON.stringify(billingRoute(0, 100)));
      await admin.delete(resourceKey('Service', 'default', 'audit'));
      const latest = (await admin.get(RESOURCES)).revision;
      await admin.compact(latest);
      expect(performance.now() - cutAt, 'the cut must stay well under the 10 s registration lease').toBeLessThan(5_000);
      relay.heal();

      await waitFor(async () => (await cp.httpGet('/ready')).status === 200, { timeoutMs: 20_000, intervalMs: 100, what: '/ready 200 after the cut healed' });
      const truth = await admin.get(RESOURCES);
      const stored = truth.kvs.map((kv) => JSON.parse(kv.value) as Doc);
      const etcdServices = stored.filter((d) => d.kind === 'Service').map((d) => d.metadata.name).sort();
      expect(etcdServices).toEqual(['billing', 'gateway']);
      await waitFor(async () => (await snapshotWeights(mesh.gateway, 'billing')).join() === 'billing/v1=0,billing/v2=100', { timeoutMs: 10_000, what: 'the weights written while cut off' });
      const status = await waitAllInSync(cp, 3, { timeoutMs: 10_000, atCurrent: true });
      const etcdRevision = (await admin.get('/trellis/')).revision;
      expect(Number(status.currentVersion)).toBe(etcdRevision);
      for (const sc of mesh.all) {
        const dump = await sc.configDump();
        expect(dump.version).toBe(status.currentVersion);
        const services = (dump.snapshot.services as { name: string }[]).map((s) => s.name);
        // Nothing missed (audit's deletion) and nothing twice.
        expect([...services].sort()).toEqual(etcdServices);
        const routes = dump.snapshot.routes as { name: string; rules: { backends: unknown[] }[] }[];
        expect(routes.map((x) => x.name)).toEqual(stored.filter((d) => d.kind === 'Route').map((d) => d.metadata.name));
        expect(routes[0].rules.map((x) => x.backends)).toEqual((billingRoute(0, 100).spec.rules as { backends: unknown[] }[]).map((x) => x.backends));
      }
      expect(cp.stderr()).toMatch(/"event":"store_compacted"/);
      await waitFor(() => traffic!.samples.some((s) => s.startedAt > performance.now() - traffic!.t0 - 500 && s.upstream === 'v2'), { timeoutMs: 5_000, what: 'v2 answering' });
      const samples = await traffic.stop();
      expect(failed(samples).length, describeFailures(samples)).toBe(0);
    } finally {
      await stopTraffic(traffic);
    }
  }, 90_000);
});
