// The Store contract on etcd through `etcd3` (ranges, mod_revision txns, leases, compaction) so control-plane replicas can share one cluster.
import { ClientClosedError, Etcd3, EtcdLeaseInvalidError, Range as EtcdRange, isRecoverableError, type IRequestOp, type Lease as EtcdLease } from 'etcd3';
import type { Logger } from '../api/log.js';
import { toKeyValue, watchEtcd } from './store-etcd-watch.js';
import {
  LeaseLostError,
  StoreUnavailableError,
  checkTxnOps,
  type Lease,
  type LeaseOptions,
  type Range,
  type Store,
  type TxnCompare,
  type TxnOp,
  type TxnResult,
  type WatchHandle,
  type WatchHandlers,
} from './store.js';

export interface EtcdStoreOptions {
  log?: Logger;
  /** How long the first contact may take before open fails (default 5 s): the control plane exits when etcd is unreachable at start. */
  dialTimeoutMs?: number;
  /** Deadline of each unary call (default 5 s); streams (watch, keepalive) have none. */
  requestTimeoutMs?: number;
}

export async function openEtcdStore(endpoints: string[], opts: EtcdStoreOptions = {}): Promise<Store> {
  if (endpoints.length === 0) throw new Error('no etcd endpoints given');
  const dialTimeoutMs = opts.dialTimeoutMs ?? 5_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
  const client = new Etcd3({
    hosts: endpoints.map((e) => (e.includes('://') ? e : `http://${e}`)),
    dialTimeout: dialTimeoutMs,
    // Keepalive finds a dead connection (etcd host gone without a FIN) in ~15 s instead of the OS's hours; the reconnect
    // cap keeps grpc-js from backing off for minutes after a long etcd outage.
    grpcOptions: { 'grpc.keepalive_time_ms': 10_000, 'grpc.keepalive_timeout_ms': 5_000, 'grpc.max_reconnect_backoff_ms': 5_000 },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
  });
  const store = new EtcdStore(client, opts.log);
  try {
    const revision = await withTimeout(store.revision(), dialTimeoutMs, () => `etcd at ${endpoints.join(',')} not reachable within ${dialTimeoutMs}ms`);
    opts.log?.info('store.opened', { kind: 'etcd', endpoints, revision });
  } catch (err) {
    client.close();
    throw unavailable(err, 'connect');
  }
  return store;
}

class EtcdStore implements Store {
  readonly kind = 'etcd';
  private readonly leases = new Set<{ release(): void }>();
  private readonly watches = new Set<WatchHandle>();
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly log?: Logger,
  ) {}

  async revision(): Promise<number> {
    const res = await this.client.kv.range({ key: Buffer.from([0]), limit: 1, count_only: true });
    return Number(res.header.revision);
  }

  async get(prefix: string): Promise<Range> {
    const r = EtcdRange.prefix(prefix);
    const res = await this.call('get', () => this.client.kv.range({ key: r.start, range_end: r.end }));
    return { kvs: res.kvs.map(toKeyValue), revision: Number(res.header.revision) };
  }

  async txn(compares: readonly TxnCompare[], ops: readonly TxnOp[]): Promise<TxnResult> {
    checkTxnOps(ops);
    const success = ops.map(
      (op): IRequestOp =>
        op.type === 'put'
          ? { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value), lease: op.lease ?? '0' } }
          : { request_delete_range: { key: Buffer.from(op.key) } },
    );
    // An absent key's mod_revision compares as 0 in etcd, which gives "must not exist" for free.
    const compare = compares.map((c) => ({ key: Buffer.from(c.key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: String(c.modRevision) }));
    const lease = ops.find((op) => op.type === 'put' && op.lease !== undefined);
    const res = await this.call('txn', () => this.client.kv.txn({ compare, success, failure: [] }), lease?.type === 'put' ? lease.lease : undefined);
    return { succeeded: res.succeeded, revision: Number(res.header.revision) };
  }

  async put(key: string, value: string, opts: { lease?: string } = {}): Promise<number> {
    const res = await this.call('put', () => this.client.kv.put({ key: Buffer.from(key), value: Buffer.from(value), lease: opts.lease ?? '0' }), opts.lease);
    return Number(res.header.revision);
  }

  async delete(key: string): Promise<number> {
    const res = await this.call('delete', () => this.client.kv.deleteRange({ key: Buffer.from(key) }));
    return Number(res.header.revision);
  }

  async compact(revision: number): Promise<void> {
    try {
      await this.call('compact', () => this.client.kv.compact({ revision: String(revision), physical: true }));
    } catch (err) {
      // Compacting to an already-compacted revision is a no-op here, as in the embedded store.
      if (!/compacted/.test((err as Error).message)) throw err;
    }
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle {
    if (this.closed) throw new StoreUnavailableError('etcd store is closed');
    const inner = watchEtcd(this.client, prefix, fromRevision, handlers, this.log);
    const handle: WatchHandle = {
      close: () => {
        this.watches.delete(handle);
        inner.close();
      },
    };
    this.watches.add(handle);
    return handle;
  }

  async grantLease(ttlMs: number, opts: LeaseOptions = {}): Promise<Lease> {
    if (this.closed) throw new StoreUnavailableError('etcd store is closed');
    const auto = opts.keepAlive !== false;
    const inner = this.client.lease(Math.max(1, Math.ceil(ttlMs / 1000)), { autoKeepAlive: auto });
    const lease = new EtcdLeaseHandle(this.client, inner, auto, this.log);
    const id = await this.call('grant lease', () => inner.grant()).catch((err: unknown) => {
      inner.release();
      throw err;
    });
    // etcd may grant more than asked (its minimum TTL); holders schedule keepalives on what was granted.
    const ttl = await this.call('lease ttl', () => this.client.leaseClient.leaseTimeToLive({ ID: id }));
    lease.granted(id, Number(ttl.grantedTTL) * 1000);
    this.leases.add(lease);
    lease.onLost(() => this.leases.delete(lease));
    return lease;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of [...this.watches]) w.close();
    for (const l of [...this.leases]) l.release();
    this.client.close();
  }

  /** Runs one unary call, translating etcd3's errors into the store's: unreachable → StoreUnavailableError, unknown lease → LeaseLostError. */
  private async call<T>(what: string, fn: () => Promise<T>, leaseId?: string): Promise<T> {
    if (this.closed) throw new StoreUnavailableError('etcd store is closed');
    try {
      return await fn();
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError) throw new LeaseLostError(leaseId ?? 'unknown');
      throw unavailable(err, what);
    }
  }
}

