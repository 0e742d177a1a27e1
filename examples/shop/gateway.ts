// The shop's public HTTP edge: authenticates callers with users, combines users and billing into one JSON API, and
// sends every downstream call through its sidecar (--outbound), keyed for the mesh's per-client rate limit.
// Run as `node dist/examples/shop/gateway.js --listen HOST:PORT --outbound HOST:PORT`.
import type http from 'node:http';
import type { Logger } from '../../api/log.js';
import type { HostPort } from '../../cli/args.js';
import { formatHostPort, isMain, runApp, type RunningApp } from './app-process.js';
import {
  createBillingClient, grpc, isServiceError, unary, type BillingClient, type Callback, type Invoice, type ListInvoicesResponse,
} from './billing-client.js';
import { fromCallFailed, fromGrpcError, fromUsersAnswer } from './gateway-errors.js';
import { relayWatch, type ActiveWatch } from './gateway-watch.js';
import { createRouter, HttpError, listenJson, readJsonObject, sendJson, type Route } from './http-json.js';
import {
  CALL_DEADLINE_MS, CallFailed, CLIENT_HEADER, createOutboundHttp, propagatedFrom, type Answer, type CallOptions, type OutboundHttp,
} from './outbound-http.js';

export interface GatewayOptions {
  readonly listen: HostPort;
  readonly outbound: HostPort;
  readonly log: Logger;
}

interface Caller {
  readonly id: number;
  readonly name: string;
}

/** What one incoming request passes on to every call it makes. */
interface Downstream {
  /** Trace context and request id from the incoming request. */
  readonly propagated: Record<string, string>;
  /** The rate-limit key: the caller's user id once known, its address before. */
  client: string;
}

function downstreamOf(req: http.IncomingMessage): Downstream {
  // Whatever x-shop-client the outside caller sent is ignored: the key is ours to set, or limits could be dodged.
  return { propagated: propagatedFrom(req.headers), client: `ip:${req.socket.remoteAddress ?? 'unknown'}` };
}

