// Watches on etcd: an etcd3 Watcher that resumes right after the last delivered event (not where etcd3 guesses), drops replays, reports compaction.
import { Range as EtcdRange, type Etcd3, type IEvent, type IWatchResponse, type Watcher } from 'etcd3';
import type { Logger } from '../api/log.js';
import { checkWatchStart, type KeyValue, type WatchEvent, type WatchHandle, type WatchHandlers } from './store.js';

/** Wait before re-creating a watch etcd cancelled for a reason other than compaction, or re-probing after an error. */
const RETRY_MS = 500;

export function watchEtcd(client: Etcd3, prefix: string, fromRevision: number, handlers: WatchHandlers, log?: Logger): WatchHandle {
  checkWatchStart(fromRevision);
  /** The last revision delivered; everything at or below it has been seen, so it is dropped if etcd replays it. */
  let last = fromRevision - 1;
  let closed = false;
  let current: Watcher | undefined;
  let retry: NodeJS.Timeout | undefined;

  const call = (fn: () => void) => {
    // etcd3 rethrows a listener's exception on a later tick, which would crash the process: contain it here.
    try {
      fn();
    } catch (err) {
      log?.error('store.watch_handler_threw', { err });
    }
  };

  const deliver = (w: Watcher, res: IWatchResponse) => {
    if (closed || w !== current) return;
    // Whole revisions arrive in one response (etcd splits batches only between revisions), so `last` moves per batch.
    const events = res.events.filter((ev) => Number(ev.kv.mod_revision) > last).map(toWatchEvent);
    if (events.length === 0) return; // progress notification, or a replay after a resume
    const rev = eventRevision(events[events.length - 1]);
    last = rev;
    call(() => handlers.onEvents(events, rev));
  };

  const start = () => {
    if (closed) return;
    // watcher() rather than create(): listeners must be attached before the first response can arrive.
    const w = client.watch().prefix(prefix).startRevision(String(last + 1)).watcher();
    current = w;
    w.on('data', (res: IWatchResponse) => deliver(w, res));
    w.on('disconnected', (err: Error) => {
      // etcd3 resumes from "header revision + 1" of the last response, which can skip history a catching-up watch had
      // not received yet; resume from what we actually delivered instead.
      w.request.start_revision = String(last + 1);
      if (!closed && w === current) call(() => handlers.onError?.(err));
    });
    w.on('error', (err: Error) => {
      if (!closed && w === current) void canceled(err);
    });
  };

  /** etcd cancelled the watch. Its reason (compact_revision) is not passed on by etcd3, so ask etcd whether our start was compacted. */
  const canceled = async (err: Error) => {
    current = undefined;
    const probe = EtcdRange.prefix(prefix);
    try {
      await client.kv.range({ key: probe.start, range_end: probe.end, revision: last + 1, limit: 1, keys_only: true });
    } catch (probeErr) {
      if (/compacted/.test((probeErr as Error).message)) {
        const now = await currentRevision(client).catch(() => last + 1);
        if (closed) return;
        closed = true;
        call(() => handlers.onCompacted(now));
        return;
      }
      // A future revision (nothing newer yet) means "not compacted"; anything else is connection trouble.
      if (!/future revision/.test((probeErr as Error).message)) call(() => handlers.onError?.(probeErr as Error));
    }
    if (closed) return;
    call(() => handlers.onError?.(err));
    retry = setTimeout(start, RETRY_MS);
    retry.unref();
  };

  queueMicrotask(start);
  return {
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retry);
      void current?.cancel().catch(() => undefined);
      current = undefined;
    },
  };
}

async function currentRevision(client: Etcd3): Promise<number> {
  const res = await client.kv.range({ key: Buffer.from([0]), limit: 1, count_only: true });
  return Number(res.header.revision);
}

export function toKeyValue(kv: { key: Buffer; value: Buffer; mod_revision: string; create_revision: string; lease: string }): KeyValue {
  const out: { -readonly [K in keyof KeyValue]: KeyValue[K] } = {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    modRevision: Number(kv.mod_revision),
    createRevision: Number(kv.create_revision),
  };
  // etcd reports "no lease" as lease 0.
  if (kv.lease && kv.lease !== '0') out.lease = kv.lease;
  return out;
}

function toWatchEvent(ev: IEvent): WatchEvent {
  // The typings say 'Put'/'Delete'; the wire (proto enum names) says 'PUT'/'DELETE'.
  return String(ev.type).toLowerCase() === 'put' ? { type: 'put', kv: toKeyValue(ev.kv) } : { type: 'delete', key: ev.kv.key.toString('utf8'), modRevision: Number(ev.kv.mod_revision) };
}

function eventRevision(ev: WatchEvent): number {
  return ev.type === 'put' ? ev.kv.modRevision : ev.modRevision;
}
