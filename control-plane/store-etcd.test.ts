// The etcd store on a real etcd: the shared contract, then HARDENING.md's etcd faults; skipped without etcd unless CI=true, where that fails.
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REQUIRE_ETCD, etcdAvailable, startEtcd, type EtcdCluster } from '../test/harness/etcd.js';
import { waitFor } from '../test/harness/wait.js';
import { openEtcdStore } from './store-etcd.js';
import { collect, revisionOf, storeContract, summary } from './store.contract.js';
import { StoreUnavailableError, type Store } from './store.js';
import { startRelay } from '../test/harness/tcp-relay.js';

const available = etcdAvailable();
const skip = !available && !REQUIRE_ETCD;
if (skip) console.warn('etcd store tests skipped: no etcd binary on PATH (install etcd-server or set ETCD_BIN); with CI=true this fails instead');

describe.skipIf(skip)(`etcd store${skip ? ' (skipped: no etcd binary on PATH; install etcd-server or set ETCD_BIN; CI=true makes this a failure)' : ''}`, () => {
  let cluster: EtcdCluster;
  const stores: Store[] = [];
  const open = async (endpoints = cluster.endpoints) => {
    const s = await openEtcdStore(endpoints, { dialTimeoutMs: 3_000 });
    stores.push(s);
    return s;
  };

  beforeAll(async () => {
    if (!available) throw new Error('etcd binary not found, and CI=true requires the etcd store suite (install etcd-server)');
    cluster = await startEtcd();
  });
  afterAll(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()));
    await cluster?.stop();
  });

  storeContract('etcd', async () => {
    const store = await openEtcdStore(cluster.endpoints);
    return { store, cleanup: () => store.close() };
  });

  describe('faults', () => {
    afterEach(async () => {
      await Promise.all(stores.splice(0).map((s) => s.close()));
    });

    it('open fails fast with StoreUnavailableError when etcd is unreachable', async () => {
      const port = await closedPort();
      await expect(openEtcdStore([`127.0.0.1:${port}`], { dialTimeoutMs: 1_000 })).rejects.toBeInstanceOf(StoreUnavailableError);
    });

    it('etcd killed and restarted during a watch: no gap, no duplicate', async () => {
      const store = await open();
      const admin = await open();
      const from = (await store.get('/restart/')).revision + 1;
      const w = collect(store, '/restart/', from);
      for (let i = 0; i < 5; i++) await admin.put(`/restart/before-${i}`, String(i));
      await waitFor(() => w.events.length === 5, { what: 'events before the restart' });
      await cluster.kill();
      await waitFor(() => w.errors.length > 0, { what: 'the watch to report the outage', timeoutMs: 10_000 });
      await expect(store.put('/restart/down', 'x')).rejects.toBeInstanceOf(StoreUnavailableError);
      await cluster.restart();
      // Written as soon as etcd is back, likely before the watch has resumed: it must come as history, once.
      for (let i = 0; i < 5; i++) await retry(() => admin.put(`/restart/after-${i}`, String(i)));
      await waitFor(() => w.events.length >= 10, { what: 'events after the restart', timeoutMs: 20_000 });
      await admin.put('/restart/fence', 'f');
      await waitFor(() => w.events.some((e) => e.type === 'put' && e.kv.key === '/restart/fence'), { what: 'fence', timeoutMs: 10_000 });
      const truth = await admin.get('/restart/');
      expect(w.events.map(revisionOf)).toEqual(truth.kvs.map((kv) => kv.modRevision).sort((a, b) => a - b));
      expect(w.events.map(summary)).toEqual(truth.kvs.map((kv) => ({ type: 'put' as const, kv })).sort((a, b) => a.kv.modRevision - b.kv.modRevision).map(summary));
    }, 45_000);

    it('cut off while catching up on history: resumes after the last delivered event, not where etcd3 would', async () => {
      const proxy = await startRelay(Number(new URL(cluster.endpoints[0]).port));
      try {
        const store = await open([proxy.endpoint]);
        const admin = await open();
        const from = (await admin.get('/catchup/')).revision + 1;
        // More than etcd's 1,000 revisions per watch response, so the history comes in several responses.
        for (let i = 0; i < 1_500; i += 100) await Promise.all(Array.from({ length: 100 }, (_, j) => admin.put(`/catchup/${i + j}`, 'v')));
        const events: number[] = [];
        let cut = false;
        store.watch('/catchup/', from, {
          onEvents: (evs) => {
            events.push(...evs.map(revisionOf));
            // Cut right after the first response: the rest of the history has not been delivered yet.
            if (!cut) {
              cut = true;
              proxy.cut();
            }
          },
          onCompacted: () => undefined,
        });
        await waitFor(() => cut, { what: 'first history batch' });
        const firstBatch = events.length;
        proxy.heal();
        await waitFor(() => events.length >= 1_500, { what: 'the whole history', timeoutMs: 20_000 });
        const truth = (await admin.get('/catchup/')).kvs.map((kv) => kv.modRevision).sort((a, b) => a - b);
        expect(firstBatch).toBeLessThan(1_500);
        expect(events).toEqual(truth);
      } finally {
        await proxy.close();
      }
    }, 45_000);

    it('compaction while the watcher was cut off: onCompacted, then a re-read equals etcd', async () => {
      const proxy = await startRelay(Number(new URL(cluster.endpoints[0]).port));
      try {
        const store = await open([proxy.endpoint]);
        const admin = await open();
        const from = (await store.get('/cut/')).revision + 1;
        const w = collect(store, '/cut/', from);
        await admin.put('/cut/a', '1');
        await waitFor(() => w.events.length === 1, { what: 'first event' });
        proxy.cut();
        await waitFor(() => w.errors.length > 0, { what: 'the watch to notice the cut', timeoutMs: 10_000 });
        await admin.put('/cut/a', '2');
        await admin.put('/cut/b', '3');
        await admin.delete('/cut/a');
        const rev = await admin.put('/cut/c', '4');
        await admin.compact(rev);
        proxy.heal();
        await waitFor(() => w.compacted !== undefined, { what: 'onCompacted after healing', timeoutMs: 20_000 });
        expect(w.compacted).toBeGreaterThanOrEqual(rev);
        expect(w.events).toHaveLength(1);
        const reread = await store.get('/cut/');
        expect(reread.kvs).toEqual((await admin.get('/cut/')).kvs);
        expect(reread.kvs.map((kv) => kv.value)).toEqual(['3', '4']);
        const again = collect(store, '/cut/', reread.revision + 1);
        const next = await admin.put('/cut/d', '5');
        await waitFor(() => again.events.length === 1, { what: 'event after the re-watch' });
        expect(again.events.map(summary)).toEqual([`put /cut/d=5 @${next}`]);
        again.handle.close();
      } finally {
        await proxy.close();
      }
    }, 45_000);
  });

  describe('three members', () => {
    it('a store given every endpoint keeps reading, writing and watching with one member down', async () => {
      const three = await startEtcd({ members: 3 });
      try {
        const store = await openEtcdStore(three.endpoints);
        try {
          const w = collect(store, '/ha/', (await store.get('/ha/')).revision + 1);
          await store.put('/ha/a', '1');
          await three.kill(1);
          await retry(() => store.put('/ha/b', '2'));
          await three.kill(0);
          await three.restart(1);
          await retry(() => store.put('/ha/c', '3'));
          await three.restart(0);
          expect((await store.get('/ha/')).kvs.map((kv) => kv.value)).toEqual(['1', '2', '3']);
          await waitFor(() => w.events.length === 3, { what: 'three events across member failures', timeoutMs: 20_000 });
          expect(w.events.map((e) => (e.type === 'put' ? e.kv.value : ''))).toEqual(['1', '2', '3']);
        } finally {
          await store.close();
        }
      } finally {
        await three.stop();
      }
    }, 60_000);
  });
});

async function retry<T>(fn: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  let result: T | undefined;
  await waitFor(
    async () => {
      result = await fn();
      return true;
    },
    { timeoutMs, intervalMs: 100, what: 'a write to succeed' },
  );
  return result as T;
}

async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}
