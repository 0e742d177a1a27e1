// The embedded store (no --etcd): etcd's revisions, history, compaction and leases in one process, with group commit; disk in store-embedded-disk.ts, lease time on the Clock.
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

/** What a write decided: the record to make durable (none for a no-op), the caller's answer, and what follows its commit. */
interface Planned<T> {
  readonly record?: LogRecord;
  readonly result: T;
  readonly after?: () => void;
}

/** Decides one write against the draft; throwing fails only that write. */
type Plan<T> = (draft: Draft) => Planned<T>;

interface Queued {
  readonly plan: Plan<unknown>;
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: unknown) => void;
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
  /** Writes waiting for the next flush, in submission order. */
  private queued: Queued[] = [];
  /** The running flush loop, if any; close() waits for it. */
  private flushing?: Promise<void>;
  private closed = false;
  /** Set when a disk write failed: the log may end in a partial batch, so no further write may follow it. */
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
      if ('rev' in r && r.rev !== this.revision + 1) throw new Error(`store log: revision ${r.rev} follows ${this.revision}`);
      this.applyRecord(r);
    }
  }

  /** Leases do not survive a restart (their holders are gone), so their keys go, in one revision, before anyone reads. */
  async dropOrphanedLeaseKeys(): Promise<void> {
    const orphans = [...this.kvs.values()].filter((kv) => kv.lease !== undefined).map((kv): LogOp => ({ del: kv.key }));
    if (orphans.length === 0) return;
    await this.enqueue((draft) => draft.write(orphans));
    this.opts.log?.info('store.lease_keys_dropped', { keys: orphans.length, revision: this.revision });
  }

  async get(prefix: string): Promise<Range> {
    this.checkOpen();
    const kvs = [...this.kvs.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => compareKeys(a.key, b.key));
    return { kvs, revision: this.revision };
  }

  async txn(compares: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    checkTxnOps(ops);
    return this.enqueue<TxnResult>((draft) => {
      // Compared against the draft: a txn sees every write submitted before it, committed or still in this batch.
      const succeeded = compares.every((c) => (draft.get(c.key)?.modRevision ?? 0) === c.modRevision);
      if (!succeeded) return { result: { succeeded, revision: draft.revision } };
      const logOps = ops.map((op): LogOp => (op.type === 'put' ? { put: op.key, value: op.value, lease: op.lease } : { del: op.key }));
      const { record, result: revision } = draft.write(logOps);
      return { record, result: { succeeded, revision } };
    });
  }

  put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    return this.enqueue((draft) => draft.write([{ put: key, value, lease: opts.lease }]));
  }

  delete(key: string): Promise<number> {
    return this.enqueue((draft) => draft.write([{ del: key }]));
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle {
    this.checkOpen();
    return this.hub.watch(prefix, fromRevision, handlers);
  }

  compact(revision: number): Promise<void> {
    return this.enqueue((draft) => {
      if (revision > draft.revision) throw new RangeError(`cannot compact to ${revision}: store revision is ${draft.revision}`);
      if (revision <= draft.compactRevision) return { result: undefined };
      draft.compactRevision = revision;
      return { record: { compact: revision }, result: undefined };
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
    await this.flushing;
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
    return this.enqueue((draft) => {
      const { record } = draft.write(draft.leaseKeys(state.id, state.keys).map((key): LogOp => ({ del: key })));
      const after = () => {
        this.leases.delete(state.id);
        if (expired) this.loseLease(state);
      };
      return { record, result: undefined, after };
    });
  }

  private loseLease(state: LeaseState): void {
    state.ended = true;
    state.lostFired = true;
    state.timer?.cancel();
    this.leases.delete(state.id);
    for (const fn of state.lost.splice(0)) queueMicrotask(fn);
  }

  /**
   * Group commit. Writes queue in submission order; one flush at a time takes all that are queued, decides each in
   * order against a Draft (committed state plus the batch's earlier writes), appends their records with one write and
   * one datasync, then applies them and settles the writes in order. Writes arriving during that fsync wait for the
   * next flush, so N concurrent writers cost a few fsyncs, not N. Deciding a whole batch synchronously against a
   * throwaway Draft keeps today's meaning: a write sees every earlier one, and nothing is visible to readers or
   * watchers, nor settled, before the fsync that covers it.
   */
  private enqueue<T>(plan: Plan<T>): Promise<T> {
    // Checked at call time: writes queued before close() still complete, close() waits for them.
    if (this.closed) return Promise.reject(new StoreUnavailableError('embedded store is closed'));
    const done = new Promise<T>((resolve, reject) => this.queued.push({ plan, resolve: resolve as (result: unknown) => void, reject }));
    this.flushing ??= this.flushAll();
    return done;
  }

  private async flushAll(): Promise<void> {
    // One microtask's grace, so that writes submitted in the same tick share the first flush as well.
    await Promise.resolve();
    while (this.queued.length > 0) {
      await this.flush(this.queued.splice(0));
      // Only between flushes: a snapshot replaces the log, so it must not race an append, and it covers all that is applied.
      if (this.sinceSnapshot >= this.snapshotEvery) await this.takeSnapshot();
    }
    this.flushing = undefined;
  }

  private async flush(batch: readonly Queued[]): Promise<void> {
    if (this.broken) {
      const err = new StoreUnavailableError(`embedded store write failed earlier; reopen it: ${this.broken.message}`, { cause: this.broken });
      for (const q of batch) q.reject(err);
      return;
    }
    const draft = new Draft(this.kvs, this.leases, this.revision, this.hub.compactRevision);
    const decided = batch.map((q): Planned<unknown> | { error: unknown } => {
      try {
        return q.plan(draft);
      } catch (error) {
        return { error };
      }
    });
    const records = decided.flatMap((d) => ('error' in d || d.record === undefined ? [] : [d.record]));
    try {
      if (records.length > 0) await this.disk.append(records);
    } catch (err) {
      // Memory stays at the last commit and the Draft is dropped; every write of the batch fails, as one would have alone.
      this.broken = err as Error;
      const failed = new StoreUnavailableError(`embedded store write failed: ${(err as Error).message}`, { cause: err });
      batch.forEach((q, i) => q.reject('error' in decided[i] ? decided[i].error : failed));
      return;
    }
    for (const r of records) this.applyRecord(r);
    this.sinceSnapshot += records.filter((r) => 'rev' in r).length;
    batch.forEach((q, i) => {
      const d = decided[i];
      if ('error' in d) return q.reject(d.error);
      d.after?.();
      q.resolve(d.result);
    });
  }

  private applyRecord(r: LogRecord): void {
    if ('compact' in r) this.hub.compact(r.compact);
    else this.apply(r.rev, r.ops);
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

/**
 * Committed state plus the writes decided so far in one batch, not yet on disk. Each write of the batch is decided
 * against it, so it sees the earlier ones exactly as if they had committed one at a time; the real state changes
 * only when the batch's fsync succeeds, and a failed one just drops the draft.
 */
class Draft {
  /** Keys the batch so far has written: their pending value, or undefined once deleted. */
  private readonly touched = new Map<string, KeyValue | undefined>();

  constructor(
    private readonly kvs: ReadonlyMap<string, KeyValue>,
    private readonly leases: ReadonlyMap<string, LeaseState>,
    public revision: number,
    public compactRevision: number,
  ) {}

  get(key: string): KeyValue | undefined {
    return this.touched.has(key) ? this.touched.get(key) : this.kvs.get(key);
  }

  /** The ops as one revision; the answer is that revision. A no-op write does not bump it and logs nothing. */
  write(ops: readonly LogOp[]): Planned<number> {
    for (const op of ops) {
      if ('put' in op && op.lease !== undefined && (this.leases.get(op.lease)?.ended ?? true)) throw new LeaseLostError(op.lease);
    }
    const effective = ops.filter((op) => 'put' in op || this.get(op.del) !== undefined);
    if (effective.length === 0) return { result: this.revision };
    const rev = ++this.revision;
    for (const op of effective) {
      if ('put' in op) this.touched.set(op.put, { key: op.put, value: op.value, modRevision: rev, createRevision: this.get(op.put)?.createRevision ?? rev, lease: op.lease });
      else this.touched.set(op.del, undefined);
    }
    return { record: { rev, ops: effective }, result: rev };
  }

  /** A lease's keys once the batch so far commits: a key the batch re-put without it, or deleted, is no longer its to delete. */
  leaseKeys(id: string, committed: ReadonlySet<string>): string[] {
    const keys = new Set(committed);
    for (const [key, kv] of this.touched) {
      if (kv?.lease === id) keys.add(key);
      else keys.delete(key);
    }
    return [...keys];
  }
}
