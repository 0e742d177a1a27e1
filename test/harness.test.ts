// Self-test of the e2e harness (upstream presets, clients, loader, waitFor) without a sidecar, so harness bugs are not blamed on the sidecar.
import { afterAll, describe, expect, it } from 'vitest';
import { createPool, header, parseResponse, rawRequest, request, runSteady } from './harness/client.js';
import { parseMetrics, sumWhere } from './harness/prom.js';
import { answer, closeAllUpstreams, delay, hang, reset, startUpstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

afterAll(closeAllUpstreams);

describe('harness', () => {
  it('upstream answers with its name by default and records the request', async () => {
    const u = await startUpstream({ name: 'u1' });
    const r = await request(u.address, { method: 'POST', path: '/p?x=1', host: 'billing', headers: { 'x-a': 'b' }, body: 'hi' });
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('u1');
    expect(JSON.parse(r.body)).toMatchObject({ upstream: 'u1', path: '/p?x=1', method: 'POST', headers: { host: 'billing', 'x-a': 'b' } });
    expect(u.requests).toHaveLength(1);
    expect(u.requests[0]).toMatchObject({ method: 'POST', url: '/p?x=1', body: 'hi' });
  });

  it('upstream presets: answer, queue, delay, hang, reset, kill', async () => {
    const u = await startUpstream();
    u.setBehaviour(answer(418, 'teapot'));
    expect(await request(u.address)).toMatchObject({ status: 418, body: 'teapot' });
    u.setBehaviour([503, 200]);
    expect((await request(u.address)).status).toBe(503);
    expect((await request(u.address)).status).toBe(200);
    expect((await request(u.address)).status).toBe(200);
    u.setBehaviour(delay(100));
    const t0 = performance.now();
    expect((await request(u.address)).status).toBe(200);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
    u.setBehaviour(hang());
    await expect(request(u.address, { timeoutMs: 200 })).rejects.toThrow();
    u.setBehaviour(reset());
    await expect(request(u.address)).rejects.toThrow();
    await u.kill();
    await expect(request(u.address)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('rawRequest returns the raw response for keep-alive and close', async () => {
    const u = await startUpstream({ name: 'raw' });
    const text = await rawRequest(u.address, 'GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n');
    const r = parseResponse(text);
    expect(r.status).toBe(200);
    expect(r.headers['x-upstream']).toBe('raw');
    expect(JSON.parse(r.body).path).toBe('/a/../b');
  });

  it('runSteady keeps the rate and the bounds', async () => {
    const u = await startUpstream();
    const pool = createPool(u.address, 8);
    const run = await runSteady({ rate: 500, total: 250, concurrency: 8, send: async () => (await request(u.address, { dispatcher: pool })).status });
    await pool.close();
    expect(run.notStarted).toBe(0);
    expect(run.outcomes.filter((o) => o.ok && o.value === 200)).toHaveLength(250);
    expect(run.durationMs).toBeGreaterThanOrEqual(450);
    expect(run.durationMs).toBeLessThan(5_000);
  });

  it('waitFor meets its deadline with the reason', async () => {
    await expect(waitFor(() => false, { timeoutMs: 50, what: 'never' })).rejects.toThrow(/waiting for never/);
    let n = 0;
    await waitFor(() => ++n > 3, { intervalMs: 1 });
    expect(n).toBe(4);
  });

  it('parses Prometheus text', () => {
    const s = parseMetrics('# HELP x y\nmesh_requests_total{direction="outbound",code="200"} 3\nmesh_requests_total{direction="inbound",code="200"} 2\nup 1\n');
    expect(sumWhere(s.filter((x) => x.name === 'mesh_requests_total'), { code: '200' })).toBe(5);
    expect(s.find((x) => x.name === 'up')?.value).toBe(1);
  });
});
