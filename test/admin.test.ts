// End-to-end: the sidecar's admin API (/ready /live /metrics /config_dump /clusters), inbound rate limiting and graceful SIGTERM drain.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectRefused, header, request } from './harness/client.js';
import { sumWhere } from './harness/prom.js';
import { meshConfig, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

describe('admin API', () => {
  let billing: Upstream;
  let sidecar: Sidecar;

  beforeAll(async () => {
    billing = await startUpstream({ name: 'billing' });
    sidecar = await startSidecar({
      service: 'web',
      resources: toYaml([...service({ name: 'web' }), ...service({ name: 'billing', endpoints: [{ address: billing.address, labels: { version: 'v1' } }] })]),
    });
  }, 30_000);

  it('answers /ready and /live with 200', async () => {
    expect((await sidecar.adminGet('/ready')).status).toBe(200);
    expect((await sidecar.adminGet('/live')).status).toBe(200);
  });

  it('counts requests in mesh_requests_total with direction, source_service, destination_service, route and code', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await request(sidecar.outbound, { host: 'billing', path: `/m/${i}` });
      expect(r.status).toBe(200);
    }
    const miss = await request(sidecar.outbound, { host: 'nosuch', path: '/' });
    expect(miss.status).toBe(404);

    const samples = await sidecar.samples('mesh_requests_total');
    const ok = samples.filter((s) => s.labels.direction === 'outbound' && s.labels.destination_service === 'billing' && s.labels.code === '200');
    expect(ok.length, `mesh_requests_total samples: ${JSON.stringify(samples)}`).toBeGreaterThan(0);
    for (const s of ok) {
      expect(Object.keys(s.labels)).toEqual(expect.arrayContaining(['direction', 'source_service', 'destination_service', 'route', 'code']));
      expect(s.labels.source_service).toBe('web');
    }
    expect(sumWhere(ok, {})).toBe(3);
  }, 15_000);

  it('dumps the active config with its version', async () => {
    const dump = await sidecar.configDump();
    expect(typeof dump.version === 'string' || typeof dump.version === 'number').toBe(true);
    expect(String(dump.version).length).toBeGreaterThan(0);
    expect(dump.snapshot).toBeTypeOf('object');
    expect(JSON.stringify(dump.snapshot)).toContain('billing');
  });

  it('lists every endpoint in /clusters with health, ejection, in-flight and latency', async () => {
    const eps = await sidecar.endpoints('billing');
    expect(eps).toHaveLength(1);
    const [e] = eps;
    expect(e.address).toBe(billing.address);
    expect(e.labels).toEqual({ version: 'v1' });
    expect(e.healthy).toBe(true);
    expect(e.ejected).toBe(false);
    expect(e.inflight).toBe(0);
    expect(e.consecutiveFailures).toBe(0);
    expect(e.latencyMs).toBeTypeOf('number');
  });
});

describe('inbound rate limit', () => {
  afterEach(stopAllSidecars);

  it('answers the 3rd quick inbound request with 429 rate-limited (1 rps, burst 2) and counts it', async () => {
    const app = await startUpstream({ name: 'web-app' });
    const sidecar = await startSidecar({
      service: 'web',
      app: app.address,
      resources: toYaml([
        meshConfig({ mtls: 'permissive' }),
        ...service({ name: 'web', policy: { rateLimit: { requestsPerSecond: 1, burst: 2 } } }),
      ]),
    });
    const statuses: number[] = [];
    const errors: (string | undefined)[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await request(sidecar.inbound, { host: 'web', path: `/in/${i}` });
      statuses.push(r.status);
      errors.push(header(r, 'x-mesh-error'));
    }
    expect(statuses).toEqual([200, 200, 429]);
    expect(errors[2]).toBe('rate-limited');
    expect(app.requests).toHaveLength(2);
    const limited = await sidecar.samples('mesh_rate_limited_total');
    expect(sumWhere(limited, { destination_service: 'web' }), JSON.stringify(limited)).toBeGreaterThanOrEqual(1);
  }, 30_000);
});

describe('graceful shutdown', () => {
  afterEach(stopAllSidecars);

  it('on SIGTERM closes the listener, finishes a slow in-flight request with 200 and exits 0', async () => {
    // The answer waits for the test, not a timer: under CI load the listener took longer than a 500 ms delay to close.
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const slow = await startUpstream({
      name: 'slow',
      behaviour: (_req, res) => void gate.then(() => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'slow' });
        res.end('slow');
      }),
    });
    const sidecar = await startSidecar({
      service: 'web',
      resources: toYaml([...service({ name: 'web' }), ...service({ name: 'slow', endpoints: [{ address: slow.address }] })]),
    });
    const pending = request(sidecar.outbound, { host: 'slow', path: '/slow' }).catch((e: Error) => e);
    await waitFor(() => slow.requests.length === 1, { timeoutMs: 5_000, what: 'the slow upstream to receive the request' });
    let settled = false;
    void pending.then(() => (settled = true));
    const stopping = sidecar.stop('SIGTERM', 10_000);
    // HARDENING.md: listeners close first, then in-flight requests finish.
    await waitFor(() => connectRefused(sidecar.outbound), { timeoutMs: 2_000, intervalMs: 10, what: 'the outbound listener to close' });
    expect(settled, 'the in-flight request ended before its answer was released').toBe(false);
    release();
    const code = await stopping;
    const r = await pending;
    if (r instanceof Error) throw new Error(`the in-flight request failed during drain: ${r.message}\n${sidecar.stderr()}`);
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('slow');
    expect(code, sidecar.stderr()).toBe(0);
  }, 30_000);
});
