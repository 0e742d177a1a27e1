// End-to-end: outbound routing through a real sidecar: weighted split, header/path/method match, proxy form, rewrite, no-route, default route.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, header, rawRequest, parseResponse, request, runSteady } from './harness/client.js';
import { route, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';

let v1: Upstream;
let v2: Upstream;
let billing: Upstream;
let plain: Upstream;
let sidecar: Sidecar;

const subsets = [
  { name: 'v1', labels: { version: 'v1' } },
  { name: 'v2', labels: { version: 'v2' } },
];

beforeAll(async () => {
  [v1, v2, billing, plain] = await Promise.all(['v1', 'v2', 'billing', 'plain'].map((name) => startUpstream({ name })));
  const versioned = [
    { address: v1.address, labels: { version: 'v1' } },
    { address: v2.address, labels: { version: 'v2' } },
  ];
  const only = (svc: string, subset: string) => [{ service: svc, subset, weight: 100 }];
  const resources = toYaml([
    ...service({ name: 'web' }),
    ...service({ name: 'split', endpoints: versioned, subsets }),
    route('split', ['split'], [
      {
        backends: [
          { service: 'split', subset: 'v2', weight: 10 },
          { service: 'split', subset: 'v1', weight: 90 },
        ],
      },
    ]),
    ...service({ name: 'canary', endpoints: versioned, subsets }),
    route('canary', ['canary'], [
      { match: [{ headers: { 'x-canary': { exact: 'true' } } }], backends: only('canary', 'v2') },
      { backends: only('canary', 'v1') },
    ]),
    ...service({ name: 'methods', endpoints: versioned, subsets }),
    route('methods', ['methods'], [
      { match: [{ pathPrefix: '/admin', method: 'POST' }], backends: only('methods', 'v2') },
      { backends: only('methods', 'v1') },
    ]),
    ...service({ name: 'rewrite', endpoints: [{ address: v1.address, labels: { version: 'v1' } }] }),
    route('rewrite', ['rewrite'], [
      {
        match: [{ pathPrefix: '/api' }],
        rewrite: { pathPrefix: '/internal', host: 'rewrite.internal' },
        backends: [{ service: 'rewrite', weight: 100 }],
      },
    ]),
    ...service({ name: 'billing', endpoints: [{ address: billing.address }] }),
    ...service({ name: 'plain', endpoints: [{ address: plain.address }] }),
  ]);
  sidecar = await startSidecar({ service: 'web', resources });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

describe('routing', () => {
  it('splits traffic 10/90 between subsets v2/v1 within ±5 points over 2,000 requests', async () => {
    const pool = createPool(sidecar.outbound, 32);
    try {
      const run = await runSteady({
        rate: 1_000,
        total: 2_000,
        concurrency: 32,
        maxDurationMs: 15_000,
        send: async () => {
          const r = await request(sidecar.outbound, { host: 'split', path: '/split', dispatcher: pool });
          return { status: r.status, upstream: header(r, 'x-upstream') };
        },
      });
      expect(run.notStarted).toBe(0);
      const failed = run.outcomes.filter((o) => !o.ok || o.value.status !== 200);
      expect(failed.length, `failed requests: ${JSON.stringify(failed.slice(0, 3))}`).toBe(0);
      const toV2 = run.outcomes.filter((o) => o.ok && o.value.upstream === 'v2').length;
      const toV1 = run.outcomes.filter((o) => o.ok && o.value.upstream === 'v1').length;
      expect(toV1 + toV2).toBe(2_000);
      const pctV2 = (toV2 / 2_000) * 100;
      expect(pctV2).toBeGreaterThanOrEqual(5);
      expect(pctV2).toBeLessThanOrEqual(15);
    } finally {
      await pool.close();
    }
  }, 30_000);

  it('routes on a header match: x-canary: "true" → v2, anything else → v1', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await request(sidecar.outbound, { host: 'canary', path: '/c', headers: { 'x-canary': 'true' } });
      expect(r.status).toBe(200);
      expect(header(r, 'x-upstream')).toBe('v2');
    }
    const others: Record<string, string>[] = [{}, { 'x-canary': 'false' }, { 'x-canary': 'truex' }];
    for (const headers of others) {
      const r = await request(sidecar.outbound, { host: 'canary', path: '/c', headers });
      expect(r.status).toBe(200);
      expect(header(r, 'x-upstream'), `headers ${JSON.stringify(headers)}`).toBe('v1');
    }
  }, 15_000);

  it('routes on pathPrefix AND method: only POST /admin… goes to v2', async () => {
    const cases: [string, string, string][] = [
      ['POST', '/admin/users', 'v2'],
      ['POST', '/admin', 'v2'],
      ['GET', '/admin/users', 'v1'],
      ['POST', '/other', 'v1'],
      ['GET', '/', 'v1'],
    ];
    for (const [method, path, want] of cases) {
      const r = await request(sidecar.outbound, { host: 'methods', method, path, body: method === 'POST' ? '{}' : undefined });
      expect(r.status, `${method} ${path}`).toBe(200);
      expect(header(r, 'x-upstream'), `${method} ${path}`).toBe(want);
    }
  }, 15_000);

  it('accepts proxy form (GET http://billing/x) and forwards origin form to the upstream', async () => {
    billing.clearRequests();
    // An HTTP_PROXY client sends the authority in the request-target and the same value in Host.
    const r = await request(sidecar.outbound, { path: 'http://billing/x?q=1', host: 'billing' });
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('billing');
    expect(billing.requests.map((q) => q.url)).toEqual(['/x?q=1']);

    // The same over a raw socket, exactly as an HTTP_PROXY client writes it.
    const raw = parseResponse(
      await rawRequest(sidecar.outbound, 'GET http://billing/raw HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n'),
    );
    expect(raw.status).toBe(200);
    expect(raw.headers['x-upstream']).toBe('billing');
    expect(billing.requests.at(-1)?.url).toBe('/raw');

    // HARDENING.md bad input #5: an absolute-form authority that disagrees with Host is refused.
    const n = billing.requests.length;
    const mismatch = await request(sidecar.outbound, { path: 'http://billing/y', host: 'plain' });
    expect(mismatch.status).toBe(400);
    expect(header(mismatch, 'x-mesh-error')).toBe('bad-request');
    expect(billing.requests).toHaveLength(n);
  }, 15_000);

  it('rewrites the path prefix and the host the upstream sees', async () => {
    v1.clearRequests();
    const r = await request(sidecar.outbound, { host: 'rewrite', path: '/api/items?id=7' });
    expect(r.status).toBe(200);
    expect(v1.requests).toHaveLength(1);
    expect(v1.requests[0].url).toBe('/internal/items?id=7');
    expect(v1.requests[0].headers.host).toBe('rewrite.internal');
  }, 15_000);

  it('answers 404 x-mesh-error: no-route for a host that is neither a Route nor a Service', async () => {
    const r = await request(sidecar.outbound, { host: 'nosuch', path: '/x' });
    expect(r.status).toBe(404);
    expect(header(r, 'x-mesh-error')).toBe('no-route');
  }, 15_000);

  it('sends a host that is a Service without a Route to that service (default route), with or without a port', async () => {
    plain.clearRequests();
    const r = await request(sidecar.outbound, { host: 'plain', path: '/hello' });
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('plain');
    const withPort = await request(sidecar.outbound, { host: 'plain:8080', path: '/hello2' });
    expect(withPort.status).toBe(200);
    expect(header(withPort, 'x-upstream')).toBe('plain');
    expect(plain.requests.map((q) => q.url)).toEqual(['/hello', '/hello2']);
  }, 15_000);
});
