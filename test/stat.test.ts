// End-to-end golden metrics: a control plane (embedded store), a client sidecar and a server sidecar whose app answers every
// fifth request 503; under 50 rps, `mesh stat` (the CLI, as a child process) reports the success rate within a point and
// the rate within 10 %; the control plane's /metrics passes promtool; its file_sd lists every /metrics target, and a real
// Prometheus given that file scrapes them all. On two replicas (etcd) either one answers for the whole mesh.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './harness/cli.js';
import { newMeshDir, removeMeshDirs, startControlPlane, stopAllControlPlanes, type ControlPlaneProcess } from './harness/control-plane.js';
import { snapshotEndpoints, startTraffic, waitAllInSync, type TrafficSample } from './harness/dynamic-mesh.js';
import { startDynamicSidecar, stopAllDynamicSidecars, type DynamicSidecar } from './harness/dynamic-sidecar.js';
import { etcdAvailable, REQUIRE_ETCD, startEtcd, type EtcdCluster } from './harness/etcd.js';
import { parseMetrics, sumWhere } from './harness/prom.js';
import { prometheusBinary, REQUIRE_PROMETHEUS, startPrometheus } from './harness/prometheus.js';
import { checkMetrics, promtoolBinary, REQUIRE_PROMTOOL } from './harness/promtool.js';
import { route, toYaml, type Doc } from './harness/resources.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

const RATE = 50;
const WINDOW_S = 10;
const promtool = promtoolBinary();
const prometheus = prometheusBinary();

const withEtcd = etcdAvailable();

const svc = (name: string): Doc => ({ apiVersion: 'mesh/v1', kind: 'Service', metadata: { name }, spec: { protocol: 'http' } });

interface Figures { requestsPerSecond: number; successRate: number | null; latencyMs: { p50: number | null; p95: number | null; p99: number | null }; requests: number }
interface StatJson { window: string; windowSeconds: number; sidecars: number; services: (Figures & { service: string; source: string; routes: (Figures & { route: string })[] })[] }
interface TargetGroup { targets: string[]; labels: Record<string, string> }

/** Every fifth request is a 503: exactly 20 % errors in any run of requests, whatever the window catches. */
function startFlakyApp(): Promise<Upstream> {
  let served = 0;
  return startUpstream({
    name: 'api',
    behaviour: (_req, res) => {
      const status = ++served % 5 === 0 ? 503 : 200;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2, 'x-upstream': 'api' });
      res.end('ok');
    },
  });
}

const MESH_YAML = toYaml([svc('api'), svc('client'), route('api-route', ['api'], [{ backends: [{ service: 'api', weight: 100 }] }])]);

