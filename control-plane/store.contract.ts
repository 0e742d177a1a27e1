// The Store contract as one vitest suite, run against the embedded store and a real etcd, so the two cannot drift apart.
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from '../test/harness/wait.js';
import { LeaseLostError, type Store, type WatchEvent, type WatchHandle } from './store.js';

export interface ContractTarget {
  store: Store;
  cleanup(): Promise<void>;
  /** Compacts history (defaults to store.compact). */
  compact?(revision: number): Promise<void>;
  /** Moves lease time forward (embedded: FakeClock); absent means real time passes (etcd). */
  advance?(ms: number): void;
}

/** Everything one watch saw, for assertions. */
export interface Collected {
  readonly events: WatchEvent[];
  readonly batches: number[];
  readonly errors: Error[];
  compacted?: number;
  readonly handle: WatchHandle;
}

export function collect(store: Store, prefix: string, from: number): Collected {
  const c: Omit<Collected, 'handle'> = { events: [], batches: [], errors: [] };
  const handle = store.watch(prefix, from, {
    onEvents: (events, revision) => {
      c.events.push(...events);
      c.batches.push(revision);
    },
    onCompacted: (revision) => (c.compacted = revision),
    onError: (err) => c.errors.push(err),
  });
  return Object.assign(c, { handle });
}

/** "put key rev" / "delete key rev": compact, comparable, readable in a failed assertion. */
export function summary(ev: WatchEvent): string {
  return ev.type === 'put' ? `put ${ev.kv.key}=${ev.kv.value} @${ev.kv.modRevision}` : `delete ${ev.key} @${ev.modRevision}`;
}

export function revisionOf(ev: WatchEvent): number {
  return ev.type === 'put' ? ev.kv.modRevision : ev.modRevision;
}

