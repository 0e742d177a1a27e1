// The embedded store (no --etcd): etcd's revisions, history, compaction and leases in one process; disk in store-embedded-disk.ts, lease time on the Clock.
import { randomBytes } from 'node:crypto';
import { systemClock, type Clock, type Timer } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import { StoreDisk, type LogOp, type LogRecord, type SnapshotFile } from './store-embedded-disk.js';
import { WatchHub, type HistoryEntry } from './store-embedded-watch.js';
import {
  LeaseLostError,
  StoreUnavailableError,
  checkTxnOps,
  compareKeys,
  type KeyValue,
  type Lease,
  type LeaseOptions,
  type Range,
  type Store,
  type TxnCompare,
  type TxnOp,
  type TxnResult,
  type WatchEvent,
  type WatchHandle,
  type WatchHandlers,
} from './store.js';

export interface EmbeddedStoreOptions {
  clock?: Clock;
  log?: Logger;
  /** Revisions of history kept for watches; older ones are compacted away (default 10,000). */
  historyLimit?: number;
  /** Log records between snapshots (default 1,000). */
  snapshotEvery?: number;
}

interface LeaseState {
  readonly id: string;
  readonly ttlMs: number;
  readonly keys: Set<string>;
  readonly lost: (() => void)[];
  lostFired: boolean;
  timer?: Timer;
  /** Set once the lease is ending (expired, revoked, store closed): no new keys, no keepalive. */
  ended: boolean;
}

export async function openEmbeddedStore(dir: string, opts: EmbeddedStoreOptions = {}): Promise<Store> {
  const { disk, loaded } = await StoreDisk.open(dir);
  const store = new EmbeddedStore(disk, opts);
  try {
    if (loaded.tornTailBytes > 0) opts.log?.warn('store.log_torn_tail', { dir, bytes: loaded.tornTailBytes });
    store.restore(loaded.snapshot, loaded.records);
    await store.dropOrphanedLeaseKeys();
  } catch (err) {
    await disk.close();
    throw err;
  }
  opts.log?.info('store.opened', { kind: 'embedded', dir, revision: store.revision, keys: store.size });
  return store;
}

class EmbeddedStore implements Store {
  readonly kind = 'embedded';
  revision = 1;
  private readonly kvs = new Map<string, KeyValue>();
  private readonly leases = new Map<string, LeaseState>();
  private readonly hub: WatchHub;
  private readonly clock: Clock;
  private readonly snapshotEvery: number;
  private sinceSnapshot = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Set when a disk write failed: the log may end in a partial line, so no further write may follow it. */
  private broken?: Error;

  constructor(
    private readonly disk: StoreDisk,
    private readonly opts: EmbeddedStoreOptions,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.snapshotEvery = opts.snapshotEvery ?? 1_000;
    this.hub = new WatchHub(opts.historyLimit ?? 10_000, opts.log);
  }

  get size(): number {
    return this.kvs.size;
  }

  /** Rebuilds state from the snapshot plus the log. History before the snapshot is not kept, so it counts as compacted. */
  restore(snapshot: SnapshotFile | undefined, records: readonly LogRecord[]): void {
    for (const kv of snapshot?.kvs ?? []) this.kvs.set(kv.key, kv);
    this.revision = snapshot?.revision ?? 1;
    this.hub.reset(this.revision, snapshot ? Math.max(snapshot.compactRevision, snapshot.revision + 1) : 0);
    for (const r of records) {
      if ('compact' in r) {
        this.hub.compact(r.compact);
      } else {
        if (r.rev !== this.revision + 1) throw new Error(`store log: revision ${r.rev} follows ${this.revision}`);
        this.apply(r.rev, r.ops);
      }
    }
  }

  /** Leases do not survive a restart (their holders are gone), so their keys go, in one revision, before anyone reads. */
  async dropOrphanedLeaseKeys(): Promise<void> {
    const orphans = [...this.kvs.values()].filter((kv) => kv.lease !== undefined).map((kv): LogOp => ({ del: kv.key }));
    if (orphans.length === 0) return;
    await this.serialize(() => this.commit(orphans));
    this.opts.log?.info('store.lease_keys_dropped', { keys: orphans.length, revision: this.revision });
  }

  async get(prefix: string): Promise<Range> {
    this.checkOpen();
    const kvs = [...this.kvs.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => compareKeys(a.key, b.key));
    return { kvs, revision: this.revision };
  }

  async txn(compares: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    checkTxnOps(ops);
    return this.serialize(async () => {
      const succeeded = compares.every((c) => (this.kvs.get(c.key)?.modRevision ?? 0) === c.modRevision);
      if (!succeeded) return { succeeded, revision: this.revision };
      const logOps = ops.map((op): LogOp => (op.type === 'put' ? { put: op.key, value: op.value, lease: op.lease } : { del: op.key }));
      return { succeeded, revision: await this.commit(logOps) };
    });
  }

