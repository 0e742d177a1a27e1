// The gateway with real users and billing behind a fake sidecar (HTTP/1.1 → users, h2c → billing): auth, the combined
// /me, invoices, the NDJSON watch, the rate-limit key and trace headers, and relaying mesh errors over HTTP and gRPC.
import path from 'node:path';
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApp } from './app-process.js';
import { BillingService, grpc } from './billing-client.js';
import { start as startBilling, type RunningBilling } from './billing.js';
import { start as startGateway } from './gateway.js';
import { start as startUsers } from './users.js';
import { ANY_PORT, call, forwardTo, hostPort, memoryLog, startFakeSidecar, tempDir, waitFor, type FakeSidecar } from './test-support.js';

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('gateway', () => {
  const tmp = tempDir();
  let users: RunningApp;
  let billing: RunningBilling;
  let gateway: RunningApp;
  let sidecar: FakeSidecar;
  /** When set, the fake sidecar answers users calls itself, as the mesh would when it refuses one. */
  let refuse: ((req: http.IncomingMessage, res: http.ServerResponse) => boolean) | undefined;
  let gw: string;

  const signupLogin = async (name: string): Promise<{ id: number; auth: Record<string, string> }> => {
    const s = await call(gw, 'POST', '/signup', { body: { name, password: 'password-1' } });
    expect(s.status).toBe(201);
    const l = await call(gw, 'POST', '/login', { body: { name, password: 'password-1' } });
    expect(l.status).toBe(200);
    return { id: (s.body as { id: number }).id, auth: { authorization: `Bearer ${(l.body as { token: string }).token}` } };
  };

  beforeAll(async () => {
    users = await startUsers({ listen: ANY_PORT, db: path.join(tmp.dir, 'users'), log: memoryLog() });
    const toUsers = forwardTo(users.address);
    sidecar = await startFakeSidecar((req, res) => {
      if (req.headers.host !== 'users') res.writeHead(421).end();
      else if (!refuse?.(req, res)) toUsers(req, res);
    });
    billing = await startBilling({ listen: ANY_PORT, db: path.join(tmp.dir, 'billing'), outbound: hostPort(sidecar.address), version: 'v1', log: memoryLog() });
    sidecar.h2Target = billing.address;
    gateway = await startGateway({ listen: ANY_PORT, outbound: hostPort(sidecar.address), log: memoryLog() });
    gw = gateway.address;
  });
  afterAll(async () => {
    await gateway?.close();
    await billing?.close();
    await sidecar?.close();
    await users?.close();
    tmp.remove();
  });

  it('answers /healthz without calling anyone', async () => {
    const before = sidecar.requests.length;
    expect(await call(gw, 'GET', '/healthz')).toMatchObject({ status: 200, body: { ok: true } });
    expect(sidecar.requests.length).toBe(before);
  });

  it('relays /signup and /login, keyed by the caller address whatever x-shop-client it sent', async () => {
    const s = await call(gw, 'POST', '/signup', { body: { name: 'gina', password: 'password-1' }, headers: { 'x-shop-client': 'spoofed' } });
    expect(s).toMatchObject({ status: 201, body: { name: 'gina' } });
    expect(sidecar.requests.at(-1)!.headers['x-shop-client']).toMatch(/^ip:(::ffff:)?127\.0\.0\.1$/);
    expect((await call(gw, 'POST', '/signup', { body: { name: 'gina', password: 'password-1' } })).status).toBe(409);
    expect((await call(gw, 'POST', '/login', { body: { name: 'gina', password: 'wrong-pass' } })).status).toBe(401);
    expect((await call(gw, 'POST', '/login', { body: { name: 'gina', password: 'password-1' } })).status).toBe(200);
  });

  it('requires a valid bearer token everywhere else', async () => {
    for (const headers of [{}, { authorization: 'Bearer not-a-session' }, { authorization: 'Basic abc' }] as Record<string, string>[]) {
      for (const [method, p] of [['GET', '/me'], ['GET', '/invoices'], ['POST', '/invoices'], ['GET', '/invoices/watch']]) {
        const r = await call(gw, method, p, { headers, body: method === 'POST' ? { amount_cents: 1 } : undefined });
        expect(r.status, `${method} ${p} ${JSON.stringify(headers)}`).toBe(401);
      }
    }
  });

  it('creates and lists invoices, and combines users and billing in /me', async () => {
    const { id, auth } = await signupLogin('hank');
    const headers = { ...auth, traceparent: TRACEPARENT, 'x-shop-client': 'spoofed' };
    const created = await call(gw, 'POST', '/invoices', { headers, body: { amount_cents: 4200, description: 'tea' } });
    expect(created).toMatchObject({ status: 201, body: { account_id: id, amount_cents: 4200, description: 'tea', served_by: 'billing-v1' } });
    // billing's own account check carried the caller's key and the trace on to users.
    const check = sidecar.requests.filter((r) => r.url === `/users/${id}`).at(-1)!;
    expect(check.headers).toMatchObject({ 'x-shop-client': String(id), traceparent: TRACEPARENT });

    const listed = await call(gw, 'GET', '/invoices', { headers: auth });
    expect(listed).toMatchObject({ status: 200, body: { served_by: 'billing-v1', invoices: [created.body] } });

    const me = await call(gw, 'GET', '/me', { headers: { ...auth, traceparent: TRACEPARENT } });
    expect(me.status).toBe(200);
    expect(me.body).toEqual({
      user: { id, name: 'hank', created_at: expect.any(String) }, invoices: [created.body], billing: { served_by: 'billing-v1' },
    });
    const session = sidecar.requests.filter((r) => r.url === '/session').at(-1)!;
    expect(session.headers).toMatchObject({ traceparent: TRACEPARENT });
    expect(sidecar.requests.at(-1)!.headers['x-shop-client']).toBe(String(id));
  });

  it('maps billing statuses: a bad amount is 400', async () => {
    const { auth } = await signupLogin('ivan');
    const zero = await call(gw, 'POST', '/invoices', { headers: auth, body: { amount_cents: 0 } });
    expect(zero).toMatchObject({ status: 400, body: { error: expect.stringMatching(/amount_cents/), grpc_status: 'INVALID_ARGUMENT' } });
    expect((await call(gw, 'POST', '/invoices', { headers: auth, body: { amount_cents: '12' } })).status).toBe(400);
    expect((await call(gw, 'POST', '/invoices', { headers: auth, raw: '{"amount_cents": 1' })).status).toBe(400);
    expect((await call(gw, 'POST', '/invoices', { headers: auth, raw: JSON.stringify({ amount_cents: 1, description: 'd'.repeat(70_000) }) })).status).toBe(413);
  });

  it('streams invoices as NDJSON and cancels the billing watch when the client leaves', async () => {
    const { auth } = await signupLogin('judy');
    const first = (await call(gw, 'POST', '/invoices', { headers: auth, body: { amount_cents: 1, description: 'one' } })).body;
    const ac = new AbortController();
    const res = await fetch(`http://${gw}/invoices/watch`, { headers: auth, signal: ac.signal });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = '';
    const lines = () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown);
    const pump = (async () => {
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done) return;
        text += value;
      }
    })();
    await waitFor(() => lines().length === 1, 'the existing invoice');
    const second = (await call(gw, 'POST', '/invoices', { headers: auth, body: { amount_cents: 2, description: 'two' } })).body;
    await waitFor(() => lines().length === 2, 'the new invoice');
    expect(lines()).toEqual([first, second]);
    expect(billing.watchers()).toBe(1);
    ac.abort();
    await pump;
    await waitFor(() => billing.watchers() === 0, 'billing to drop the watch');
  });

  it('relays a mesh refusal of a users call with its status and x-mesh-error', async () => {
    const { auth } = await signupLogin('kate');
    refuse = (req, res) => {
      if (req.url !== '/session') return false;
      res.writeHead(403, { 'x-mesh-error': 'access-denied', 'content-type': 'text/plain' }).end('access denied: gateway may not call users\n');
      return true;
    };
    try {
      const r = await call(gw, 'GET', '/me', { headers: auth });
      expect(r.status).toBe(403);
      expect(r.headers.get('x-mesh-error')).toBe('access-denied');
      expect(r.body).toEqual({ error: 'checking the session: access denied: gateway may not call users', mesh_error: 'access-denied' });
    } finally {
      refuse = undefined;
    }
    refuse = (req, res) => {
      res.writeHead(429, { 'x-mesh-error': 'rate-limited' }).end();
      return true;
    };
    try {
      const r = await call(gw, 'POST', '/login', { body: { name: 'kate', password: 'password-1' } });
      expect(r).toMatchObject({ status: 429, body: { mesh_error: 'rate-limited' } });
      expect(r.headers.get('x-mesh-error')).toBe('rate-limited');
    } finally {
      refuse = undefined;
    }
  });

  it('relays a mesh refusal of a billing call (x-mesh-error in the gRPC trailers)', async () => {
    // A stand-in for a sidecar refusing gRPC calls: Trailers-Only RESOURCE_EXHAUSTED with x-mesh-error, as respond.ts does.
    const fake = new grpc.Server();
    const refuseCall = (_call: unknown, cb: grpc.sendUnaryData<never>) => {
      const md = new grpc.Metadata();
      md.set('x-mesh-error', 'rate-limited');
      cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'rate limit exceeded for "billing"', metadata: md });
    };
    fake.addService(BillingService.service, { CreateInvoice: refuseCall, ListInvoices: refuseCall, WatchInvoices: () => {} });
    const port = await new Promise<number>((resolve, reject) =>
      fake.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    const side = await startFakeSidecar(forwardTo(users.address), `127.0.0.1:${port}`);
    const g = await startGateway({ listen: ANY_PORT, outbound: hostPort(side.address), log: memoryLog() });
    try {
      const { auth } = await signupLogin('liam');
      const r = await call(g.address, 'GET', '/invoices', { headers: auth });
      expect(r.status).toBe(429);
      expect(r.headers.get('x-mesh-error')).toBe('rate-limited');
      expect(r.body).toEqual({ error: 'listing invoices: rate limit exceeded for "billing"', mesh_error: 'rate-limited' });
    } finally {
      await g.close();
      await side.close();
      fake.forceShutdown();
    }
  });

  it('answers 503 when its sidecar cannot be reached', async () => {
    const gone = await startFakeSidecar(() => {});
    await gone.close();
    const g = await startGateway({ listen: ANY_PORT, outbound: hostPort(gone.address), log: memoryLog() });
    try {
      const r = await call(g.address, 'GET', '/me', { headers: { authorization: 'Bearer abc' } });
      expect(r).toMatchObject({ status: 503, body: { error: expect.stringMatching(/^users unreachable/) } });
      expect(r.headers.get('x-mesh-error')).toBeNull();
    } finally {
      await g.close();
    }
  });
});
