// The control plane's config store interface: one revisioned key-value contract, implemented by etcd and by the embedded store; callers see only this.

/**
 * One key as the store holds it. Revisions follow etcd: the store has one global revision, bumped once per write
 * (a txn with several ops is one revision); `createRevision` is when the key was last created, `modRevision` when it
 * was last written. Snapshot versions pushed to sidecars derive from these numbers (DESIGN.md §6).
 */
export interface KeyValue {
  readonly key: string;
  readonly value: string;
  readonly modRevision: number;
  readonly createRevision: number;
  /** The lease the key is attached to; the key is deleted when that lease ends. */
  readonly lease?: string;
}

/** A change seen by a watcher. A delete carries the revision of the deletion. */
export type WatchEvent =
  | { readonly type: 'put'; readonly kv: KeyValue }
  | { readonly type: 'delete'; readonly key: string; readonly modRevision: number };

/** The result of a read: the keys, and the store revision the read saw (watch from `revision + 1` to follow on). */
export interface Range {
  readonly kvs: readonly KeyValue[];
  readonly revision: number;
}

export type TxnOp =
  | { readonly type: 'put'; readonly key: string; readonly value: string; readonly lease?: string }
  | { readonly type: 'delete'; readonly key: string };

/** Holds when the key's modRevision equals `modRevision`; 0 means "the key must not exist". */
export interface TxnCompare {
  readonly key: string;
  readonly modRevision: number;
}

export interface TxnResult {
  readonly succeeded: boolean;
  /** The new revision when ops changed something, else the store revision the txn saw. */
  readonly revision: number;
}

export interface WatchHandle {
  close(): void;
}

export interface WatchHandlers {
  /**
   * A batch of events in revision order. Events of one revision (one txn) always arrive in the same batch.
   * `revision` is the modRevision of the last event: the caller's view is complete up to and including it.
   */
  onEvents(events: WatchEvent[], revision: number): void;
  /**
   * The history the watch needed was compacted away; the watch has ended. `revision` is the store's current revision:
   * re-read with get() and watch again from that read's revision + 1.
   */
  onCompacted(revision: number): void;
  /** Connection trouble (etcd); the watch keeps trying and resumes without a gap or a duplicate. Informational. */
  onError?(err: Error): void;
}

export interface LeaseOptions {
  /**
   * true (default): the store keeps the lease alive for as long as it is open, so only revoke(), close() or losing
   * the store for longer than the TTL ends it. false: the holder calls keepAliveOnce() within every TTL (for leases
   * tied to something outside this process, such as a sidecar's stream), or the lease expires.
   */
  readonly keepAlive?: boolean;
}

export interface Lease {
  readonly id: string;
  /** The TTL the store granted; etcd rounds up to whole seconds and its minimum lease TTL. */
  readonly ttlMs: number;
  /** Resets the TTL; rejects with LeaseLostError if the lease already ended. */
  keepAliveOnce(): Promise<void>;
  /** Ends the lease now and deletes its keys (in one revision). onLost is not called: the holder asked for it. */
  revoke(): Promise<void>;
  /**
   * Calls fn once when the lease ends without revoke(): TTL expiry (its keys are then deleted by the store), or the
   * store closed or unreachable for longer than the TTL. Registering after the loss calls fn right away.
   */
  onLost(fn: () => void): void;
}

export interface Store {
  readonly kind: 'etcd' | 'embedded';
  /** All keys under prefix ('' = every key), sorted by key bytes, and the store revision of the read. */
  get(prefix: string): Promise<Range>;
  /**
   * Atomically: if every compare holds, apply every op in one revision. On failure nothing is applied.
   * A key may appear in at most one op (etcd's rule).
   */
  txn(compares: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult>;
  /** Returns the new revision. A put with a lease attaches the key to it; without one it detaches. */
  put(key: string, value: string, opts?: { lease?: string }): Promise<number>;
  /** Returns the new revision, or the current one if the key did not exist. */
  delete(key: string): Promise<number>;
  grantLease(ttlMs: number, opts?: LeaseOptions): Promise<Lease>;
  /**
   * Events for keys under prefix with modRevision >= fromRevision (>= 1), in revision order, delivered exactly once each.
   * If fromRevision was compacted away, onCompacted(currentRevision) is called instead and the watch ends; the caller
   * re-reads (get) and re-watches from that read's revision + 1. onError reports connection trouble; the watch resumes by
   * itself from the last delivered revision + 1 when the store comes back (etcd), never missing or duplicating an event.
   * Handlers are never called synchronously from watch(), nor after close().
   */
  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle;
  /** Drops history below `revision`: watches from an older revision get onCompacted. */
  compact(revision: number): Promise<void>;
  /** Ends watches and leases (onLost fires for leases not revoked) and releases the store. Idempotent. */
  close(): Promise<void>;
}

/** The store cannot be reached (etcd down, embedded store closed or its disk failing); the caller may retry later. */
export class StoreUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

/** The lease ended (expired, revoked, or its store closed) before the operation. */
export class LeaseLostError extends Error {
  constructor(readonly leaseId: string) {
    super(`lease ${leaseId} not found: expired or revoked`);
    this.name = 'LeaseLostError';
  }
}

/**
 * Orders keys the way etcd does: by their UTF-8 bytes. JS string order agrees except where surrogate pairs (above
 * U+FFFF) meet U+E000..U+FFFF, so only keys with surrogates pay for the byte comparison.
 */
export function compareKeys(a: string, b: string): number {
  if (SURROGATE.test(a) || SURROGATE.test(b)) return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
  return a < b ? -1 : a > b ? 1 : 0;
}
const SURROGATE = /[\uD800-\uDFFF]/;

/** Rejects what etcd rejects, so both stores fail the same calls the same way. */
export function checkTxnOps(ops: readonly TxnOp[]): void {
  const seen = new Set<string>();
  for (const op of ops) {
    if (seen.has(op.key)) throw new Error(`duplicate key "${op.key}" in txn`);
    seen.add(op.key);
  }
}

export function checkWatchStart(fromRevision: number): void {
  if (!Number.isSafeInteger(fromRevision) || fromRevision < 1) {
    throw new RangeError(`watch fromRevision must be an integer >= 1, got ${fromRevision} (use get().revision + 1 to watch from now)`);
  }
}
