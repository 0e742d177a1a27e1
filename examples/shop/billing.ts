// The shop's billing service (gRPC, shop.billing.v1.Billing): invoices in DIR/billing.db, shared by v1 and v2, with
// accounts checked against users through the sidecar. Run as
// `node dist/examples/shop/billing.js --listen HOST:PORT --db DIR --outbound HOST:PORT --version v1|v2`.
import type { Logger } from '../../api/log.js';
import type { HostPort } from '../../cli/args.js';
import { formatHostPort, isMain, runApp, within, type BillingVersion, type RunningApp } from './app-process.js';
import { BillingService, grpc, type AccountRequest, type CreateInvoiceRequest, type Invoice, type ListInvoicesResponse } from './billing-client.js';
import { openBillingStore, type BillingStore } from './billing-store.js';
import { CallFailed, CLIENT_HEADER, createOutboundHttp, errorText, propagatedFrom, type OutboundHttp } from './outbound-http.js';
import { startWatch, type Watch } from './billing-watch.js';

export interface BillingOptions {
  readonly listen: HostPort;
  readonly db: string;
  readonly outbound: HostPort;
  readonly version: BillingVersion;
  readonly log: Logger;
}

export interface RunningBilling extends RunningApp {
  /** Open WatchInvoices calls (tests check that a cancelled client releases its watcher). */
  watchers(): number;
}

export const MAX_WATCHERS = 100;
export const MAX_AMOUNT_CENTS = 1_000_000_000;
export const MAX_DESCRIPTION = 200;
const DRAIN_MS = 5_000;

/** A status to answer with, thrown from a handler. */
class Status extends Error {
  constructor(readonly code: grpc.status, details: string) {
    super(details);
  }
}

function accountId(req: AccountRequest): number {
  const id = req.account_id;
  if (!Number.isSafeInteger(id) || id <= 0) throw new Status(grpc.status.INVALID_ARGUMENT, `account_id must be a positive integer, got ${id}`);
  return id;
}

function checkInvoice(req: CreateInvoiceRequest): void {
  const amount = req.amount_cents;
  if (!Number.isSafeInteger(amount) || amount <= 0 || amount > MAX_AMOUNT_CENTS) {
    throw new Status(grpc.status.INVALID_ARGUMENT, `amount_cents must be between 1 and ${MAX_AMOUNT_CENTS}, got ${amount}`);
  }
  if ([...req.description].length > MAX_DESCRIPTION) {
    throw new Status(grpc.status.INVALID_ARGUMENT, `description must be at most ${MAX_DESCRIPTION} characters`);
  }
}

/** The headers that follow this call to users: trace context, request id and the rate-limit key. */
function forwardedHeaders(md: grpc.Metadata): Record<string, string> {
  const map = md.getMap();
  const out = propagatedFrom(map);
  const client = map[CLIENT_HEADER];
  if (typeof client === 'string') out[CLIENT_HEADER] = client;
  return out;
}

/** Asks users whether the account exists; NOT_FOUND only when users itself says so, not when the mesh does. */
async function checkAccount(users: OutboundHttp, id: number, md: grpc.Metadata): Promise<void> {
  let answer;
  try {
    answer = await users.call('users', { method: 'GET', path: `/users/${id}`, headers: forwardedHeaders(md) });
  } catch (err) {
    if (err instanceof CallFailed) throw new Status(grpc.status.UNAVAILABLE, `account check failed: ${err.message}`);
    throw err;
  }
  if (answer.status === 200) return;
  if (answer.status === 404 && !answer.meshError) throw new Status(grpc.status.NOT_FOUND, `account ${id} does not exist`);
  const why = `users answered ${answer.status}${answer.meshError ? ` (x-mesh-error: ${answer.meshError})` : ''}: ${errorText(answer.body, 'no details')}`;
  if (answer.meshError === 'access-denied') throw new Status(grpc.status.PERMISSION_DENIED, `account check failed: ${why}`);
  if (answer.meshError === 'rate-limited') throw new Status(grpc.status.RESOURCE_EXHAUSTED, `account check failed: ${why}`);
  if (answer.status >= 500 || answer.meshError) throw new Status(grpc.status.UNAVAILABLE, `account check failed: ${why}`);
  throw new Status(grpc.status.INTERNAL, `account check failed: ${why}`);
}

