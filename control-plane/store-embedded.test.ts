// The embedded store: the shared Store contract on fake time, plus what only it has: a disk that survives restarts and crashes, and group commit.
import { appendFile, copyFile, mkdtemp, open as openFile, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { waitFor } from '../test/harness/wait.js';
import { openEmbeddedStore } from './store-embedded.js';
import { collect, storeContract, summary } from './store.contract.js';
import { LeaseLostError, StoreUnavailableError, type Store } from './store.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-store-'));
  dirs.push(dir);
  return dir;
}
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

storeContract('embedded', async () => {
  const dir = await tempDir();
  const clock = new FakeClock();
  const store = await openEmbeddedStore(dir, { clock });
  return { store, cleanup: () => store.close(), advance: (ms) => clock.advance(ms) };
});

describe('embedded store on disk', () => {
  const open: Store[] = [];
  const openStore = async (dir: string, opts: Parameters<typeof openEmbeddedStore>[1] = {}) => {
    const s = await openEmbeddedStore(dir, opts);
    open.push(s);
    return s;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it('state and revision survive a reopen, through snapshots and the log', async () => {
    const dir = await tempDir();
    const a = await openStore(dir, { snapshotEvery: 4 });
    for (let i = 0; i < 10; i++) await a.put(`/k/${i % 3}`, `v${i}`);
    await a.txn([], [{ type: 'delete', key: '/k/0' }, { type: 'put', key: '/k/9', value: 'nine' }]);
    const before = await a.get('');
    await a.close();
    const b = await openStore(dir);
    expect(await b.get('')).toEqual(before);
    expect(await b.put('/k/x', 'x')).toBe(before.revision + 1);
  });

  it('a crash (disk as it was, no close) loses no committed write', async () => {
    const dir = await tempDir();
    const a = await openStore(dir, { snapshotEvery: 4 });
    for (let i = 0; i < 6; i++) await a.put(`/k/${i}`, `v${i}`);
    const before = await a.get('');
    const crashed = await copyStoreFiles(dir, await tempDir());
    const b = await openStore(crashed);
    expect(await b.get('')).toEqual(before);
  });

  it('a torn last log line is ignored and cut off, and later writes append cleanly', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    await a.put('/a', '1');
    await a.put('/b', '2');
    const before = await a.get('');
    const crashed = await copyStoreFiles(dir, await tempDir());
    await appendFile(path.join(crashed, 'store.log'), '{"rev":99,"ops":[{"put":"/torn","val');
    const b = await openEmbeddedStore(crashed);
    expect(await b.get('')).toEqual(before);
    const rev = await b.put('/c', '3');
    expect(rev).toBe(before.revision + 1);
    // Crash again after the repair: the appended record must have landed on its own line.
    const again = await copyStoreFiles(crashed, await tempDir());
    await b.close();
    const c = await openStore(again);
    expect((await c.get('')).kvs.map((kv) => kv.key)).toEqual(['/a', '/b', '/c']);
  });

  it('a corrupt line followed by valid records refuses to open rather than guess', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    await a.put('/a', '1');
    await a.put('/b', '2');
    const crashed = await copyStoreFiles(dir, await tempDir());
    const log = path.join(crashed, 'store.log');
    const lines = (await readFile(log, 'utf8')).split('\n');
    await writeFile(log, ['garbage', ...lines].join('\n'));
    await expect(openEmbeddedStore(crashed)).rejects.toThrow(/line 1 is corrupt/);
  });

  it('lease keys are gone after a reopen, deleted in one new revision', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    const lease = await a.grantLease(60_000);
    await a.put('/svc/e1', 'x', { lease: lease.id });
    await a.put('/svc/e2', 'y', { lease: lease.id });
    await a.put('/svc/static', 'z');
    const { revision } = await a.get('');
    await a.close();
    const b = await openStore(dir);
    const after = await b.get('');
    expect(after.kvs.map((kv) => kv.key)).toEqual(['/svc/static']);
    expect(after.revision).toBe(revision + 1);
  });

  it('close reports held leases lost; a second open of the same dir is refused', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    await expect(openEmbeddedStore(dir)).rejects.toThrow(/already open/);
    const lease = await a.grantLease(60_000);
    let lost = 0;
    lease.onLost(() => lost++);
    await a.close();
    await waitFor(() => lost === 1, { what: 'onLost on close' });
    await expect(a.put('/x', '1')).rejects.toThrow(/closed/);
  });

  it('history is bounded: a watch further back than historyLimit gets onCompacted', async () => {
    const dir = await tempDir();
    const a = await openStore(dir, { historyLimit: 3 });
    const first = await a.put('/k', '0');
    for (let i = 1; i < 6; i++) await a.put('/k', String(i));
    const old = collect(a, '/', first);
    const recent = collect(a, '/', first + 3);
    await waitFor(() => old.compacted !== undefined && recent.events.length === 3, { what: 'compacted and recent watches' });
    expect(recent.events.map(summary)).toEqual([3, 4, 5].map((i) => `put /k=${i} @${first + i}`));
  });

  it('history before the last snapshot counts as compacted after a reopen', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    const first = await a.put('/k', '0');
    await a.close();
    const b = await openStore(dir);
    const w = collect(b, '/', first);
    await waitFor(() => w.compacted !== undefined, { what: 'onCompacted after reopen' });
  });
});

