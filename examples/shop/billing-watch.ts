// One WatchInvoices call: sends the account's invoices oldest first, then polls billing.db for newer ones. Polling
// rather than an in-process event, because the other billing process writes to the same database file.
import type { BillingStore } from './billing-store.js';
import { grpc, type AccountRequest, type Invoice } from './billing-client.js';

export const POLL_MS = 250;
/** Rows per read; a long history goes out in pages without holding the event loop. */
const PAGE = 100;

export interface Watch {
  /** Stops polling and ends the call: with `status` (an error status), or OK when none is given. */
  stop(status?: Partial<grpc.StatusObject>): void;
}

/**
 * Starts streaming; `onEnd` runs once when the watch stops for any reason (cancelled by the client, stopped by the
 * server, or a database error, which it receives to turn into the call's status).
 */
export function startWatch(
  call: grpc.ServerWritableStream<AccountRequest, Invoice>,
  store: BillingStore,
  accountId: number,
  onEnd: (err?: unknown) => void,
): Watch {
  let lastId = 0;
  let timer: NodeJS.Timeout | undefined;
  let done = false;

  const finish = (err?: unknown) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    call.off('drain', tick);
    onEnd(err);
  };

  function tick(): void {
    timer = undefined;
    if (done) return;
    if (call.cancelled) {
      finish();
      return;
    }
    let rows: Invoice[];
    try {
      rows = store.after(accountId, lastId, PAGE);
    } catch (err) {
      finish(err);
      return;
    }
    let ready = true;
    for (const row of rows) {
      lastId = row.id;
      ready = call.write(row);
    }
    // A client (or sidecar) that stops reading pauses the polling instead of growing our buffer.
    if (!ready) call.once('drain', tick);
    else if (rows.length === PAGE) setImmediate(tick);
    else timer = setTimeout(tick, POLL_MS);
  }

  call.on('cancelled', () => finish());
  // Headers now, so a caller (the gateway) knows the watch is established before the first invoice exists.
  call.sendMetadata(new grpc.Metadata());
  // Not synchronously: the caller registers the watch before any outcome (even a failed first read) reaches onEnd.
  setImmediate(tick);

  return {
    stop(status) {
      if (done) return;
      finish();
      if (status) call.emit('error', status);
      else call.end();
    },
  };
}
