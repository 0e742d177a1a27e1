// End-to-end: a sidecar pair's /metrics after real traffic (success, app error, retry, ejection, access-denied, rate-limited, TLS refusal) passes `promtool check metrics`, has every DESIGN §5 metric with its labels, the 0.1 ms … 30 s buckets and the process metrics.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { header, request } from './harness/client.js';
import { accessPolicy, meshService, tlsProbe } from './harness/mtls.js';
import { parseMetrics, sumWhere, type Sample } from './harness/prom.js';
import { REQUIRE_PROMTOOL, checkMetrics, promtoolBinary } from './harness/promtool.js';
import { route, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { answer, closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

const BUCKETS = ['0.0001', '0.00025', '0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '30', '+Inf'];

/** DESIGN.md §5: name → type and label names (labels may grow, so these are a minimum). */
const CONTRACT: Record<string, { type: string; labels: string[] }> = {
  mesh_requests_total: { type: 'counter', labels: ['direction', 'source_service', 'destination_service', 'route', 'code'] },
  mesh_request_duration_seconds: { type: 'histogram', labels: ['direction', 'source_service', 'destination_service', 'route'] },
  mesh_retries_total: { type: 'counter', labels: ['destination_service', 'reason'] },
  mesh_endpoint_ejections_total: { type: 'counter', labels: ['destination_service'] },
  mesh_access_denied_total: { type: 'counter', labels: ['destination_service', 'policy'] },
  mesh_rate_limited_total: { type: 'counter', labels: ['destination_service', 'policy'] },
  mesh_tls_handshake_errors_total: { type: 'counter', labels: ['direction', 'reason'] },
  mesh_config_updates_total: { type: 'counter', labels: ['result'] },
  mesh_certificate_expiry_timestamp_seconds: { type: 'gauge', labels: [] },
};

/** Where each metric gets a sample from the traffic below. */
const SCRAPED_FROM: Record<string, 'gateway' | 'billing'> = {
  mesh_retries_total: 'gateway',
  mesh_endpoint_ejections_total: 'gateway',
  mesh_access_denied_total: 'billing',
  mesh_rate_limited_total: 'billing',
  mesh_tls_handshake_errors_total: 'billing',
};

const ALLOW = 'billing-callers';
const texts: Record<'gateway' | 'billing', string> = { gateway: '', billing: '' };
let gateway: Sidecar;
let billing: Sidecar;
let billingApp: Upstream;

const samplesOf = (who: 'gateway' | 'billing', name: string): Sample[] => parseMetrics(texts[who]).filter((s) => s.name === name);

beforeAll(async () => {
  billingApp = await startUpstream({ name: 'billing-app' });
  const broken = await startUpstream({ name: 'broken', behaviour: answer(500, 'boom') });
  let flakyCalls = 0;
  // First request: the connection dies before an answer (a retryable reset); every later one: 200.
  const flaky = await startUpstream({
    name: 'flaky',
    behaviour: (_req, res, socket) => (flakyCalls++ === 0 ? socket.destroy() : res.end('ok')),
  });
  const dead = await startUpstream({ name: 'dead' });
  await dead.kill();

  billing = await startSidecar({
    service: 'billing',
    app: billingApp.address,
    resources: toYaml([
      ...meshService({ name: 'billing', policy: { rateLimit: { requestsPerSecond: 1, burst: 10 } } }),
      accessPolicy(ALLOW, 'billing', 'allow', [{ from: ['gateway'], to: [{ paths: ['/invoices', '/invoices/*'] }] }]),
    ]),
  });
  gateway = await startSidecar({
    service: 'gateway',
    resources: toYaml([
      ...meshService({ name: 'gateway' }),
      ...meshService({ name: 'billing', endpoints: [billing.inbound] }),
      route('billing-invoices', ['billing'], [{ backends: [{ service: 'billing', weight: 100 }] }]),
      ...service({ name: 'flaky', endpoints: [{ address: flaky.address }] }),
      ...service({ name: 'broken', endpoints: [{ address: broken.address }] }),
      ...service({
        name: 'dead',
        endpoints: [{ address: dead.address }],
        policy: { outlierDetection: { consecutiveFailures: 2, interval: '1s', baseEjectionTime: '30s', maxEjectionPercent: 100 } },
      }),
    ]),
  });

  const call = (host: string, path: string) => request(gateway.outbound, { host, path });
  for (let i = 0; i < 3; i++) expect((await call('billing', `/invoices/${i}`)).status).toBe(200);
  const denied = await call('billing', '/private');
  expect([denied.status, header(denied, 'x-mesh-error')]).toEqual([403, 'access-denied']);
  expect((await call('flaky', '/once')).status).toBe(200);
  expect((await call('broken', '/fail')).status).toBe(500);
  const refused = await call('dead', '/gone');
  expect(refused.status).toBe(503);
  expect((await call('nosuch', '/')).status).toBe(404);
  // Without a client certificate the inbound handshake is refused and counted.
  expect((await tlsProbe(billing.inbound)).response).toBeUndefined();
  // Burst 10 at 1 rps: a quick run of calls meets a 429 within a few dozen.
  await waitFor(async () => (await call('billing', '/invoices/burst')).status === 429, { timeoutMs: 10_000, intervalMs: 1, what: 'a 429 from billing' });

  await waitFor(async () => {
    texts.gateway = await gateway.metrics();
    texts.billing = await billing.metrics();
    return sumWhere(samplesOf('gateway', 'mesh_endpoint_ejections_total'), {}) > 0
      && sumWhere(samplesOf('billing', 'mesh_tls_handshake_errors_total'), {}) > 0;
  }, { timeoutMs: 5_000, what: 'the ejection and the refused handshake to be counted' });
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

const promtool = promtoolBinary();
const skipPromtool = !promtool && !REQUIRE_PROMTOOL;

describe.skipIf(skipPromtool)(`promtool check metrics${skipPromtool ? ' (skipped: no promtool on PATH, Debian package prometheus; CI=true makes this a failure)' : ''}`, () => {
  it.each(['gateway', 'billing'] as const)('passes on the %s sidecar after traffic', async (who) => {
    if (!promtool) throw new Error('promtool not found on PATH (CI=true requires it: apt-get install prometheus, as .ci/run does)');
    const { code, output } = await checkMetrics(promtool, texts[who]);
    expect(output.trim(), `promtool on ${who}'s /metrics`).toBe('');
    expect(code, output).toBe(0);
  });
});

describe('the metrics after traffic', () => {
  it('exports every DESIGN.md §5 metric with its type and labels, populated by the traffic', () => {
    for (const [name, { type, labels }] of Object.entries(CONTRACT)) {
      const who = SCRAPED_FROM[name] ?? 'gateway';
      expect(texts[who], name).toContain(`# TYPE ${name} ${type}\n`);
      const series = type === 'histogram' ? `${name}_count` : name;
      const samples = samplesOf(who, series).filter((s) => s.value > 0);
      expect(samples.length, `${series} on ${who}: no sample above 0`).toBeGreaterThan(0);
      for (const s of samples) expect(Object.keys(s.labels).sort(), series).toEqual(expect.arrayContaining(labels));
    }
    expect(sumWhere(samplesOf('gateway', 'mesh_retries_total'), { destination_service: 'flaky', reason: 'reset' })).toBe(1);
    expect(sumWhere(samplesOf('gateway', 'mesh_retries_total'), { destination_service: 'dead', reason: 'connect-failure' })).toBeGreaterThanOrEqual(1);
    expect(sumWhere(samplesOf('gateway', 'mesh_endpoint_ejections_total'), { destination_service: 'dead' })).toBe(1);
    expect(sumWhere(samplesOf('billing', 'mesh_access_denied_total'), { destination_service: 'billing', policy: ALLOW })).toBe(1);
    expect(sumWhere(samplesOf('billing', 'mesh_rate_limited_total'), { destination_service: 'billing' })).toBeGreaterThanOrEqual(1);
    expect(sumWhere(samplesOf('gateway', 'mesh_requests_total'), { direction: 'outbound', destination_service: 'broken', code: '500' })).toBe(1);
    expect(sumWhere(samplesOf('gateway', 'mesh_requests_total'), { direction: 'outbound', destination_service: 'billing', route: 'billing-invoices', code: '403' })).toBe(1);
    expect(sumWhere(samplesOf('billing', 'mesh_requests_total'), { direction: 'inbound', source_service: 'gateway', code: '200' })).toBeGreaterThanOrEqual(3);
  });

  it('keeps labels bounded: route names, never request paths', () => {
    for (const who of ['gateway', 'billing'] as const) {
      const mesh = parseMetrics(texts[who]).filter((s) => s.name.startsWith('mesh_'));
      const routes = new Set(mesh.map((s) => s.labels.route).filter((r) => r !== undefined));
      expect([...routes].every((r) => ['billing-invoices', 'default', 'none', 'inbound'].includes(r)), `${who} routes: ${[...routes].join(', ')}`).toBe(true);
      for (const s of mesh) for (const v of Object.values(s.labels)) expect(v, `${s.name} on ${who}`).not.toMatch(/\//);
    }
  });

  it('has the 0.1 ms … 30 s buckets on every latency histogram, cumulative, +Inf equal to _count', () => {
    for (const who of ['gateway', 'billing'] as const) {
      const buckets = samplesOf(who, 'mesh_request_duration_seconds_bucket');
      const counts = samplesOf(who, 'mesh_request_duration_seconds_count');
      expect(counts.length, who).toBeGreaterThan(0);
      for (const c of counts) {
        const mine = buckets.filter((b) => Object.entries(c.labels).every(([k, v]) => b.labels[k] === v));
        expect(mine.map((b) => b.labels.le), JSON.stringify(c.labels)).toEqual(BUCKETS);
        const values = mine.map((b) => b.value);
        expect(values, JSON.stringify(c.labels)).toEqual([...values].sort((a, b) => a - b));
        expect(values.at(-1)).toBe(c.value);
      }
    }
  });

  it('exports the process metrics (RSS, open fds, event-loop lag, heap, GC) and no gauge named *_total', () => {
    for (const who of ['gateway', 'billing'] as const) {
      const all = parseMetrics(texts[who]);
      const value = (name: string): number | undefined => all.find((s) => s.name === name)?.value;
      expect(value('process_resident_memory_bytes'), who).toBeGreaterThan(10 * 2 ** 20);
      expect(value('process_open_fds'), who).toBeGreaterThan(3);
      expect(value('nodejs_eventloop_lag_p99_seconds'), who).toBeGreaterThanOrEqual(0);
      expect(value('nodejs_heap_size_used_bytes'), who).toBeGreaterThan(0);
      expect(texts[who]).toContain('# TYPE nodejs_gc_duration_seconds histogram\n');
      expect(texts[who]).not.toMatch(/^# TYPE \S+_total gauge$/m);
    }
  });
});