describe('golden metrics: mesh stat, control-plane /metrics, Prometheus file_sd', () => {
  let cp: ControlPlaneProcess;
  let app: Upstream;
  let clientApp: Upstream;
  let server: DynamicSidecar;
  let client: DynamicSidecar;

  beforeAll(async () => {
    cp = await startControlPlane({ name: 'cp-stat' });
    app = await startFlakyApp();
    clientApp = await startUpstream({ name: 'client-app' });
    const r = await cp.apply(MESH_YAML, 'stat.yaml');
    expect(r.issues).toEqual([]);
    const common = { controlPlanes: [cp.grpc], dir: cp.dir, extraArgs: ['--stats-interval', '1s'] };
    [server, client] = await Promise.all([
      startDynamicSidecar({ ...common, service: 'api', app: app.address, instance: 'api-1' }),
      startDynamicSidecar({ ...common, service: 'client', app: clientApp.address, instance: 'client-1' }),
    ]);
    await waitFor(async () => (await snapshotEndpoints(client, 'api')).length === 1, { timeoutMs: 10_000, what: 'the api endpoint in the client snapshot' });
    await waitAllInSync(cp, 2, { atCurrent: true });
  }, 60_000);

  afterAll(async () => {
    await stopAllDynamicSidecars();
    await stopAllControlPlanes();
    await closeAllUpstreams();
    await removeMeshDirs();
  }, 30_000);

  const statArgs = (...extra: string[]) => ['stat', ...extra, '--control-plane', cp.grpc, '--dir', cp.dir];

  it(`under ${RATE} rps with 20 % 503, mesh stat -o json --window ${WINDOW_S}s: success rate within 1 point, rate within 10 %`, async () => {
    const traffic = startTraffic(client.outbound, { rate: RATE, host: 'api', path: '/work' });
    let json: StatJson;
    let table: string;
    let tAsked = 0;
    let samples: TrafficSample[];
    try {
      await waitFor(() => traffic.samples.some((s) => s.startedAt > (WINDOW_S + 5) * 1000), { timeoutMs: 30_000, what: `${WINDOW_S + 5} s of traffic` });
      tAsked = performance.now() - traffic.t0;
      const j = await runCli(statArgs('-o', 'json', '--window', `${WINDOW_S}s`));
      expect(j.code, j.stderr).toBe(0);
      json = JSON.parse(j.stdout) as StatJson;
      const t = await runCli(statArgs('api'));
      expect(t.code, t.stderr).toBe(0);
      table = t.stdout;
    } finally {
      samples = await traffic.stop();
    }
    // The truth, from what the client saw in the window before the question.
    const inWindow = samples.filter((s) => s.startedAt >= tAsked - WINDOW_S * 1000 && s.startedAt < tAsked);
    expect(inWindow.every((s) => s.status === 200 || s.status === 503), JSON.stringify(inWindow.find((s) => s.status !== 200 && s.status !== 503))).toBe(true);
    const trueSuccess = inWindow.filter((s) => s.status === 200).length / inWindow.length;
    const trueRate = inWindow.length / WINDOW_S;
    expect(trueSuccess).toBeGreaterThan(0.78);
    expect(trueSuccess).toBeLessThan(0.82);

    expect(json.window).toBe('10s');
    expect(json.windowSeconds).toBe(WINDOW_S);
    expect(json.sidecars).toBe(2);
    const api = json.services.find((s) => s.service === 'api');
    expect(api, JSON.stringify(json)).toBeDefined();
    expect(api!.source).toBe('inbound');
    expect(Math.abs(api!.successRate! - trueSuccess), `success ${api!.successRate} vs ${trueSuccess}`).toBeLessThanOrEqual(0.01);
    // The truth is what the client sent in the window (a loaded machine may pace a little under RATE), within 10 %.
    expect(Math.abs(trueRate - RATE) / RATE, `the client paced ${trueRate} rps`).toBeLessThan(0.2);
    expect(Math.abs(api!.requestsPerSecond - trueRate) / trueRate, `rate ${api!.requestsPerSecond} vs client-measured ${trueRate}`).toBeLessThan(0.1);
    expect(api!.requests).toBeGreaterThan(RATE * WINDOW_S * 0.7);
    const { p50, p95, p99 } = api!.latencyMs;
    expect(p50).toBeGreaterThan(0);
    expect(p95!).toBeGreaterThanOrEqual(p50!);
    expect(p99!).toBeGreaterThanOrEqual(p95!);
    expect(p99!).toBeLessThan(1_000);
    // The caller's view of the same calls, by route name.
    expect(api!.routes.map((x) => x.route)).toEqual(['api-route']);
    const viaRoute = api!.routes[0];
    expect(Math.abs(viaRoute.successRate! - trueSuccess)).toBeLessThanOrEqual(0.01);
    expect(Math.abs(viaRoute.requestsPerSecond - trueRate) / trueRate).toBeLessThan(0.1);
    // The client sidecar only called: no service row of its own.
    expect(json.services.map((s) => s.service)).toEqual(['api']);

    const lines = table!.trim().split('\n');
    expect(lines[0]).toMatch(/^control plane cp-stat: window 1m, 2 sidecars reporting$/);
    expect(lines[2]).toMatch(/^SERVICE\s+ROUTE\s+RPS\s+SUCCESS\s+P50\s+P95\s+P99$/);
    expect(lines[3]).toMatch(/^api\s+\(all\)\s+\d+\.\d\s+(79|80|81)\.\d\d%\s+\S+ms\s+\S+ms\s+\S+ms$/);
    expect(lines[4]).toMatch(/^api\s+api-route\s+\d+\.\d\s+(79|80|81)\.\d\d%\s/);
  }, 60_000);

  it('mesh stat for a service nobody called: no rows; a bad window: one-line usage error, exit 2', async () => {
    const r = await runCli(statArgs('nobody', '-o', 'json', '--window', '5s'));
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as StatJson).services).toEqual([]);
    const bad = await runCli(statArgs('--window', '1h'));
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe('mesh: --window: expected 1s..5m, got "1h"');
  });

  it.skipIf(!promtool && !REQUIRE_PROMTOOL)(`control-plane /metrics passes promtool check metrics and counts pushes, ACKs, sidecars, stats reports${promtool ? '' : ' (skipped: no promtool on PATH; CI=true makes this a failure)'}`, async () => {
    if (!promtool) throw new Error('promtool not found, and CI=true requires it (Debian package prometheus)');
    const m = await cp.httpGet('/metrics');
    expect(m.status).toBe(200);
    const check = await checkMetrics(promtool, m.body);
    expect(check.output).toBe('');
    expect(check.code).toBe(0);
    const s = parseMetrics(m.body);
    const one = (name: string, labels: Record<string, string> = {}) => sumWhere(s.filter((x) => x.name === name), labels);
    expect(one('mesh_control_plane_connected_sidecars')).toBe(2);
    expect(one('mesh_control_plane_pushes_total')).toBeGreaterThanOrEqual(2);
    expect(one('mesh_control_plane_acks_total')).toBeGreaterThanOrEqual(2);
    expect(one('mesh_control_plane_nacks_total')).toBe(0);
    expect(one('mesh_control_plane_push_latency_seconds_count')).toBe(one('mesh_control_plane_acks_total'));
    expect(one('mesh_control_plane_store_healthy')).toBe(1);
    expect(one('mesh_control_plane_store_revision')).toBeGreaterThan(0);
    expect(one('mesh_control_plane_stats_reports_total', { result: 'accepted' })).toBeGreaterThan(10);
    expect(one('mesh_control_plane_stats_reports_total', { result: 'malformed' })).toBe(0);
  });

  it('the file_sd lists both sidecars’ admin /metrics and the control plane’s --http, with job and mesh_* labels', async () => {
    const file = path.join(cp.dir, 'prometheus', 'targets.json');
    let groups: TargetGroup[] = [];
    await waitFor(async () => {
      groups = JSON.parse(await readFile(file, 'utf8')) as TargetGroup[];
      return groups.length === 3;
    }, { timeoutMs: 10_000, what: `three targets in ${file}` });
    expect(groups).toEqual([
      { targets: [cp.http], labels: { job: 'mesh-control-plane', mesh_control_plane: 'cp-stat' } },
      { targets: [server.admin], labels: { job: 'mesh-sidecar', mesh_service: 'api', mesh_namespace: 'default', mesh_instance: 'api-1' } },
      { targets: [client.admin], labels: { job: 'mesh-sidecar', mesh_service: 'client', mesh_namespace: 'default', mesh_instance: 'client-1' } },
    ]);
  });

  it.skipIf(!prometheus && !REQUIRE_PROMETHEUS)(`a real Prometheus given the file_sd scrapes every target up${prometheus ? '' : ' (skipped: no prometheus binary on PATH; CI=true makes this a failure)'}`, async () => {
    if (!prometheus) throw new Error('prometheus not found, and CI=true requires it (Debian package prometheus, installed by .ci/run)');
    const prom = await startPrometheus(prometheus, path.join(cp.dir, 'prometheus', 'targets.json'));
    try {
      let last = '';
      await waitFor(async () => {
        const t = await prom.targets();
        last = JSON.stringify(t.map((x) => [x.labels.job, x.scrapeUrl, x.health, x.lastError]));
        return t.length === 3 && t.every((x) => x.health === 'up');
      }, { timeoutMs: 20_000, intervalMs: 250, what: 'three targets up in prometheus' }).catch((e: Error) => {
        throw new Error(`${e.message}; last targets: ${last}\n${prom.log().slice(-1_000)}`);
      });
      const t = await prom.targets();
      expect(t.map((x) => x.scrapeUrl).sort()).toEqual([`http://${cp.http}/metrics`, `http://${server.admin}/metrics`, `http://${client.admin}/metrics`].sort());
      expect(t.find((x) => x.labels.mesh_instance === 'api-1')?.labels).toMatchObject({ job: 'mesh-sidecar', mesh_service: 'api', mesh_namespace: 'default' });
    } finally {
      await prom.stop();
    }
  }, 45_000);
});