  put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    return this.serialize(() => this.commit([{ put: key, value, lease: opts.lease }]));
  }

  delete(key: string): Promise<number> {
    return this.serialize(() => this.commit([{ del: key }]));
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle {
    this.checkOpen();
    return this.hub.watch(prefix, fromRevision, handlers);
  }

  compact(revision: number): Promise<void> {
    return this.serialize(async () => {
      if (revision > this.revision) throw new RangeError(`cannot compact to ${revision}: store revision is ${this.revision}`);
      if (revision <= this.hub.compactRevision) return;
      await this.write({ compact: revision });
      this.hub.compact(revision);
    });
  }

  async grantLease(ttlMs: number, opts: LeaseOptions = {}): Promise<Lease> {
    this.checkOpen();
    if (!(ttlMs > 0)) throw new RangeError(`lease TTL must be positive, got ${ttlMs}`);
    const state: LeaseState = { id: randomBytes(8).toString('hex'), ttlMs, keys: new Set(), lost: [], lostFired: false, ended: false };
    this.leases.set(state.id, state);
    // An in-process holder cannot miss a keepalive, so an auto-kept lease simply has no expiry timer.
    if (opts.keepAlive === false) this.armExpiry(state);
    return {
      id: state.id,
      ttlMs,
      keepAliveOnce: async () => {
        if (state.ended || this.closed) throw new LeaseLostError(state.id);
        if (state.timer) this.armExpiry(state);
      },
      // After close the lease is already gone (and reported lost); there is nothing left to revoke.
      revoke: async () => (this.closed ? undefined : this.endLease(state, false)),
      onLost: (fn) => {
        if (state.lostFired) queueMicrotask(fn);
        else state.lost.push(fn);
      },
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    this.hub.closeAll();
    for (const lease of this.leases.values()) this.loseLease(lease);
    if (!this.broken) await this.disk.writeSnapshot(this.snapshot()).catch((err: unknown) => this.opts.log?.warn('store.snapshot_failed', { err }));
    await this.disk.close();
  }

  private armExpiry(state: LeaseState): void {
    state.timer?.cancel();
    state.timer = this.clock.setTimeout(() => void this.endLease(state, true).catch((err: unknown) => this.opts.log?.warn('store.lease_expiry_failed', { lease: state.id, err })), state.ttlMs);
  }

  /** Expiry and revoke both delete the lease's keys in one revision; only expiry tells the holder (revoke was its own doing). */
  private endLease(state: LeaseState, expired: boolean): Promise<void> {
    state.timer?.cancel();
    if (state.ended) return Promise.resolve();
    state.ended = true;
    return this.serialize(async () => {
      const ops = [...state.keys].map((key): LogOp => ({ del: key }));
      if (ops.length > 0) await this.commit(ops);
      this.leases.delete(state.id);
      if (expired) this.loseLease(state);
    });
  }

  private loseLease(state: LeaseState): void {
    state.ended = true;
    state.lostFired = true;
    state.timer?.cancel();
    this.leases.delete(state.id);
    for (const fn of state.lost.splice(0)) queueMicrotask(fn);
  }

  /** Writes run one at a time, so the state a txn compared against is the state it commits onto. */
  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    // Checked at call time: writes queued before close() still complete, close() waits for them.
    if (this.closed) return Promise.reject(new StoreUnavailableError('embedded store is closed'));
    const run = async (): Promise<T> => {
      if (this.broken) throw new StoreUnavailableError(`embedded store write failed earlier; reopen it: ${this.broken.message}`, { cause: this.broken });
      return fn();
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Commits ops as one revision: validate, log durably, then apply and notify. A no-op write does not bump the revision. */
  private async commit(ops: readonly LogOp[]): Promise<number> {
    for (const op of ops) {
      if ('put' in op && op.lease !== undefined && (this.leases.get(op.lease)?.ended ?? true)) throw new LeaseLostError(op.lease);
    }
    const effective = ops.filter((op) => 'put' in op || this.kvs.has(op.del));
    if (effective.length === 0) return this.revision;
    const rev = this.revision + 1;
    await this.write({ rev, ops: effective });
    this.apply(rev, effective);
    if (++this.sinceSnapshot >= this.snapshotEvery) await this.takeSnapshot();
    return rev;
  }

  private async write(record: LogRecord): Promise<void> {
    try {
      await this.disk.append(record);
    } catch (err) {
      this.broken = err as Error;
      throw new StoreUnavailableError(`embedded store write failed: ${(err as Error).message}`, { cause: err });
    }
  }

  private apply(rev: number, ops: readonly LogOp[]): void {
    const events: WatchEvent[] = [];
    for (const op of ops) {
      const prev = this.kvs.get('put' in op ? op.put : op.del);
      if (prev?.lease !== undefined) this.leases.get(prev.lease)?.keys.delete(prev.key);
      if ('put' in op) {
        const kv: KeyValue = { key: op.put, value: op.value, modRevision: rev, createRevision: prev?.createRevision ?? rev, lease: op.lease };
        if (op.lease !== undefined) this.leases.get(op.lease)?.keys.add(op.put);
        this.kvs.set(op.put, kv);
        events.push({ type: 'put', kv });
      } else if (prev) {
        this.kvs.delete(op.del);
        events.push({ type: 'delete', key: op.del, modRevision: rev });
      }
    }
    this.revision = rev;
    this.hub.append({ revision: rev, events } satisfies HistoryEntry);
  }

  private async takeSnapshot(): Promise<void> {
    try {
      await this.disk.writeSnapshot(this.snapshot());
      this.sinceSnapshot = 0;
    } catch (err) {
      // The log still holds every committed write; the next commit tries the snapshot again.
      this.opts.log?.warn('store.snapshot_failed', { err });
    }
  }

  private snapshot() {
    return { format: 1 as const, revision: this.revision, compactRevision: this.hub.compactRevision, kvs: [...this.kvs.values()] };
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreUnavailableError('embedded store is closed');
  }
}