export function storeContract(name: string, open: () => Promise<ContractTarget>): void {
  describe(`Store contract: ${name}`, () => {
    let t: ContractTarget;
    let store: Store;
    let p: string;
    const watches: WatchHandle[] = [];
    const watch = (prefix: string, from: number) => {
      const c = collect(store, prefix, from);
      watches.push(c.handle);
      return c;
    };

    beforeEach(async () => {
      t = await open();
      store = t.store;
      // etcd state outlives a test: every test writes under its own prefix.
      p = `/t-${randomBytes(4).toString('hex')}/`;
    });
    afterEach(async () => {
      watches.splice(0).forEach((w) => w.close());
      await t.cleanup();
    });

    it('put, get and delete move the revision forward and keep create/mod revisions', async () => {
      const r1 = await store.put(`${p}a`, 'one');
      const r2 = await store.put(`${p}b`, 'two');
      const r3 = await store.put(`${p}a`, 'uno');
      expect(r2).toBeGreaterThan(r1);
      expect(r3).toBeGreaterThan(r2);
      const got = await store.get(p);
      expect(got.revision).toBeGreaterThanOrEqual(r3);
      expect(got.kvs.map((kv) => [kv.key, kv.value, kv.createRevision, kv.modRevision])).toEqual([
        [`${p}a`, 'uno', r1, r3],
        [`${p}b`, 'two', r2, r2],
      ]);
      expect(got.kvs[0].lease).toBeUndefined();
      const r4 = await store.delete(`${p}a`);
      expect(r4).toBeGreaterThan(r3);
      expect((await store.get(p)).kvs.map((kv) => kv.key)).toEqual([`${p}b`]);
      // Deleting what is not there changes nothing, so it does not spend a revision.
      expect(await store.delete(`${p}missing`)).toBe((await store.get(p)).revision);
    });

    it('get and watch see only their prefix, sorted by key', async () => {
      const w = watch(p, (await store.get(p)).revision + 1);
      for (const k of ['c', 'a', 'b']) await store.put(`${p}${k}`, k);
      await store.put(p.slice(0, -1) + 'x/other', 'no');
      await store.put(p.slice(0, -1), 'no');
      await store.put(`${p}d`, 'd');
      expect((await store.get(p)).kvs.map((kv) => kv.key)).toEqual(['a', 'b', 'c', 'd'].map((k) => `${p}${k}`));
      const z = `${p.slice(0, -1)}-z/`;
      // Byte order, not JS string order: U+FFFD (EF BF BD) sorts before U+1F600 (F0 ..), values stay UTF-8.
      await store.put(`${z}\u{1F600}`, 'smile \u{1F600}');
      await store.put(`${z}\uFFFD`, 'é');
      expect((await store.get(z)).kvs.map((kv) => [kv.key, kv.value])).toEqual([[`${z}\uFFFD`, 'é'], [`${z}\u{1F600}`, 'smile \u{1F600}']]);
      await waitFor(() => w.events.length >= 4, { what: 'four prefix events' });
      expect(w.events.map((e) => (e.type === 'put' ? e.kv.key : e.key))).toEqual(['c', 'a', 'b', 'd'].map((k) => `${p}${k}`));
    });

    it('txn applies every op in one revision when the compares hold, and nothing when one fails', async () => {
      const r1 = await store.put(`${p}x`, '1');
      const ok = await store.txn(
        [{ key: `${p}x`, modRevision: r1 }, { key: `${p}new`, modRevision: 0 }],
        [{ type: 'put', key: `${p}new`, value: 'n' }, { type: 'delete', key: `${p}x` }, { type: 'put', key: `${p}y`, value: 'y' }],
      );
      expect(ok.succeeded).toBe(true);
      const after = await store.get(p);
      expect(after.kvs.map((kv) => [kv.key, kv.modRevision])).toEqual([[`${p}new`, ok.revision], [`${p}y`, ok.revision]]);
      const failed = await store.txn(
        [{ key: `${p}y`, modRevision: ok.revision }, { key: `${p}x`, modRevision: r1 }],
        [{ type: 'put', key: `${p}y`, value: 'changed' }, { type: 'delete', key: `${p}new` }],
      );
      expect(failed).toEqual({ succeeded: false, revision: after.revision });
      expect(await store.get(p)).toEqual(after);
      await expect(store.txn([], [{ type: 'put', key: `${p}d`, value: '1' }, { type: 'delete', key: `${p}d` }])).rejects.toThrow(/duplicate key/);
    });

    it('concurrent create-if-absent txns: exactly one wins', async () => {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => store.txn([{ key: `${p}leader`, modRevision: 0 }], [{ type: 'put', key: `${p}leader`, value: String(i) }])),
      );
      expect(results.filter((r) => r.succeeded)).toHaveLength(1);
    });

    it('watch from a past revision delivers the history, then live events, in order and exactly once', async () => {
      const start = await store.put(`${p}k1`, 'a');
      await store.put(`${p}k2`, 'b');
      await store.delete(`${p}k1`);
      const w1 = watch(p, start);
      const w2 = watch(p, start);
      await waitFor(() => w1.events.length >= 3, { what: 'history' });
      await store.txn([], [{ type: 'put', key: `${p}k3`, value: 'c' }, { type: 'put', key: `${p}k4`, value: 'd' }]);
      await store.put(`${p}k2`, 'b2');
      await store.delete(`${p}k2`);
      await waitFor(() => w1.events.length >= 7 && w2.events.length >= 7, { what: 'live events on both watchers' });
      const want = [`put ${p}k1=a @${start}`, `put ${p}k2=b @${start + 1}`, `delete ${p}k1 @${start + 2}`];
      expect(w1.events.slice(0, 3).map(summary)).toEqual(want);
      const revs = w1.events.map(revisionOf);
      expect(revs).toEqual([...revs].sort((a, b) => a - b));
      expect(revs[3]).toBe(revs[4]); // one txn, one revision
      expect(w2.events.map(summary)).toEqual(w1.events.map(summary));
      expect(w1.batches.at(-1)).toBe(revs.at(-1));
      // Nothing more arrives: a put elsewhere moves the store on, and still only our 7 events exist.
      await store.put(`/elsewhere-${p}`, 'x');
      await store.put(`${p}fence`, 'f');
      await waitFor(() => w1.events.length >= 8, { what: 'fence event' });
      expect(w1.events).toHaveLength(8);
    });

    it('watch from a compacted revision calls onCompacted; re-read and re-watch continue from there', async () => {
      const first = await store.put(`${p}a`, '1');
      await store.put(`${p}a`, '2');
      const last = await store.put(`${p}b`, '3');
      await (t.compact ?? ((r: number) => store.compact(r)))(last);
      const w = watch(p, first);
      await waitFor(() => w.compacted !== undefined, { what: 'onCompacted' });
      expect(w.compacted).toBeGreaterThanOrEqual(last);
      expect(w.events).toEqual([]);
      const reread = await store.get(p);
      expect(reread.kvs.map((kv) => kv.value)).toEqual(['2', '3']);
      const again = watch(p, reread.revision + 1);
      const next = await store.put(`${p}c`, '4');
      await waitFor(() => again.events.length >= 1, { what: 'event after re-watch' });
      expect(again.events.map(summary)).toEqual([`put ${p}c=4 @${next}`]);
    });

    it('an expired lease deletes its keys in one revision and calls onLost; a kept-alive lease outlives its TTL', async () => {
      const manual = await store.grantLease(1_000, { keepAlive: false });
      const kept = await store.grantLease(1_000);
      let lost = 0;
      let keptLost = 0;
      manual.onLost(() => lost++);
      kept.onLost(() => keptLost++);
      const from = (await store.get(p)).revision + 1;
      const w = watch(p, from);
      await store.put(`${p}m1`, 'x', { lease: manual.id });
      await store.txn([], [{ type: 'put', key: `${p}m2`, value: 'y', lease: manual.id }]);
      await store.put(`${p}k`, 'z', { lease: kept.id });
      expect((await store.get(p)).kvs.find((kv) => kv.key === `${p}m1`)?.lease).toBe(manual.id);
      t.advance?.(manual.ttlMs + 1);
      await waitFor(async () => lost === 1 && (await store.get(p)).kvs.length === 1, { what: 'lease expiry', timeoutMs: manual.ttlMs + 8_000 });
      expect((await store.get(p)).kvs.map((kv) => kv.key)).toEqual([`${p}k`]);
      await waitFor(() => w.events.length >= 5, { what: 'delete events' });
      const deletes = w.events.filter((e) => e.type === 'delete');
      expect(deletes).toHaveLength(2);
      expect(revisionOf(deletes[0])).toBe(revisionOf(deletes[1]));
      expect(keptLost).toBe(0);
      await expect(manual.keepAliveOnce()).rejects.toBeInstanceOf(LeaseLostError);
      await expect(store.put(`${p}late`, 'x', { lease: manual.id })).rejects.toBeInstanceOf(LeaseLostError);
      let again = 0;
      manual.onLost(() => again++);
      await waitFor(() => again === 1, { what: 'onLost registered after the loss' });
    });

    it('revoke deletes the lease keys and does not call onLost', async () => {
      const lease = await store.grantLease(30_000);
      let lost = 0;
      lease.onLost(() => lost++);
      await store.put(`${p}a`, '1', { lease: lease.id });
      await store.put(`${p}b`, '2', { lease: lease.id });
      await store.put(`${p}c`, '3');
      await store.put(`${p}b`, '2'); // re-put without the lease detaches the key
      await lease.revoke();
      expect((await store.get(p)).kvs.map((kv) => kv.key)).toEqual([`${p}b`, `${p}c`]);
      await expect(store.put(`${p}d`, '4', { lease: lease.id })).rejects.toBeInstanceOf(LeaseLostError);
      expect(lost).toBe(0);
    });

    it('keepAliveOnce keeps a manual lease past its TTL', async () => {
      const lease = await store.grantLease(1_000, { keepAlive: false });
      await store.put(`${p}a`, '1', { lease: lease.id });
      t.advance?.(lease.ttlMs - 100);
      await lease.keepAliveOnce();
      t.advance?.(lease.ttlMs - 100);
      expect((await store.get(p)).kvs).toHaveLength(1);
      await lease.revoke();
    });
  });
}
