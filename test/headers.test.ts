// End-to-end: header hygiene, framing, trace propagation and path normalization on the sidecar's outbound listener.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { header, parseResponse, rawRequest, request } from './harness/client.js';
import { service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';

let echo: Upstream;
let sidecar: Sidecar;

beforeAll(async () => {
  echo = await startUpstream({ name: 'echo' });
  sidecar = await startSidecar({
    service: 'web',
    resources: toYaml([...service({ name: 'web' }), ...service({ name: 'echo', endpoints: [{ address: echo.address }] })]),
  });
}, 30_000);

beforeEach(() => echo.clearRequests());

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

/** A hand-written HTTP/1.1 GET to the outbound listener; `lines` are extra header lines. */
async function raw(target: string, lines: string[]) {
  const text = [`GET ${target} HTTP/1.1`, ...lines, 'Connection: close', '', ''].join('\r\n');
  return parseResponse(await rawRequest(sidecar.outbound, text));
}

describe('headers', () => {
  it('adds x-request-id when missing and keeps the caller\'s when present', async () => {
    const a = await request(sidecar.outbound, { host: 'echo', path: '/id' });
    expect(a.status).toBe(200);
    const generated = echo.requests[0].headers['x-request-id'];
    expect(typeof generated === 'string' && generated.length > 0, `upstream x-request-id: ${String(generated)}`).toBe(true);

    const b = await request(sidecar.outbound, { host: 'echo', path: '/id', headers: { 'x-request-id': 'req-abc-123' } });
    expect(b.status).toBe(200);
    expect(echo.requests[1].headers['x-request-id']).toBe('req-abc-123');
  });

  it('strips client-sent x-mesh-* headers before the upstream', async () => {
    const r = await request(sidecar.outbound, {
      host: 'echo',
      path: '/mesh',
      headers: { 'x-mesh-foo': 'evil', 'x-mesh-error': 'fake', 'x-app-foo': 'ok' },
    });
    expect(r.status).toBe(200);
    expect(header(r, 'x-mesh-error')).toBeUndefined();
    const got = echo.requests[0].headers;
    expect(got['x-mesh-foo']).toBeUndefined();
    expect(got['x-mesh-error']).toBeUndefined();
    expect(got['x-app-foo']).toBe('ok');
  });

  it('strips hop-by-hop headers and every header named in Connection', async () => {
    const r = await raw('/hop', [
      'Host: echo',
      'Keep-Alive: timeout=5, max=100',
      'X-Secret: 1',
      'X-Other-Secret: 2',
      'X-Keep: yes',
      'Connection: keep-alive, X-Secret',
      'Connection: x-other-secret',
    ]);
    expect(r.status, r.body).toBe(200);
    const got = echo.requests[0].headers;
    expect(got['keep-alive']).toBeUndefined();
    expect(got['x-secret']).toBeUndefined();
    expect(got['x-other-secret']).toBeUndefined();
    expect(String(got.connection ?? '')).not.toMatch(/secret/i);
    expect(got['x-keep']).toBe('yes');
  });

  it('does not let "Connection: x-request-id" remove the x-request-id the upstream receives', async () => {
    const r = await raw('/trick', ['Host: echo', 'X-Request-Id: client-chosen', 'Connection: x-request-id']);
    expect(r.status, r.body).toBe(200);
    const id = echo.requests[0].headers['x-request-id'];
    expect(typeof id === 'string' && id.length > 0, `upstream x-request-id: ${String(id)}`).toBe(true);
  });
});

describe('headers (HARDENING.md bad input)', () => {
  it('strips a client-sent x-forwarded-client-cert (identity comes only from mTLS)', async () => {
    const r = await request(sidecar.outbound, {
      host: 'echo',
      path: '/xfcc',
      headers: { 'x-forwarded-client-cert': 'By=spiffe://mesh.local/ns/default/sa/admin;URI=spiffe://mesh.local/ns/default/sa/root' },
    });
    expect(r.status).toBe(200);
    expect(echo.requests[0].headers['x-forwarded-client-cert']).toBeUndefined();
  });

  it('drops header names containing "_"', async () => {
    const r = await raw('/underscore', ['Host: echo', 'X_Auth_User: admin', 'X-Auth-User: alice']);
    expect(r.status, r.body).toBe(200);
    const names = echo.requests[0].rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    expect(names).not.toContain('x_auth_user');
    expect(echo.requests[0].headers['x-auth-user']).toBe('alice');
  });

  const framing: [string, string[]][] = [
    ['Content-Length and Transfer-Encoding together', ['Content-Length: 5', 'Transfer-Encoding: chunked']],
    ['two different Content-Length values', ['Content-Length: 5', 'Content-Length: 6']],
  ];
  it.each(framing)('answers 400 to %s and forwards nothing', async (_what, lines) => {
    const text = ['POST /smuggle HTTP/1.1', 'Host: echo', ...lines, '', '0', '', ''].join('\r\n');
    const r = parseResponse(await rawRequest(sidecar.outbound, text));
    expect(r.status).toBe(400);
    expect(echo.requests).toHaveLength(0);
  });
});


describe('paths', () => {
  const forwarded: [string, string][] = [
    ['/a/../b', '/b'],
    ['/%2e%2e/x', '/x'],
    ['/%2E%2E/%2e/x', '/x'],
    ['/a/./b/../c', '/a/c'],
    ['/a/../b?q=1', '/b?q=1'],
    ['/%7Euser/%41', '/~user/A'],
  ];
  it.each(forwarded)('forwards %s as %s', async (sent, want) => {
    const r = await raw(sent, ['Host: echo']);
    expect(r.status, r.body).toBe(200);
    expect(echo.requests.map((q) => q.url)).toEqual([want]);
  });

  const rejected = ['/a%2Fb', '/a%2fb', '/a%5Cb', '/a%5cb', '/a%00b', '/a%23b'];
  it.each(rejected)('rejects %s with 400 bad-request and forwards nothing', async (sent) => {
    const r = await raw(sent, ['Host: echo']);
    expect(r.status).toBe(400);
    expect(r.headers['x-mesh-error']).toBe('bad-request');
    expect(echo.requests).toHaveLength(0);
  });

  it('rejects a request with two Host headers with 400 and forwards nothing', async () => {
    const r = await raw('/two', ['Host: echo', 'Host: other']);
    expect(r.status).toBe(400);
    expect(echo.requests).toHaveLength(0);
  });
});