function createGateway(users: OutboundHttp, billing: BillingClient, watches: Set<ActiveWatch>): Route[] {
  const callUsers = async (d: Downstream, opts: CallOptions): Promise<Answer> => {
    try {
      return await users.call('users', { ...opts, headers: { ...opts.headers, ...d.propagated, [CLIENT_HEADER]: d.client } });
    } catch (err) {
      throw err instanceof CallFailed ? fromCallFailed(err) : err;
    }
  };
  const metadata = (d: Downstream): grpc.Metadata => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(d.propagated)) md.set(k, v);
    md.set(CLIENT_HEADER, d.client);
    return md;
  };
  const callBilling = async <Res>(
    d: Downstream, what: string, start: (md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<Res>) => unknown,
  ): Promise<Res> => {
    try {
      return await unary<Res>((cb) => start(metadata(d), { deadline: Date.now() + CALL_DEADLINE_MS }, cb));
    } catch (err) {
      throw isServiceError(err) ? fromGrpcError(err, what) : err;
    }
  };

  /** The caller behind the bearer token, as users' /session says; 401 without one or with a bad one. */
  const authenticate = async (req: http.IncomingMessage, d: Downstream): Promise<Caller> => {
    const authorization = req.headers.authorization;
    if (!authorization || !/^Bearer \S+$/.test(authorization)) {
      throw new HttpError(401, 'missing bearer token', { 'www-authenticate': 'Bearer' });
    }
    const answer = await callUsers(d, { method: 'GET', path: '/session', headers: { authorization } });
    if (answer.status === 401 && !answer.meshError) throw new HttpError(401, 'invalid or expired session token', { 'www-authenticate': 'Bearer' });
    if (answer.status !== 200 || answer.meshError) throw fromUsersAnswer(answer, 'checking the session');
    const body = answer.body as Partial<Caller> | undefined;
    if (typeof body?.id !== 'number' || typeof body.name !== 'string') throw new HttpError(502, 'checking the session: malformed answer from users');
    d.client = String(body.id);
    return { id: body.id, name: body.name };
  };

  /** /signup and /login: the body goes to users as JSON, the answer comes back as it is (unless the mesh refused). */
  const relayToUsers = (path: string): Route['handle'] => async ({ req, res }) => {
    const d = downstreamOf(req);
    const body = await readJsonObject(req);
    const answer = await callUsers(d, { method: 'POST', path, json: body });
    if (answer.meshError) throw fromUsersAnswer(answer, path.slice(1));
    sendJson(res, answer.status, typeof answer.body === 'object' && answer.body !== null ? answer.body : { error: String(answer.body) });
  };

  return [
    { method: 'GET', path: /^\/healthz$/, handle: ({ res }) => sendJson(res, 200, { ok: true }) },
    { method: 'POST', path: /^\/signup$/, handle: relayToUsers('/signup') },
    { method: 'POST', path: /^\/login$/, handle: relayToUsers('/login') },
    {
      method: 'GET', path: /^\/me$/,
      async handle({ req, res }) {
        const d = downstreamOf(req);
        const caller = await authenticate(req, d);
        // The profile and the invoices do not depend on each other: one round trip, two services.
        const [profile, list] = await Promise.all([
          callUsers(d, { method: 'GET', path: `/users/${caller.id}` }),
          callBilling<ListInvoicesResponse>(d, 'listing invoices', (md, o, cb) => billing.ListInvoices({ account_id: caller.id }, md, o, cb)),
        ]);
        if (profile.status !== 200 || profile.meshError) throw fromUsersAnswer(profile, 'reading the profile');
        sendJson(res, 200, { user: { ...caller, ...(profile.body as object) }, invoices: list.invoices, billing: { served_by: list.served_by } });
      },
    },
    {
      method: 'POST', path: /^\/invoices$/,
      async handle({ req, res }) {
        const d = downstreamOf(req);
        const caller = await authenticate(req, d);
        const body = await readJsonObject(req);
        const amount = body.amount_cents;
        const description = body.description ?? '';
        if (typeof amount !== 'number' || !Number.isSafeInteger(amount)) throw new HttpError(400, '"amount_cents" must be an integer');
        if (typeof description !== 'string') throw new HttpError(400, '"description" must be a string');
        const invoice = await callBilling<Invoice>(d, 'creating the invoice', (md, o, cb) =>
          billing.CreateInvoice({ account_id: caller.id, amount_cents: amount, description }, md, o, cb));
        sendJson(res, 201, invoice);
      },
    },
    {
      method: 'GET', path: /^\/invoices$/,
      async handle({ req, res }) {
        const d = downstreamOf(req);
        const caller = await authenticate(req, d);
        const list = await callBilling<ListInvoicesResponse>(d, 'listing invoices', (md, o, cb) => billing.ListInvoices({ account_id: caller.id }, md, o, cb));
        sendJson(res, 200, list);
      },
    },
    {
      method: 'GET', path: /^\/invoices\/watch$/,
      async handle({ req, res }) {
        const d = downstreamOf(req);
        const caller = await authenticate(req, d);
        await relayWatch(billing, caller.id, metadata(d), res, (w) => {
          watches.add(w);
          return () => watches.delete(w);
        });
      },
    },
  ];
}

export async function start(opts: GatewayOptions): Promise<RunningApp> {
  const outbound = formatHostPort(opts.outbound);
  const users = createOutboundHttp(opts.outbound);
  const billing = createBillingClient(outbound, 'billing');
  const watches = new Set<ActiveWatch>();
  const release = async () => {
    billing.close();
    await users.close();
  };
  let http;
  try {
    http = await listenJson(opts.listen, createRouter(createGateway(users, billing, watches), opts.log));
  } catch (err) {
    await release();
    throw err;
  }
  const server = http;
  let closing: Promise<void> | undefined;
  return {
    address: server.address,
    close: () => {
      // Watch streams would hold the drain open for its whole bound: end them first.
      closing ??= (async () => {
        const draining = server.close();
        for (const w of [...watches]) w.stop();
        await draining;
        await release();
      })();
      return closing;
    },
  };
}

if (isMain(import.meta.url)) {
  void runApp('gateway', (flags, log) => start({ listen: flags.listen, outbound: flags.outbound!, log }));
}
