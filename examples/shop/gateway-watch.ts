// GET /invoices/watch: one billing WatchInvoices call relayed to the client as NDJSON, one invoice per line, until the
// client goes (the call is cancelled), billing ends the stream, or the gateway shuts down.
import type http from 'node:http';
import { grpc, type BillingClient, type Invoice } from './billing-client.js';
import { fromGrpcError } from './gateway-errors.js';
import { sendJson } from './http-json.js';

export interface ActiveWatch {
  /** Ends the relay for a gateway shutdown: cancels the call, ends the response. */
  stop(): void;
}

/**
 * Relays the stream; resolves when it is over. Rejects (with an HttpError for the router to answer) only if billing
 * fails before the stream is established, so the client sees a real status rather than a 200 with an error line.
 */
export function relayWatch(
  billing: BillingClient,
  accountId: number,
  md: grpc.Metadata,
  res: http.ServerResponse,
  register: (w: ActiveWatch) => () => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const call = billing.WatchInvoices({ account_id: accountId }, md);
    let committed = false;
    let stopping = false;
    // grpc-js ends the readable side even when the status is an error, so 'end' can follow 'error': act on one.
    let over = false;
    const unregister = register({
      stop() {
        stopping = true;
        call.cancel();
      },
    });
    const done = (err?: unknown) => {
      over = true;
      unregister();
      if (err) reject(err);
      else resolve();
    };
    const commit = () => {
      if (committed) return;
      committed = true;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
      // Headers now: a client waiting for its first invoice should know the watch is already live.
      res.flushHeaders();
    };

    call.on('metadata', commit);
    call.on('data', (invoice: Invoice) => {
      commit();
      if (!res.write(`${JSON.stringify(invoice)}\n`)) {
        // The client reads slower than billing sends: stop reading the call; HTTP/2 flow control tells billing.
        call.pause();
        res.once('drain', () => call.resume());
      }
    });
    call.on('end', () => {
      if (over) return;
      commit();
      res.end();
      done();
    });
    call.on('error', (err: grpc.ServiceError) => {
      if (over) return;
      if (res.destroyed || res.writableEnded) return done();
      if (stopping) {
        if (committed) res.end();
        else sendJson(res, 503, { error: 'gateway is shutting down' });
        return done();
      }
      const answer = fromGrpcError(err, 'watching invoices');
      if (!committed) return done(answer);
      // Mid-stream the status is long gone: the last line says why the stream ended.
      res.end(`${JSON.stringify({ error: answer.message, ...answer.extra })}\n`);
      done();
    });
    res.on('close', () => {
      // The client went away (or the response finished): billing stops polling for it.
      if (!res.writableFinished) call.cancel();
    });
  });
}
