// End-to-end: the sidecar's inbound listener: what the app receives from callers, and plaintext refused under strict mTLS.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseResponse, rawRequest, request } from './harness/client.js';
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

  it('strict (the default): refuses plaintext on the inbound listener; the app sees nothing', async () => {
    const app = await startUpstream({ name: 'web-app' });
    const sidecar = await startSidecar({ service: 'web', app: app.address, resources: toYaml(service({ name: 'web' })) });
    const text = await rawRequest(sidecar.inbound, 'GET /in HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n').catch(
      (e: Error) => `(connection failed: ${e.message})`,
    );
    const status = text.startsWith('HTTP/') ? parseResponse(text).status : 0;
    expect(status < 200 || status >= 300, `plaintext got: ${text.slice(0, 200)}`).toBe(true);
    expect(app.requests).toHaveLength(0);
  }, 30_000);
});
