// The billing app against a fake users service standing in for the sidecar: account checks and their failures,
// listing, and a watch that sees an invoice made by a second billing process (spawned from dist/) on the same database.
import path from 'node:path';
import type http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBillingClient, grpc, unary, type BillingClient, type Invoice, type ListInvoicesResponse } from './billing-client.js';
import { start, type RunningBilling } from './billing.js';
import { ANY_PORT, hostPort, kill, memoryLog, spawnApp, startFakeSidecar, tempDir, waitFor, type FakeSidecar, type SpawnedApp } from './test-support.js';

/** Accounts 1..3 exist; 7 makes the "mesh" answer 503 no-healthy-upstream. Calls must be addressed to users. */
const fakeUsers: http.RequestListener = (req, res) => {
  if (req.headers.host !== 'users') {
    res.writeHead(421).end();
    return;
  }
  const id = /^\/users\/(\d+)$/.exec(req.url ?? '')?.[1];
  if (id === '7') {
    res.writeHead(503, { 'x-mesh-error': 'no-healthy-upstream', 'content-type': 'text/plain' }).end('no healthy endpoint for "users"\n');
  } else if (id && Number(id) <= 3) {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: Number(id), name: `u${id}`, created_at: '' }));
  } else {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"no such user"}');
  }
};