/** One granted lease. For leases without auto keepalive, etcd3 reports nothing on expiry, so a watchdog asks etcd after each TTL. */
class EtcdLeaseHandle implements Lease {
  id = '';
  ttlMs = 0;
  private readonly lost: (() => void)[] = [];
  private lostFired = false;
  private ended = false;
  private watchdog?: NodeJS.Timeout;

  constructor(
    private readonly client: Etcd3,
    private readonly inner: EtcdLease,
    private readonly auto: boolean,
    private readonly log?: Logger,
  ) {
    inner.on('lost', (err: Error) => {
      log?.warn('store.lease_lost', { lease: this.id, err });
      this.fireLost();
    });
  }

  granted(id: string, ttlMs: number): void {
    this.id = id;
    this.ttlMs = ttlMs;
    if (!this.auto) this.armWatchdog(ttlMs);
  }

  async keepAliveOnce(): Promise<void> {
    if (this.ended) throw new LeaseLostError(this.id);
    try {
      await this.inner.keepaliveOnce();
    } catch (err) {
      if (err instanceof EtcdLeaseInvalidError) throw new LeaseLostError(this.id);
      throw unavailable(err, 'lease keepalive');
    }
    if (!this.auto) this.armWatchdog(this.ttlMs);
  }

  async revoke(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.watchdog);
    try {
      await this.inner.revoke();
    } catch (err) {
      throw unavailable(err, 'lease revoke');
    }
  }

  onLost(fn: () => void): void {
    if (this.lostFired) queueMicrotask(fn);
    else this.lost.push(fn);
  }

  /** The store is closing: stop keepalives (etcd expires the lease after its TTL) and tell the holder. */
  release(): void {
    this.inner.release();
    this.fireLost();
  }

  private fireLost(): void {
    if (this.ended) return;
    this.ended = true;
    this.lostFired = true;
    clearTimeout(this.watchdog);
    for (const fn of this.lost.splice(0)) queueMicrotask(fn);
  }

  private armWatchdog(ms: number): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => void this.check(), ms);
    this.watchdog.unref();
  }

  private async check(): Promise<void> {
    try {
      const res = await this.client.leaseClient.leaseTimeToLive({ ID: this.id });
      // -1: etcd no longer knows the lease. 0 only means "under a second left" (TTL is whole seconds), so look again soon.
      if (Number(res.TTL) < 0) this.fireLost();
      else if (!this.ended) this.armWatchdog(Math.max(250, Number(res.TTL) * 1000));
    } catch {
      // Unreachable for now; ask again shortly (etcd keeps leases alive across its own restarts).
      if (!this.ended) this.armWatchdog(1_000);
    }
  }
}

function unavailable(err: unknown, what: string): Error {
  if (err instanceof StoreUnavailableError) return err;
  const e = err as Error & { isBrokenCircuitError?: boolean };
  // Recoverable gRPC errors (unavailable, deadline, cancelled), an open circuit breaker (cockatiel's, possibly re-wrapped
  // by etcd3) and a closed client all mean "etcd is not there now"; anything else is a real answer from etcd.
  if (err instanceof ClientClosedError || isRecoverableError(e) || e.isBrokenCircuitError || /circuit breaker is open/.test(e.message)) {
    return new StoreUnavailableError(`etcd unavailable (${what}): ${e.message}`, { cause: err });
  }
  return e;
}

async function withTimeout<T>(p: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new StoreUnavailableError(message())), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
