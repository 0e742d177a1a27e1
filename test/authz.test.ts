// End-to-end: AccessPolicy on the inbound side of an mTLS pair: allow with wildcards, deny first, default-deny, the path-spelling bypass matrix, and "authorize what you forward".
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { normalizePath } from '../proxy/path.js';
import { denyBypassCandidates } from './harness/bypass.js';
import { header, parseResponse, rawRequest, request, type RawResponse } from './harness/client.js';
import { accessPolicy, issueClientCert, meshService, spiffeOf, tlsProbe } from './harness/mtls.js';
import { sumWhere } from './harness/prom.js';
import { toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type RecordedRequest, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

const ALLOW = 'billing-callers';
const DENY = 'billing-no-admin';

let app: Upstream;
let billing: Sidecar;
/** Allowed GET/POST on /invoices and /invoices/* only. */
let gateway: Sidecar;
/** Allowed everything, so only the deny policy stands between it and /admin. */
let ops: Sidecar;
/** Named by no rule: default-deny. */
let reports: Sidecar;

beforeAll(async () => {
  app = await startUpstream({ name: 'billing-app' });
  billing = await startSidecar({
    service: 'billing',
    app: app.address,
    resources: toYaml([
      ...meshService({ name: 'billing' }),
      accessPolicy(ALLOW, 'billing', 'allow', [
        { from: ['gateway'], to: [{ methods: ['GET', 'POST'], paths: ['/invoices', '/invoices/*'] }] },
        { from: ['ops'] },
      ]),
      accessPolicy(DENY, 'billing', 'deny', [{ from: ['*'], to: [{ paths: ['/admin', '/admin/*'] }] }]),
    ]),
  });
  const client = (service: string): Promise<Sidecar> =>
    startSidecar({ service, resources: toYaml([...meshService({ name: service }), ...meshService({ name: 'billing', endpoints: [billing.inbound] })]) });
  [gateway, ops, reports] = await Promise.all(['gateway', 'ops', 'reports'].map(client));
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

const denied = async (policy: string): Promise<number> =>
  sumWhere(await billing.samples('mesh_access_denied_total'), { destination_service: 'billing', policy });

async function call(from: Sidecar, method: string, path: string): Promise<{ status: number; error: string | undefined }> {
  const r = await request(from.outbound, { host: 'billing', method, path, body: method === 'POST' ? '{}' : undefined });
  return { status: r.status, error: header(r, 'x-mesh-error') };
}

describe('allow, deny, default-deny', () => {
  it('allow: gateway may GET/POST /invoices and /invoices/*, nothing else', async () => {
    app.clearRequests();
    const allowed: [string, string][] = [
      ['GET', '/invoices'],
      ['GET', '/invoices/42'],
      ['POST', '/invoices/42/pay'],
      ['GET', '/invoices/'],
    ];
    for (const [m, p] of allowed) expect(await call(gateway, m, p), `${m} ${p}`).toEqual({ status: 200, error: undefined });
    expect(app.requests.map((r) => `${r.method} ${r.url}`)).toEqual(allowed.map(([m, p]) => `${m} ${p}`));
    for (const r of app.requests) expect(r.headers['x-forwarded-client-cert']).toBe(`By=${spiffeOf('billing')};URI=${spiffeOf('gateway')}`);

    const before = await denied(ALLOW);
    const refused: [string, string][] = [
      ['DELETE', '/invoices/42'],
      ['PUT', '/invoices'],
      ['GET', '/invoicesx'],
      ['GET', '/Invoices/42'],
      ['GET', '/users/1'],
      ['GET', '/'],
    ];
    app.clearRequests();
    for (const [m, p] of refused) expect(await call(gateway, m, p), `${m} ${p}`).toEqual({ status: 403, error: 'access-denied' });
    expect(app.requests).toHaveLength(0);
    await waitFor(async () => (await denied(ALLOW)) === before + refused.length, { what: `mesh_access_denied_total{policy="${ALLOW}"} += ${refused.length}` });
  }, 20_000);

  it('deny is checked first: /admin and /admin/* are refused even to a caller allowed everything', async () => {
    app.clearRequests();
    expect(await call(ops, 'GET', '/anything/at/all')).toEqual({ status: 200, error: undefined });
    expect(await call(ops, 'DELETE', '/invoices/1')).toEqual({ status: 200, error: undefined });
    expect(app.requests).toHaveLength(2);

    const beforeDeny = await denied(DENY);
    const beforeAllow = await denied(ALLOW);
    app.clearRequests();
    const targets: [Sidecar, string, string][] = [
      [ops, 'GET', '/admin'],
      [ops, 'GET', '/admin/panel'],
      [ops, 'POST', '/admin/users/1'],
      [gateway, 'GET', '/admin/panel'],
    ];
    for (const [from, m, p] of targets) expect(await call(from, m, p), `${m} ${p}`).toEqual({ status: 403, error: 'access-denied' });
    expect(app.requests).toHaveLength(0);
    await waitFor(async () => (await denied(DENY)) === beforeDeny + targets.length, { what: `mesh_access_denied_total{policy="${DENY}"} += ${targets.length}` });
    // Counted under the deny policy, not under the allow policy's default-deny.
    expect(await denied(ALLOW)).toBe(beforeAllow);
  }, 20_000);

  it('default-deny: a caller no rule names gets 403 access-denied, counted under the allow policy', async () => {
    app.clearRequests();
    const before = await denied(ALLOW);
    for (const p of ['/invoices', '/invoices/1', '/']) expect(await call(reports, 'GET', p), p).toEqual({ status: 403, error: 'access-denied' });
    expect(app.requests).toHaveLength(0);
    await waitFor(async () => (await denied(ALLOW)) === before + 3, { what: `mesh_access_denied_total{policy="${ALLOW}"} += 3` });
  }, 20_000);
});

/**
 * What a lenient backend could make of a path: every segment percent-decoded, decoded `\` and `/` treated as
 * separators, `;params` stripped, lower-cased, empty and dot segments resolved. Undecodable segments are decoded
 * byte-wise (latin1), so overlong UTF-8 still shows its ASCII bytes.
 */
function strictDecode(url: string): string {
  const q = url.search(/[?#]/);
  const raw = q < 0 ? url : url.slice(0, q);
  const decodeSeg = (s: string): string => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    }
  };
  const decoded = raw.split('/').map(decodeSeg).join('/').replace(/\\/g, '/');
  const out: string[] = [];
  for (const seg of decoded.split('/')) {
    const s = seg.split(';')[0].toLowerCase().replace(/\0/g, '');
    if (s === '' || s === '.') continue;
    if (s === '..') out.pop();
    else out.push(s);
  }
  return `/${out.join('/')}`;
}

const reachesAdmin = (url: string): boolean => {
  const p = strictDecode(url);
  return p === '/admin' || p.startsWith('/admin/');
};

describe('deny bypass matrix (target /admin/panel)', () => {
  const candidates = denyBypassCandidates();

  it('has enough spellings to mean something, and the decoder recognises them', () => {
    expect(candidates.length).toBeGreaterThanOrEqual(80);
    // Only spellings that need a broken decoder (NUL, encoded separators, overlong UTF-8) are invisible to the strict one.
    expect(candidates.filter((c) => !reachesAdmin(c)).filter((c) => !/%00|%2f|%5c|%23|#|%c0|%c1|%e0/i.test(c))).toEqual([]);
    expect(candidates.filter(reachesAdmin).length).toBeGreaterThanOrEqual(60);
  });

  async function runMatrix(send: (raw: string) => Promise<RawResponse | undefined>): Promise<void> {
    app.clearRequests();
    const deniedBefore = await denied(DENY);
    let forbidden = 0;
    const answers: string[] = [];
    const wrong: string[] = [];
    for (const raw of candidates) {
      const r = await send(raw);
      const code = r ? `${r.status} ${r.headers['x-mesh-error'] ?? ''}`.trim() : 'no answer';
      answers.push(`${raw} → ${code}`);
      if (r?.status === 403) forbidden++;
      if (!r || !((r.status === 400 && r.headers['x-mesh-error'] === 'bad-request') || (r.status === 403 && r.headers['x-mesh-error'] === 'access-denied'))) {
        wrong.push(`${raw} → ${code}`);
      }
    }
    const bypasses = app.requests.filter((r: RecordedRequest) => reachesAdmin(r.url)).map((r) => r.url);
    expect(bypasses, `bypasses (app received):\n${bypasses.join('\n')}`).toEqual([]);
    expect(wrong, `answers other than 400 bad-request / 403 access-denied:\n${wrong.join('\n')}`).toEqual([]);
    // Every candidate is a spelling of /admin/…: none may reach the app at all.
    expect(app.requests.map((r) => r.url)).toEqual([]);
    // Every 403 is the deny policy's decision on the server, not some other refusal.
    await waitFor(async () => (await denied(DENY)) === deniedBefore + forbidden, {
      what: `mesh_access_denied_total{policy="${DENY}"} += ${forbidden} (answers:\n${answers.join('\n')})`,
    });
    expect(forbidden).toBeGreaterThan(0);
  }

  it('through the client sidecar (raw socket to the outbound port): 0 bypasses, every answer 400 or 403', async () => {
    await runMatrix(async (raw) => {
      const text = await rawRequest(ops.outbound, `GET ${raw} HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n`, 5_000).catch(() => '');
      return text ? parseResponse(text) : undefined;
    });
  }, 60_000);

  it('straight to the server inbound port with a valid ops certificate (no client-side normalization): 0 bypasses', async () => {
    const cert = await issueClientCert('ops');
    await runMatrix(async (raw) => {
      const p = await tlsProbe(billing.inbound, { cert, text: `GET ${raw} HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n` });
      return p.response;
    });
  }, 60_000);
});

describe('the path authorized is the path forwarded', () => {
  const allowed = [
    '/invoices/1',
    '/invoices/./2',
    '/invoices//3',
    '/invoices/x/../4',
    '/x/../invoices/5',
    '/invoices/%36',
    '/invoices/%7euser',
    '/invoices/a%20b',
    '/invoices/%E2%82%AC',
    '/invoices/%e2%82%ac',
    '/invoices/a;b=c',
    '/invoices/%2e/8',
    '/invoices/9?x=1&y=%2F&z=..',
    '/./invoices/10/.',
  ];

  it('every allowed spelling reaches the app as exactly normalizePath(raw)', async () => {
    const mismatched: string[] = [];
    for (const raw of allowed) {
      const n = normalizePath(raw);
      expect(n.ok, raw).toBe(true);
      if (!n.ok) continue;
      app.clearRequests();
      const text = await rawRequest(gateway.outbound, `GET ${raw} HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n`, 5_000);
      const r = parseResponse(text);
      expect(r.status, `${raw}: ${text.slice(0, 300)}`).toBe(200);
      expect(app.requests, raw).toHaveLength(1);
      const got = app.requests[0].url;
      if (got !== n.path + n.query) mismatched.push(`${raw}: authorized ${n.path + n.query}, app received ${got}`);
      // What the app received is itself in normal form and still inside the allowed prefix.
      const again = normalizePath(got);
      expect(again.ok && again.path + again.query, raw).toBe(got);
      expect(got.startsWith('/invoices/'), raw).toBe(true);
    }
    expect(mismatched).toEqual([]);
  }, 30_000);
});