describe('billing', () => {
  const tmp = tempDir();
  const dbDir = path.join(tmp.dir, 'billing-db');
  let sidecar: FakeSidecar;
  let billing: RunningBilling;
  let client: BillingClient;
  let second: SpawnedApp | undefined;

  const create = (account_id: number, amount_cents: number, description = '', md = new grpc.Metadata()) =>
    unary<Invoice>((cb) => client.CreateInvoice({ account_id, amount_cents, description }, md, {}, cb));
  const list = (account_id: number) => unary<ListInvoicesResponse>((cb) => client.ListInvoices({ account_id }, new grpc.Metadata(), {}, cb));
  const failure = (p: Promise<unknown>) => p.then(() => { throw new Error('expected a gRPC error'); }, (err: grpc.ServiceError) => err);

  beforeAll(async () => {
    sidecar = await startFakeSidecar(fakeUsers);
    billing = await start({ listen: ANY_PORT, db: dbDir, outbound: hostPort(sidecar.address), version: 'v1', log: memoryLog() });
    client = createBillingClient(billing.address);
  });
  afterAll(async () => {
    kill(second);
    client?.close();
    await billing?.close();
    await sidecar?.close();
    tmp.remove();
  });

  it('creates an invoice after checking the account with users through the outbound port', async () => {
    const md = new grpc.Metadata();
    md.set('x-shop-client', '1');
    md.set('traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
    const inv = await create(1, 1250, 'coffee', md);
    expect(inv).toEqual({
      id: expect.any(Number), account_id: 1, amount_cents: 1250, description: 'coffee',
      created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/), served_by: 'billing-v1',
    });
    const seen = sidecar.requests.at(-1)!;
    expect(seen.url).toBe('/users/1');
    expect(seen.headers).toMatchObject({ host: 'users', 'x-shop-client': '1', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' });
  });

  it('maps bad input and account problems to gRPC statuses', async () => {
    const cases: [Promise<unknown>, grpc.status, RegExp][] = [
      [create(1, 0), grpc.status.INVALID_ARGUMENT, /amount_cents/],
      [create(1, 1_000_000_001), grpc.status.INVALID_ARGUMENT, /amount_cents/],
      [create(1, 5, 'x'.repeat(201)), grpc.status.INVALID_ARGUMENT, /description/],
      [create(0, 5), grpc.status.INVALID_ARGUMENT, /account_id/],
      [create(42, 5), grpc.status.NOT_FOUND, /account 42 does not exist/],
      [create(7, 5), grpc.status.UNAVAILABLE, /users answered 503 \(x-mesh-error: no-healthy-upstream\)/],
    ];
    for (const [p, code, details] of cases) {
      const err = await failure(p);
      expect(err.code, err.details).toBe(code);
      expect(err.details).toMatch(details);
    }
    expect(await create(1, 1_000_000_000, 'y'.repeat(200))).toMatchObject({ amount_cents: 1_000_000_000 });
  });

  it('answers UNAVAILABLE when users cannot be reached', async () => {
    const closed = await startFakeSidecar(fakeUsers);
    await closed.close();
    const lonely = await start({ listen: ANY_PORT, db: dbDir, outbound: hostPort(closed.address), version: 'v2', log: memoryLog() });
    const c = createBillingClient(lonely.address);
    try {
      const err = await failure(unary<Invoice>((cb) => c.CreateInvoice({ account_id: 1, amount_cents: 5, description: '' }, new grpc.Metadata(), {}, cb)));
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toMatch(/users unreachable/);
    } finally {
      c.close();
      await lonely.close();
    }
  });

  it('lists newest first, at most 100, with who served the list', async () => {
    for (let i = 1; i <= 105; i++) await create(2, i, `n${i}`);
    const r = await list(2);
    expect(r.served_by).toBe('billing-v1');
    expect(r.invoices).toHaveLength(100);
    expect(r.invoices[0].amount_cents).toBe(105);
    expect(r.invoices[99].amount_cents).toBe(6);
    expect((await list(3)).invoices).toEqual([]);
  });

  it('watch: existing invoices oldest first, then one created by a second billing process on the same database', async () => {
    const first = await create(3, 100, 'before');
    const got: Invoice[] = [];
    const stream = client.WatchInvoices({ account_id: 3 });
    stream.on('data', (inv: Invoice) => got.push(inv));
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    await waitFor(() => got.length === 1, 'the existing invoice');
    expect(got[0]).toEqual(first);
    expect(billing.watchers()).toBe(1);

    second = await spawnApp('billing', ['--listen', '127.0.0.1:0', '--db', dbDir, '--outbound', sidecar.address, '--version', 'v2']);
    const c2 = createBillingClient(second.address);
    try {
      const made = await unary<Invoice>((cb) => c2.CreateInvoice({ account_id: 3, amount_cents: 200, description: 'from v2' }, new grpc.Metadata(), {}, cb));
      expect(made.served_by).toBe('billing-v2');
      await waitFor(() => got.length === 2, 'the invoice billing-v2 created');
      expect(got[1]).toEqual(made);
      expect(got[1].id).toBeGreaterThan(got[0].id);
    } finally {
      c2.close();
    }

    stream.cancel();
    expect((await ended).code).toBe(grpc.status.CANCELLED);
    await waitFor(() => billing.watchers() === 0, 'the watcher to be released');

    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });

  it('bounds concurrent watchers with RESOURCE_EXHAUSTED', async () => {
    const streams = Array.from({ length: 100 }, () => client.WatchInvoices({ account_id: 1 }));
    for (const s of streams) s.on('error', () => {});
    try {
      await waitFor(() => billing.watchers() === 100, '100 watchers');
      const extra = client.WatchInvoices({ account_id: 1 });
      const err = await new Promise<grpc.ServiceError>((resolve) => extra.on('error', resolve));
      expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    } finally {
      for (const s of streams) s.cancel();
    }
    await waitFor(() => billing.watchers() === 0, 'the watchers to be released');
  });

  it('ends open watches with UNAVAILABLE when it shuts down', async () => {
    const b = await start({ listen: ANY_PORT, db: dbDir, outbound: hostPort(sidecar.address), version: 'v2', log: memoryLog() });
    const c = createBillingClient(b.address);
    const stream = c.WatchInvoices({ account_id: 1 });
    stream.on('data', () => {});
    const ended = new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    await waitFor(() => b.watchers() === 1, 'the watch');
    const t0 = Date.now();
    await b.close();
    expect(Date.now() - t0).toBeLessThan(2_000);
    const err = await ended;
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toBe('billing-v2 is shutting down');
    c.close();
  });
});