describe.skipIf(!withEtcd && !REQUIRE_ETCD)(`golden metrics across two replicas${withEtcd ? '' : ' (skipped: no etcd binary on PATH; CI=true makes this a failure)'}`, () => {
  let cluster: EtcdCluster | undefined;

  afterAll(async () => {
    await stopAllDynamicSidecars();
    await stopAllControlPlanes();
    await closeAllUpstreams();
    await cluster?.stop();
    await removeMeshDirs();
  }, 30_000);

  it('server sidecar on cp-a, client sidecar on cp-b: mesh stat on either replica merges both; the file_sd lists both replicas', async () => {
    if (!withEtcd) throw new Error('etcd binary not found, and CI=true requires it (install etcd-server)');
    cluster = await startEtcd();
    const dir = await newMeshDir();
    // One after the other: the first creates the CA and admin token in the shared dir, the second loads them.
    const a = await startControlPlane({ etcd: cluster.endpoints, dir, name: 'cp-a' });
    const b = await startControlPlane({ etcd: cluster.endpoints, dir, name: 'cp-b' });
    expect((await a.apply(MESH_YAML, 'stat.yaml')).issues).toEqual([]);
    const app = await startFlakyApp();
    const clientApp = await startUpstream({ name: 'client-app' });
    const extraArgs = ['--stats-interval', '500ms'];
    const [server, client] = await Promise.all([
      startDynamicSidecar({ controlPlanes: [a.grpc], dir, extraArgs, service: 'api', app: app.address, instance: 'api-1' }),
      startDynamicSidecar({ controlPlanes: [b.grpc], dir, extraArgs, service: 'client', app: clientApp.address, instance: 'client-1' }),
    ]);
    await waitFor(async () => (await snapshotEndpoints(client, 'api')).length === 1, { timeoutMs: 10_000, what: 'the api endpoint in the client snapshot' });

    const traffic = startTraffic(client.outbound, { rate: RATE, host: 'api', path: '/work' });
    const answers: { json: StatJson; at: number }[] = [];
    let samples: TrafficSample[];
    try {
      await waitFor(() => traffic.samples.some((s) => s.startedAt > 7_000), { timeoutMs: 20_000, what: '7 s of traffic' });
      for (const cp of [a, b]) {
        const r = await runCli(['stat', '-o', 'json', '--window', '5s', '--control-plane', cp.grpc, '--dir', dir]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toBe('');
        answers.push({ json: JSON.parse(r.stdout) as StatJson, at: performance.now() - traffic.t0 });
      }
    } finally {
      samples = await traffic.stop();
    }
    for (const [i, { json: j, at }] of answers.entries()) {
      const what = `asked ${['cp-a', 'cp-b'][i]}: ${JSON.stringify(j)}`;
      const trueRate = samples.filter((s) => s.startedAt >= at - 5_000 && s.startedAt < at).length / 5;
      expect(j.sidecars, what).toBe(2);
      const api = j.services.find((s) => s.service === 'api');
      // Inbound figures come from the sidecar on cp-a, route figures from the one on cp-b: each answer needs both replicas.
      expect(api?.source, what).toBe('inbound');
      expect(Math.abs(api!.successRate! - 0.8), what).toBeLessThanOrEqual(0.02);
      expect(Math.abs(api!.requestsPerSecond - trueRate) / trueRate, what).toBeLessThan(0.15);
      expect(api!.routes.map((x) => x.route), what).toEqual(['api-route']);
      expect(Math.abs(api!.routes[0].requestsPerSecond - trueRate) / trueRate, what).toBeLessThan(0.15);
    }

    let groups: TargetGroup[] = [];
    await waitFor(async () => {
      groups = JSON.parse(await readFile(path.join(dir, 'prometheus', 'targets.json'), 'utf8')) as TargetGroup[];
      return groups.length === 4;
    }, { timeoutMs: 10_000, what: 'two replicas and two sidecars in the file_sd' });
    expect(groups.map((g) => [g.labels.job, g.targets[0]])).toEqual([
      ['mesh-control-plane', a.http], ['mesh-control-plane', b.http], ['mesh-sidecar', server.admin], ['mesh-sidecar', client.admin],
    ]);
  }, 90_000);
});
