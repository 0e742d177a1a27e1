// The embedded store's durability: an fsync'd JSON-lines log of committed writes, a snapshot replacing it (temp + fsync + rename), a directory lock.
import { constants, readFileSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { KeyValue } from './store.js';

/** One op of a committed write, as logged. `lease` is kept so that a reopen can drop keys whose holders are gone. */
export type LogOp = { readonly put: string; readonly value: string; readonly lease?: string } | { readonly del: string };

/** A log line: a write committed at `rev`, or a compaction. */
export type LogRecord = { readonly rev: number; readonly ops: readonly LogOp[] } | { readonly compact: number };

export interface SnapshotFile {
  readonly format: 1;
  readonly revision: number;
  readonly compactRevision: number;
  readonly kvs: readonly KeyValue[];
}

export interface Loaded {
  readonly snapshot?: SnapshotFile;
  /** Records after the snapshot, in order; a torn last line has already been dropped. */
  readonly records: readonly LogRecord[];
  /** Set when an incomplete last line (a crash mid-append) was found and cut off. */
  readonly tornTailBytes: number;
}

const LOG = 'store.log';
const SNAPSHOT = 'store.snapshot.json';
const LOCK = 'store.lock';

export class StoreDisk {
  private constructor(
    private readonly dir: string,
    private log: FileHandle,
  ) {}

  /** Takes the directory's lock, reads snapshot and log, and cuts a torn tail so later appends start on a clean line. */
  static async open(dir: string): Promise<{ disk: StoreDisk; loaded: Loaded }> {
    await mkdir(dir, { recursive: true });
    await takeLock(dir);
    try {
      const snapshot = await readSnapshot(path.join(dir, SNAPSHOT));
      const { records, goodBytes, tornTailBytes } = await readLog(path.join(dir, LOG), snapshot?.revision ?? 0);
      if (tornTailBytes > 0) await truncate(path.join(dir, LOG), goodBytes);
      const log = await open(path.join(dir, LOG), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
      return { disk: new StoreDisk(dir, log), loaded: { snapshot, records, tornTailBytes } };
    } catch (err) {
      await rm(path.join(dir, LOCK), { force: true });
      throw err;
    }
  }

  /**
   * Resolves once the records are on disk: they are committed only then. One line per record, all in one write and one
   * datasync, so a batch of writes costs one fsync; a crash tears at most the tail of the last batch, none of it acknowledged.
   */
  async append(records: readonly LogRecord[]): Promise<void> {
    const buf = Buffer.from(records.map((r) => JSON.stringify(r) + '\n').join(''));
    // write(2) may write less than asked (a large batch, a signal); the rest must follow, or the line would be torn.
    for (let off = 0; off < buf.length; ) {
      const { bytesWritten } = await this.log.write(buf, off, buf.length - off);
      if (bytesWritten <= 0) throw new Error(`store log: write made no progress at byte ${off} of ${buf.length}`);
      off += bytesWritten;
    }
    await this.log.datasync();
  }

  /** Replaces the log with a snapshot. A crash between the two renames leaves log records the snapshot covers; replay skips them. */
  async writeSnapshot(snapshot: SnapshotFile): Promise<void> {
    await writeAtomic(this.dir, SNAPSHOT, JSON.stringify(snapshot));
    await writeAtomic(this.dir, LOG, '');
    await this.log.close();
    this.log = await open(path.join(this.dir, LOG), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o600);
  }

  async close(): Promise<void> {
    await this.log.close().catch(() => undefined);
    await rm(path.join(this.dir, LOCK), { force: true });
  }
}

async function takeLock(dir: string): Promise<void> {
  const file = path.join(dir, LOCK);
  try {
    await writeFile(file, String(process.pid), { flag: 'wx', mode: 0o600 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
  if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
    throw new Error(`store in ${dir} is in use by process ${pid} (remove ${file} if that is wrong)`);
  }
  if (pid === process.pid) throw new Error(`store in ${dir} is already open in this process`);
  // The holder is gone (a crash): the lock is stale.
  await writeFile(file, String(process.pid), { mode: 0o600 });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A holder that died and was not yet reaped (its parent died too, and PID 1 is slow to reap) is a zombie: it answers
  // kill(0) but holds nothing. Seen when `mesh up` was SIGKILLed and started again at once.
  try {
    return !/^\d+ \(.*\) Z /s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function readSnapshot(file: string): Promise<SnapshotFile | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const snap = JSON.parse(text) as SnapshotFile;
  if (snap.format !== 1 || !Number.isInteger(snap.revision) || !Array.isArray(snap.kvs)) {
    throw new Error(`store snapshot ${file}: unknown format`);
  }
  return snap;
}

/**
 * A line that does not parse is tolerated only at the end (an append cut short by a crash, or zero-filled blocks
 * after one); anywhere else it is corruption, and guessing would silently lose committed writes.
 */
async function readLog(file: string, afterRevision: number): Promise<{ records: LogRecord[]; goodBytes: number; tornTailBytes: number }> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], goodBytes: 0, tornTailBytes: 0 };
    throw err;
  }
  const records: LogRecord[] = [];
  let offset = 0;
  let goodBytes = 0;
  let badLine: number | undefined;
  let lineNo = 0;
  while (offset < buf.length) {
    const nl = buf.indexOf(0x0a, offset);
    const end = nl < 0 ? buf.length : nl + 1;
    lineNo++;
    const record = nl < 0 ? undefined : parseRecord(buf.subarray(offset, nl).toString('utf8'));
    if (record === undefined) {
      badLine ??= lineNo;
    } else {
      if (badLine !== undefined) throw new Error(`store log ${file}: line ${badLine} is corrupt and is followed by valid records`);
      if (!('rev' in record) || record.rev > afterRevision) records.push(record);
      goodBytes = end;
    }
    offset = end;
  }
  return { records, goodBytes, tornTailBytes: buf.length - goodBytes };
}

function parseRecord(line: string): LogRecord | undefined {
  try {
    const r = JSON.parse(line) as LogRecord;
    if ('rev' in r && Number.isInteger(r.rev) && Array.isArray(r.ops)) return r;
    if ('compact' in r && Number.isInteger(r.compact)) return r;
  } catch {
    // fall through: not a record
  }
  return undefined;
}

async function writeAtomic(dir: string, name: string, text: string): Promise<void> {
  const tmp = path.join(dir, `${name}.tmp`);
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path.join(dir, name));
  // The rename itself must be durable before the old file's contents can be forgotten.
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
