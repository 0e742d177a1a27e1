// End-to-end: route policies beyond plain routing: fault injection, mirroring, circuit limits, and config reload.
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { header, request } from './harness/client.js';
import { parseMetrics, sumWhere } from './harness/prom.js';
import { route, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, hang, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

let main: Upstream;
let shadow: Upstream;
let slow: Upstream;
let sidecar: Sidecar;

function resources(extra: ReturnType<typeof route>[] = []): string {
  return toYaml([
    ...service({ name: 'web' }),
    ...service({ name: 'faulty', endpoints: [{ address: main.address }] }),
    route('faulty', ['faulty'], [
      { match: [{ pathPrefix: '/abort' }], fault: { abort: { percent: 100, status: 418 } }, backends: [{ service: 'faulty', weight: 100 }] },
      { match: [{ pathPrefix: '/delay' }], fault: { delay: { percent: 100, fixed: '300ms' } }, backends: [{ service: 'faulty', weight: 100 }] },
      { backends: [{ service: 'faulty', weight: 100 }] },
    ]),
    ...service({ name: 'mirrored', endpoints: [{ address: main.address }] }),
    ...service({ name: 'shadow', endpoints: [{ address: shadow.address }] }),
    ...service({ name: 'deadshadow', endpoints: [{ address: '127.0.0.1:1' }] }),
    route('mirrored', ['mirrored'], [
      { match: [{ pathPrefix: '/dead' }], mirror: { service: 'deadshadow', percent: 100 }, backends: [{ service: 'mirrored', weight: 100 }] },
      { mirror: { service: 'shadow', percent: 100 }, backends: [{ service: 'mirrored', weight: 100 }] },
    ]),
    ...service({
      name: 'narrow',
      endpoints: [{ address: slow.address }],
      policy: { connectionPool: { maxConnections: 1, maxPendingRequests: 1 } },
    }),
    ...extra,
  ]);
}

beforeAll(async () => {
  [main, shadow, slow] = await Promise.all(['main', 'shadow', 'slow'].map((name) => startUpstream({ name })));
  slow.setBehaviour(hang());
  sidecar = await startSidecar({ service: 'web', resources: resources() });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

describe('fault injection', () => {
  it('aborts with the configured status and x-mesh-error: fault-injected, without calling the upstream', async () => {
    main.clearRequests();
    const r = await request(sidecar.outbound, { host: 'faulty', path: '/abort/x' });
    expect(r.status).toBe(418);
    expect(header(r, 'x-mesh-error')).toBe('fault-injected');
    expect(main.requests).toHaveLength(0);
  });

  it('delays by the fixed time, then forwards', async () => {
    const t0 = performance.now();
    const r = await request(sidecar.outbound, { host: 'faulty', path: '/delay/x' });
    expect(r.status).toBe(200);
    // A lower bound only: the delay must have happened; how much longer the machine took is not asserted.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
  });
});

describe('mirroring', () => {
  it('sends a copy to the shadow service with a -shadow host; the client sees only the primary answer', async () => {
    shadow.clearRequests();
    const r = await request(sidecar.outbound, { host: 'mirrored', path: '/m?q=1', method: 'PUT', body: 'payload' });
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('main');
    await waitFor(() => shadow.requests.length === 1, { timeoutMs: 5_000, what: 'the shadow to receive the mirrored request' });
    const copy = shadow.requests[0];
    expect(copy.url).toBe('/m?q=1');
    expect(copy.method).toBe('PUT');
    expect(copy.body).toBe('payload');
    expect(copy.headers.host).toBe('mirrored-shadow');
  });

  it('a dead shadow never affects the response', async () => {
    const r = await request(sidecar.outbound, { host: 'mirrored', path: '/dead' });
    expect(r.status).toBe(200);
    expect(header(r, 'x-upstream')).toBe('main');
  });
});

describe('circuit limits', () => {
  it('answers 503 circuit-open beyond maxConnections + maxPendingRequests', async () => {
    // One request holds the only connection (the upstream never answers), a second waits in the one pending slot.
    const held = [request(sidecar.outbound, { host: 'narrow', path: '/held-1', timeoutMs: 20_000 }).catch(() => undefined)];
    await waitFor(() => slow.requests.length === 1, { timeoutMs: 5_000, what: 'the first request to reach the upstream' });
    held.push(request(sidecar.outbound, { host: 'narrow', path: '/held-2', timeoutMs: 20_000 }).catch(() => undefined));
    const queued = async () => (await sidecar.clusters()).clusters.find((c) => c.service === 'narrow')?.queued ?? 0;
    await waitFor(async () => (await queued()) === 1, { timeoutMs: 5_000, what: 'the second request to be queued' });
    const r = await request(sidecar.outbound, { host: 'narrow', path: '/third', timeoutMs: 5_000 });
    expect(r.status).toBe(503);
    expect(header(r, 'x-mesh-error')).toBe('circuit-open');
    expect(slow.requests.map((x) => x.url)).toEqual(['/held-1']);
  }, 30_000);
});

describe('config reload (SIGHUP)', () => {
  it('applies a valid file and refuses an invalid one, keeping the config in force', async () => {
    const before = (await sidecar.configDump()).version;
    writeFileSync(sidecar.resourcesFile, resources([route('extra', ['extra-host'], [{ backends: [{ service: 'faulty', weight: 100 }] }])]));
    sidecar.signal('SIGHUP');
    await waitFor(async () => (await sidecar.configDump()).version !== before, { timeoutMs: 10_000, what: 'the new version to be applied' });
    expect((await request(sidecar.outbound, { host: 'extra-host', path: '/' })).status).toBe(200);
    const good = (await sidecar.configDump()).version;

    writeFileSync(sidecar.resourcesFile, 'apiVersion: mesh/v1\nkind: Route\nmetadata: { name: broken }\nspec: { hosts: [x], bogus: 1 }\n');
    sidecar.signal('SIGHUP');
    await waitFor(async () => sumWhere(parseMetrics(await sidecar.metrics()), { result: 'nack' }) === 1, { timeoutMs: 10_000, what: 'the refusal to be counted' });
    expect((await sidecar.configDump()).version).toBe(good);
    expect((await request(sidecar.outbound, { host: 'extra-host', path: '/' })).status).toBe(200);
    expect(sidecar.stderr()).toContain('spec.bogus: unknown field');
  }, 30_000);
});