describe('embedded store group commit', () => {
  const open: Store[] = [];
  const openStore = async (dir: string, opts: Parameters<typeof openEmbeddedStore>[1] = {}) => {
    const s = await openEmbeddedStore(dir, opts);
    open.push(s);
    return s;
  };
  afterEach(async () => {
    vi.restoreAllMocks();
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  it('N concurrent puts share one datasync, take contiguous revisions in submission order, and survive a crash', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    const start = (await a.get('')).revision + 1;
    const watch = collect(a, '/k/', start);
    const datasync = vi.spyOn(await fileHandleProto(), 'datasync');
    const n = 500;
    const revs = await Promise.all(Array.from({ length: n }, (_, i) => a.put(`/k/${i}`, `v${i}`)));
    expect(datasync.mock.calls.length).toBeLessThanOrEqual(2);
    expect(revs).toEqual(revs.map((_, i) => start + i));
    await waitFor(() => watch.events.length === n, { what: 'all puts watched' });
    expect(watch.events.map(summary)).toEqual(revs.map((rev, i) => `put /k/${i}=v${i} @${rev}`));
    const before = await a.get('');
    const b = await openStore(await copyStoreFiles(dir, await tempDir()));
    expect(await b.get('')).toEqual(before);
  });

  it('writes arriving while an fsync is in flight are invisible until it ends, then share the next fsync', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    const { revision } = await a.get('');
    const proto = await fileHandleProto();
    const real = proto.datasync;
    let release = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const datasync = vi.spyOn(proto, 'datasync').mockImplementationOnce(async function (this: FileHandle) {
      await gate;
      return real.call(this);
    });
    const first = a.put('/first', '0');
    await waitFor(() => datasync.mock.calls.length === 1, { what: 'the first fsync in flight' });
    const rest = Array.from({ length: 50 }, (_, i) => a.put(`/k/${i}`, String(i)));
    // Nothing is committed before its fsync: readers still see the revision from before the first put.
    expect((await a.get('')).revision).toBe(revision);
    release();
    const revs = await Promise.all([first, ...rest]);
    expect(datasync).toHaveBeenCalledTimes(2);
    expect(revs).toEqual(revs.map((_, i) => revision + 1 + i));
  });

  it('a write decided in a batch sees every write submitted before it', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    const r0 = (await a.get('')).revision;
    const [put, absent, present, del, noop, after] = await Promise.all([
      a.put('/a', '1'),
      a.txn([{ key: '/a', modRevision: 0 }], [{ type: 'put', key: '/a', value: 'lost' }]),
      a.txn([{ key: '/a', modRevision: r0 + 1 }], [{ type: 'put', key: '/a', value: '2' }]),
      a.delete('/a'),
      a.delete('/a'),
      a.put('/b', '3'),
    ]);
    expect([put, absent, present, del, noop, after]).toEqual([
      r0 + 1,
      { succeeded: false, revision: r0 + 1 },
      { succeeded: true, revision: r0 + 2 },
      r0 + 3,
      r0 + 3,
      r0 + 4,
    ]);
    expect((await a.get('')).kvs.map((kv) => `${kv.key}=${kv.value}`)).toEqual(['/b=3']);
  });

  it('a lease that expires in a batch deletes only the keys still its own then, and refuses later puts', async () => {
    const dir = await tempDir();
    const clock = new FakeClock();
    const a = await openStore(dir, { clock });
    const lease = await a.grantLease(1_000, { keepAlive: false });
    let lost = 0;
    lease.onLost(() => lost++);
    await a.put('/l/1', 'leased', { lease: lease.id });
    await a.put('/l/2', 'leased', { lease: lease.id });
    const replaced = a.put('/l/1', 'plain');
    clock.advance(1_000);
    const late = a.put('/l/3', 'leased', { lease: lease.id });
    await replaced;
    await expect(late).rejects.toBeInstanceOf(LeaseLostError);
    await waitFor(() => lost === 1, { what: 'onLost after expiry' });
    expect((await a.get('/l/')).kvs.map((kv) => `${kv.key}=${kv.value}`)).toEqual(['/l/1=plain']);
  });

  it('a failed fsync rejects every write of its batch, leaves memory at the last commit, and refuses later writes', async () => {
    const dir = await tempDir();
    const a = await openStore(dir);
    await a.put('/ok', '1');
    const before = await a.get('');
    vi.spyOn(await fileHandleProto(), 'datasync').mockRejectedValueOnce(new Error('EIO: i/o error, fdatasync'));
    const batch = [a.put('/x', '1'), a.txn([], [{ type: 'put', key: '/y', value: '2' }]), a.delete('/ok'), a.delete('/missing')];
    const settled = await Promise.allSettled(batch);
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      const reason = (s as PromiseRejectedResult).reason as Error;
      expect(reason).toBeInstanceOf(StoreUnavailableError);
      expect(reason.message).toMatch(/write failed: EIO/);
    }
    expect(await a.get('')).toEqual(before);
    await expect(a.put('/z', '3')).rejects.toThrow(/write failed earlier; reopen it/);
  });

  it('a snapshot due after a batch runs between flushes: the new log holds only later writes', async () => {
    const dir = await tempDir();
    const a = await openStore(dir, { snapshotEvery: 10 });
    await Promise.all(Array.from({ length: 25 }, (_, i) => a.put(`/k/${i}`, String(i))));
    for (let i = 25; i < 28; i++) await a.put(`/k/${i}`, String(i));
    const log = (await readFile(path.join(dir, 'store.log'), 'utf8')).trim().split('\n');
    expect(log.map((line) => (JSON.parse(line) as { ops: { put: string }[] }).ops[0].put)).toEqual(['/k/25', '/k/26', '/k/27']);
    const before = await a.get('');
    const b = await openStore(await copyStoreFiles(dir, await tempDir()));
    expect(await b.get('')).toEqual(before);
  });
});

/** FileHandle's prototype, to count or fail the log's datasync calls (snapshots use sync, not datasync). */
async function fileHandleProto(): Promise<FileHandle> {
  const fh = await openFile(os.devNull, 'r');
  await fh.close();
  return Object.getPrototypeOf(fh) as FileHandle;
}

/** A copy of the store's files as a crash would leave them: everything acknowledged is on disk; no lock holder. */
async function copyStoreFiles(from: string, to: string): Promise<string> {
  for (const f of ['store.log', 'store.snapshot.json']) {
    await copyFile(path.join(from, f), path.join(to, f)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  return to;
}