/** Turns anything a handler threw into a status; unexpected errors are logged, SQLite lock waits are retryable. */
function toStatus(err: unknown, log: Logger, method: string): Partial<grpc.StatusObject> {
  if (err instanceof Status) return { code: err.code, details: err.message };
  log.error('handler-failed', { method, error: err });
  if ((err as { code?: unknown })?.code === 'SQLITE_BUSY') return { code: grpc.status.UNAVAILABLE, details: 'billing database busy' };
  return { code: grpc.status.INTERNAL, details: 'internal error' };
}

function handlers(store: BillingStore, users: OutboundHttp, servedBy: string, watches: Set<Watch>, log: Logger): grpc.UntypedServiceImplementation {
  return {
    CreateInvoice(call: grpc.ServerUnaryCall<CreateInvoiceRequest, Invoice>, cb: grpc.sendUnaryData<Invoice>) {
      (async () => {
        const id = accountId(call.request);
        checkInvoice(call.request);
        await checkAccount(users, id, call.metadata);
        return store.create(id, call.request.amount_cents, call.request.description, servedBy);
      })().then((invoice) => cb(null, invoice), (err: unknown) => cb(toStatus(err, log, 'CreateInvoice')));
    },
    ListInvoices(call: grpc.ServerUnaryCall<AccountRequest, ListInvoicesResponse>, cb: grpc.sendUnaryData<ListInvoicesResponse>) {
      try {
        cb(null, { invoices: store.list(accountId(call.request)), served_by: servedBy });
      } catch (err) {
        cb(toStatus(err, log, 'ListInvoices'));
      }
    },
    WatchInvoices(call: grpc.ServerWritableStream<AccountRequest, Invoice>) {
      try {
        const id = accountId(call.request);
        if (watches.size >= MAX_WATCHERS) throw new Status(grpc.status.RESOURCE_EXHAUSTED, `too many watchers (limit ${MAX_WATCHERS})`);
        const watch = startWatch(call, store, id, (err) => {
          watches.delete(watch);
          if (err) call.emit('error', toStatus(err, log, 'WatchInvoices'));
        });
        watches.add(watch);
      } catch (err) {
        call.emit('error', toStatus(err, log, 'WatchInvoices'));
      }
    },
  };
}

export async function start(opts: BillingOptions): Promise<RunningBilling> {
  const servedBy = `billing-${opts.version}`;
  const store = openBillingStore(opts.db);
  const users = createOutboundHttp(opts.outbound);
  const watches = new Set<Watch>();
  const server = new grpc.Server({
    // Pings find dead sidecar connections that TCP alone would keep for minutes.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
  });
  server.addService(BillingService.service, handlers(store, users, servedBy, watches, opts.log));
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(formatHostPort(opts.listen), grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  } catch (err) {
    server.forceShutdown();
    store.close();
    await users.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    address: formatHostPort({ host: opts.listen.host, port }),
    watchers: () => watches.size,
    close: () => {
      closing ??= (async () => {
        // Watch streams never end by themselves; end them with a status a client knows to retry elsewhere.
        for (const w of [...watches]) w.stop({ code: grpc.status.UNAVAILABLE, details: `${servedBy} is shutting down` });
        const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        await within(drained, DRAIN_MS, () => server.forceShutdown());
        await users.close();
        store.close();
      })();
      return closing;
    },
  };
}

if (isMain(import.meta.url)) {
  void runApp('billing', (flags, log) => start({ listen: flags.listen, db: flags.db!, outbound: flags.outbound!, version: flags.version, log }));
}
