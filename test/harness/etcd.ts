// Test harness: runs real `etcd` members on free loopback ports in a temp dir, so the store contract runs against the real thing.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../cli/ports.js';
import { which } from '../../cli/which.js';
import { withDeadline } from './wait.js';

/** Under CI a missing etcd fails the suite; on a developer machine it is skipped with a reason. */
export const REQUIRE_ETCD = process.env.CI === 'true';

const START_DEADLINE_MS = 20_000;

export interface EtcdCluster {
  /** Client URLs, one per member ("http://127.0.0.1:PORT"). */
  readonly endpoints: string[];
  /** The temp dir holding every member's data dir and log; removed by stop(). */
  readonly dataDir: string;
  /** Stops every member and removes the data dir. Safe to call twice. */
  stop(): Promise<void>;
  /** SIGKILLs one member (default 0) and waits for it to exit. */
  kill(memberIndex?: number): Promise<void>;
  /** Starts a killed member again on the same ports and data and waits until it is healthy. */
  restart(memberIndex?: number): Promise<void>;
}

/** The etcd binary: $ETCD_BIN, else the first `etcd` on PATH (Debian's etcd-server installs /usr/bin/etcd). */
export function etcdBinary(): string | undefined {
  return which('etcd', process.env.ETCD_BIN);
}

export function etcdAvailable(): boolean {
  return etcdBinary() !== undefined;
}



interface Member {
  name: string;
  clientPort: number;
  peerPort: number;
  dir: string;
  logFile: string;
  proc?: ChildProcess;
  exited?: Promise<void>;
}

export async function startEtcd(opts: { members?: 1 | 3 } = {}): Promise<EtcdCluster> {
  const bin = etcdBinary();
  if (!bin) throw new Error('etcd binary not found (install etcd-server or set ETCD_BIN)');
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'trellis-etcd-'));
  // A port grabbed by someone else between probe and bind shows up as a failed start; pick fresh ports and try again.
  for (let attempt = 1; ; attempt++) {
    const members = await planMembers(dataDir, opts.members ?? 1, attempt);
    try {
      await Promise.all(members.map((m) => launch(bin, m, members)));
      await Promise.all(members.map((m) => waitHealthy(m)));
      return makeCluster(bin, members, dataDir);
    } catch (err) {
      await Promise.all(members.map((m) => killMember(m)));
      if (attempt >= 3) {
        await rm(dataDir, { recursive: true, force: true });
        throw err;
      }
    }
  }
}

async function planMembers(dataDir: string, count: number, attempt: number): Promise<Member[]> {
  const members: Member[] = [];
  for (let i = 0; i < count; i++) {
    const name = `m${i}-a${attempt}`;
    members.push({ name, clientPort: await freePort(), peerPort: await freePort(), dir: path.join(dataDir, name), logFile: path.join(dataDir, `${name}.log`) });
  }
  return members;
}

function makeCluster(bin: string, members: Member[], dataDir: string): EtcdCluster {
  const onExit = () => members.forEach((m) => m.proc?.kill('SIGKILL'));
  // A crashed test process must not leave etcd members running.
  process.once('exit', onExit);
  let stopped = false;
  const member = (i = 0): Member => {
    const m = members[i];
    if (!m) throw new RangeError(`no etcd member ${i} (cluster has ${members.length})`);
    return m;
  };
  return {
    endpoints: members.map((m) => `http://127.0.0.1:${m.clientPort}`),
    dataDir,
    async stop() {
      if (stopped) return;
      stopped = true;
      process.off('exit', onExit);
      await Promise.all(members.map((m) => killMember(m, 'SIGTERM')));
      await rm(dataDir, { recursive: true, force: true });
    },
    async kill(i) {
      await killMember(member(i));
    },
    async restart(i) {
      const m = member(i);
      if (m.proc) throw new Error(`etcd member ${m.name} is still running; kill it first`);
      await launch(bin, m, members, 'existing');
      await waitHealthy(m);
    },
  };
}

function launch(bin: string, m: Member, all: Member[], state: 'new' | 'existing' = 'new'): Promise<void> {
  const url = (port: number) => `http://127.0.0.1:${port}`;
  const args = [
    `--name=${m.name}`,
    `--data-dir=${m.dir}`,
    `--listen-client-urls=${url(m.clientPort)}`,
    `--advertise-client-urls=${url(m.clientPort)}`,
    `--listen-peer-urls=${url(m.peerPort)}`,
    `--initial-advertise-peer-urls=${url(m.peerPort)}`,
    `--initial-cluster=${all.map((x) => `${x.name}=${url(x.peerPort)}`).join(',')}`,
    `--initial-cluster-state=${state}`,
    `--initial-cluster-token=${path.basename(path.dirname(m.dir))}`,
    '--logger=zap',
    '--log-outputs=stderr',
  ];
  const fd = openSync(m.logFile, 'a');
  try {
    // etcd reads ETCD_* variables as flags; a developer's own settings must not leak into the test cluster.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ETCD_') || k === 'ETCD_UNSUPPORTED_ARCH'));
    const proc = spawn(bin, args, { stdio: ['ignore', fd, fd], env });
    m.proc = proc;
    m.exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    void m.exited.then(() => {
      if (m.proc === proc) m.proc = undefined;
    });
    return new Promise((resolve, reject) => {
      proc.once('spawn', () => resolve());
      proc.once('error', reject);
    });
  } finally {
    closeSync(fd);
  }
}

/** Healthy = GET /health says true, which in etcd 3.4 means a leader exists and a read went through raft. */
async function waitHealthy(m: Member): Promise<void> {
  const deadline = Date.now() + START_DEADLINE_MS;
  let last = '';
  while (Date.now() < deadline) {
    if (!m.proc) throw new Error(`etcd member ${m.name} exited during start: ${logTail(m)}`);
    try {
      const res = await withDeadline(fetch(`http://127.0.0.1:${m.clientPort}/health`), 1_000, 'etcd /health');
      last = await res.text();
      if (res.ok && /"health":\s*"true"/.test(last)) return;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`etcd member ${m.name} not healthy after ${START_DEADLINE_MS}ms (last: ${last}): ${logTail(m)}`);
}

async function killMember(m: Member, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  const proc = m.proc;
  if (!proc) return;
  proc.kill(signal);
  const exited = m.exited ?? Promise.resolve();
  try {
    await withDeadline(exited, 5_000, `etcd member ${m.name} exit`);
  } catch {
    proc.kill('SIGKILL');
    await exited;
  }
  m.proc = undefined;
}

function logTail(m: Member): string {
  try {
    return readFileSync(m.logFile, 'utf8').split('\n').slice(-8).join('\n');
  } catch {
    return '(no log)';
  }
}
