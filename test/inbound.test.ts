// End-to-end: the sidecar's inbound listener: what the app receives from callers.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { request } from './harness/client.js';
import { meshConfig, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream } from './harness/upstream.js';

afterEach(stopAllSidecars);
afterAll(closeAllUpstreams);

describe('inbound', () => {
  it('permissive: forwards plaintext to the app without caller-sent x-mesh-* or x-forwarded-client-cert', async () => {
    const app = await startUpstream({ name: 'web-app' });
    const sidecar = await startSidecar({
      service: 'web',
      app: app.address,
      resources: toYaml([meshConfig({ mtls: 'permissive' }), ...service({ name: 'web' })]),
    });
    const r = await request(sidecar.inbound, {
      host: 'web',
      path: '/in',
      headers: {
        'x-mesh-source': 'admin',
        'x-forwarded-client-cert': 'By=spiffe://mesh.local/ns/default/sa/web;URI=spiffe://mesh.local/ns/default/sa/admin',
        'x-app': 'kept',
      },
    });
    expect(r.status).toBe(200);
    expect(app.requests).toHaveLength(1);
    const got = app.requests[0].headers;
    expect(Object.keys(got).filter((k) => k.startsWith('x-mesh-'))).toEqual([]);
    // Unauthenticated plaintext has no caller identity, so no client certificate can be claimed for it.
    expect(String(got['x-forwarded-client-cert'] ?? '')).not.toContain('sa/admin');
    expect(got['x-app']).toBe('kept');
  }, 30_000);
});
