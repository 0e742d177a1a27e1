// The embedded store: the shared Store contract on fake time, plus what only it has: a disk that survives restarts and crashes.
import { appendFile, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { waitFor } from '../test/harness/wait.js';
import { openEmbeddedStore } from './store-embedded.js';
import { collect, storeContract, summary } from './store.contract.js';
import type { Store } from './store.js';

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

/** A copy of the store's files as a crash would leave them: everything acknowledged is on disk; no lock holder. */
async function copyStoreFiles(from: string, to: string): Promise<string> {
  for (const f of ['store.log', 'store.snapshot.json']) {
    await copyFile(path.join(from, f), path.join(to, f)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  return to;
}
