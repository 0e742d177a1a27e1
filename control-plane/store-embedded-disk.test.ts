// The embedded store's log: a batch of records is one write and one datasync, and reads back whole even when write(2) comes up short.
import { mkdtemp, open as openFile, readFile, rm, type FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { StoreDisk, type LogRecord } from './store-embedded-disk.js';

const dirs: string[] = [];
const disks: StoreDisk[] = [];
async function openDisk(): Promise<{ dir: string; disk: StoreDisk }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-disk-'));
  dirs.push(dir);
  const { disk } = await StoreDisk.open(dir);
  disks.push(disk);
  return { dir, disk };
}
afterEach(async () => {
  vi.restoreAllMocks();
  await Promise.all(disks.splice(0).map((d) => d.close()));
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

/** FileHandle's prototype, where write and datasync live, to count or cut short the log's calls. */
async function fileHandleProto(): Promise<FileHandle> {
  const fh = await openFile(os.devNull, 'r');
  await fh.close();
  return Object.getPrototypeOf(fh) as FileHandle;
}

const batch = (from: number, n: number): LogRecord[] =>
  Array.from({ length: n }, (_, i) => ({ rev: from + i, ops: [{ put: `/k/${from + i}`, value: 'x'.repeat(i % 7) }] }));

describe('embedded store log', () => {
  it('append writes a batch with one write and one datasync, and a reopen reads every record back in order', async () => {
    const { dir, disk } = await openDisk();
    const proto = await fileHandleProto();
    const write = vi.spyOn(proto, 'write');
    const datasync = vi.spyOn(proto, 'datasync');
    const records = [...batch(2, 300), { compact: 100 }];
    await disk.append(records);
    expect(write).toHaveBeenCalledTimes(1);
    expect(datasync).toHaveBeenCalledTimes(1);
    await disk.close();
    disks.splice(0);
    const { disk: again, loaded } = await StoreDisk.open(dir);
    disks.push(again);
    expect(loaded.records).toEqual(records);
    expect(loaded.tornTailBytes).toBe(0);
  });

  it('a short write is continued until the whole batch is written, before the datasync', async () => {
    const { dir, disk } = await openDisk();
    const proto = await fileHandleProto();
    const real = proto.write as (buf: Buffer, off: number, len: number) => Promise<{ bytesWritten: number }>;
    const order: string[] = [];
    vi.spyOn(proto, 'write').mockImplementation(function (this: FileHandle, buf: Buffer, off: number, len: number) {
      order.push('write');
      // Never more than 1 KiB at a time, as write(2) may do: the rest must follow on the same line.
      return real.call(this, buf, off, Math.min(len, 1024));
    } as never);
    vi.spyOn(proto, 'datasync').mockImplementation(function (this: FileHandle) {
      order.push('datasync');
      return Promise.resolve();
    });
    const records = batch(2, 200);
    await disk.append(records);
    const text = await readFile(path.join(dir, 'store.log'), 'utf8');
    expect(order.length).toBeGreaterThan(2);
    expect(order.at(-1)).toBe('datasync');
    expect(order.filter((c) => c === 'datasync')).toHaveLength(1);
    expect(text).toBe(records.map((r) => JSON.stringify(r) + '\n').join(''));
  });
});
