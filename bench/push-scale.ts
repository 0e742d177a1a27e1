// Control-plane push at scale (DESIGN.md §7, issue 5): N simulated sidecars on Discover streams, one `mesh apply` of a weight
// change, and the time until each of them has the new snapshot and ACKed it. `npm run bench:push [-- --sizes 100,1000,10000]`.
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { call, createMeshClient } from '../api/cp-client.js';
import type { ApplyResponse } from '../api/protocol.js';
import type { SimCommand, SimEvent } from './push-sim.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** dist/ when compiled (dist/bench/push-scale.js), the package root's dist/ otherwise. */
const DIST = path.basename(path.dirname(HERE)) === 'dist' ? path.dirname(HERE) : path.join(path.dirname(HERE), 'dist');
const MAIN = path.join(DIST, 'cli', 'main.js');
const SIM = path.join(DIST, 'bench', 'push-sim.js');

/** Issue 5's targets for the p99 push latency; sizes without one are reported as "—". */
export const TARGET_P99_MS: Readonly<Record<number, number>> = { 1000: 500, 10000: 5000 };

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const round = (x: number, d = 1): number => (Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : x);

export interface ProfileFrame { readonly selfMs: number; readonly pct: number; readonly frame: string }

/** One poll of the control plane during the connect phase. */
export interface TimelinePoint {
  /** ms since the simulator was started */
  readonly t: number;
  /** Streams that had sent Hello (/status sidecars). */
  readonly connected: number;
  /** Store revision minus the revision before anyone connected: registry writes so far. */
  readonly registered: number;
  readonly cpCpuSec: number;
}

export interface PushRun {
  readonly n: number;
  /** The machine's 1-minute load average at the start and end of this size (other work on a shared machine skews every figure). */
  readonly loadAvg: [number, number];
  readonly channels: number;
  readonly connect: {
    /** From starting the simulator until every simulated sidecar had its first snapshot. */
    readonly allFirstSnapshotMs: number;
    /** Registry writes done when every sidecar had its first snapshot. */
    readonly registeredAtAllFirst: number;
    /** From starting the simulator until the store revision showed all N registry writes; polled, so up to 500 ms late. */
    readonly registeredMs: number;
    /** Registry writes per second between all first snapshots and all registered. */
    readonly registrationsPerSecAfterConnect: number;
    readonly cpCpuSec: number;
    readonly simCpuSec: number;
    readonly timeline: TimelinePoint[];
  };
  readonly push: {
    readonly fromVersion: string;
    readonly version: number;
    readonly applyRpcMs: number;
    readonly acked: number;
    readonly missing: number;
    readonly minMs: number;
    readonly p50Ms: number;
    readonly p90Ms: number;
    readonly p99Ms: number;
    readonly maxMs: number;
    /** Apply sent → the last simulated sidecar received (and ACKed) the new snapshot. */
    readonly allAckedMs: number;
    /** Apply sent → /status first showed every sidecar inSync at the new version (polled after allAcked; an upper bound). */
    readonly statusInSyncMs: number;
    readonly statusSidecars: number;
    readonly statusInSync: number;
    /** Snapshots received after the first one, over all streams (N means exactly one push each). */
    readonly extraSnapshots: number;
    readonly weightsSeen: string;
    /** Control-plane CPU from Apply until /status showed all in sync. */
    readonly cpCpuSec: number;
    /** Simulator CPU from its 'await' (just after the Apply returned) until the last sidecar had the new snapshot. */
    readonly simCpuSec: number;
  };
  readonly cp: {
    readonly peakRssMb: number;
    readonly rssMb: number;
    readonly cpuSec: number;
    /** Log events by name, up to the end of the push (shutdown excluded). */
    readonly events: Record<string, number>;
    readonly warnings: string[];
  };
  readonly disconnect: {
    /** Every stream cancelled at once → /status lists no sidecar. */
    readonly goneMs: number;
    /** … → the store shows N registry deletes (each closed stream deletes its key). NaN if not within the timeout. */
    readonly deregisteredMs: number;
    readonly deletedWithinTimeout: number;
    /** SIGTERM → exit, after the disconnect. */
    readonly stopMs: number;
    readonly stopClean: boolean;
  };
  readonly sim: { readonly cpuSec: number; readonly peakRssMb: number; readonly errors: number; readonly errorSamples: string[] };
  readonly targetP99Ms: number | undefined;
  readonly targetMet: boolean | undefined;
  readonly profile?: {
    readonly file: string;
    readonly connectBusyMs: number;
    readonly pushBusyMs: number;
    /** Control-plane busy (non-idle) ms per 50 ms after the Apply was sent: when it was working on the push. */
    readonly pushBusyPer50Ms: number[];
    readonly connect: ProfileFrame[];
    readonly push: ProfileFrame[];
    readonly disconnectBusyMs: number;
    readonly disconnect: ProfileFrame[];
  };
  readonly error?: string;
}

export interface PushResults {
  readonly generatedAt: string;
  readonly machine: { readonly cpus: number; readonly cpuModel: string; readonly memGb: number; readonly node: string };
  /** git HEAD of the code measured, and whether control-plane/ or api/ differ from it. */
  readonly commit: string;
  readonly perChannel: number;
  /** true: the change was applied while registry writes were still in progress (--apply-during-registration). */
  readonly applyDuringRegistration: boolean;
  readonly runs: PushRun[];
}

// ---------------------------------------------------------------- base config and the change

function config(v1Weight: number): string {
  const v2Weight = 100 - v1Weight;
  return `apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
spec: { protocol: http }
---
apiVersion: mesh/v1
kind: Endpoints
metadata: { name: billing }
spec:
  service: billing
  endpoints:
    - { address: 127.0.0.1:9001, labels: { version: v1 } }
    - { address: 127.0.0.1:9002, labels: { version: v2 } }
---
apiVersion: mesh/v1
kind: TrafficPolicy
metadata: { name: billing }
spec:
  service: billing
  subsets: [ { name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } } ]
  tls: { mode: disable }
---
apiVersion: mesh/v1
kind: Route
metadata: { name: billing }
spec:
  hosts: [billing]
  rules:
    - backends:
        - { service: billing, subset: v1, weight: ${v1Weight} }
        - { service: billing, subset: v2, weight: ${v2Weight} }
`;
}

// ---------------------------------------------------------------- /proc sampling

interface ProcSample { readonly cpuSec: number; readonly rssKb: number; readonly hwmKb: number }
const CLK_TCK = 100;

async function procSample(pid: number): Promise<ProcSample> {
  const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile(`/proc/${pid}/status`, 'utf8')]);
  // Fields after the command name (which may contain spaces) start at ") ": utime and stime are fields 14 and 15.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSec = (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { cpuSec, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

// ---------------------------------------------------------------- the control plane process

interface ControlPlaneProc {
  readonly child: ChildProcess;
  readonly grpc: string;
  readonly http: string;
  /** Its stderr (one JSON line per event), written to a file so that the harness's own event loop cannot slow its writes. */
  readonly logFile: string;
  exited: Promise<number | null>;
}

interface LogLine { time?: string; level?: string; event?: string; grpc?: string; http?: string }

function parseLog(text: string): { lines: LogLine[]; raw: string[] } {
  const lines: LogLine[] = [];
  const raw: string[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      lines.push(JSON.parse(line) as LogLine);
      raw.push(line);
    } catch {
      lines.push({ level: 'error', event: line.slice(0, 300) });
      raw.push(line);
    }
  }
  return { lines, raw };
}

async function startControlPlane(dir: string, profileDir: string | undefined): Promise<ControlPlaneProc> {
  const nodeArgs = profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  const logFile = path.join(dir, 'control-plane.log');
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [...LONG_RUNNING_NODE_FLAGS, ...nodeArgs, MAIN, 'control-plane', '--dir', dir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'], {
    stdio: ['ignore', 'ignore', fd],
  });
  closeSync(fd);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (const deadline = Date.now() + 30_000; Date.now() < deadline;) {
    const { lines } = parseLog(await readFile(logFile, 'utf8'));
    const l = lines.find((x) => x.event === 'listening' && x.grpc && x.http);
    if (l) return { child, grpc: l.grpc as string, http: l.http as string, logFile, exited };
    if (child.exitCode !== null) throw new Error(`control plane exited with ${child.exitCode} before listening: ${lines.map((x) => x.event).join(', ')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  child.kill('SIGKILL');
  throw new Error('control plane did not log "listening" within 30 s');
}

/** SIGTERM, then SIGKILL after graceMs; true when it exited by itself. */
async function stopControlPlane(cp: ControlPlaneProc, graceMs = 15_000): Promise<boolean> {
  if (cp.child.exitCode !== null || cp.child.signalCode !== null) return true;
  cp.child.kill('SIGTERM');
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    cp.child.kill('SIGKILL');
  }, graceMs);
  await cp.exited;
  clearTimeout(timer);
  return !killed;
}

interface CpStatus { revision: number; sidecars: { ackedVersion: string; sentVersion: string; inSync: boolean }[] }

async function cpStatus(http: string): Promise<CpStatus> {
  const res = await fetch(`http://${http}/status`);
  if (!res.ok) throw new Error(`/status: HTTP ${res.status}`);
  return (await res.json()) as CpStatus;
}

// ---------------------------------------------------------------- the simulator process

interface SimProc {
  readonly child: ChildProcess;
  next<T extends SimEvent['type']>(type: T, timeoutMs: number, onOther?: (e: SimEvent) => void): Promise<Extract<SimEvent, { type: T }>>;
  send(cmd: SimCommand): void;
}

function startSim(args: string[]): SimProc {
  const child = fork(SIM, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const queue: SimEvent[] = [];
  let wake: (() => void) | undefined;
  let exited = false;
  child.on('message', (m: SimEvent) => {
    queue.push(m);
    wake?.();
  });
  child.once('exit', () => {
    exited = true;
    wake?.();
  });
  return {
    child,
    send: (cmd) => void child.send(cmd),
    async next(type, timeoutMs, onOther) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        while (queue.length) {
          const e = queue.shift() as SimEvent;
          if (e.type === type) return e as Extract<SimEvent, { type: typeof type }>;
          onOther?.(e);
        }
        if (exited) throw new Error(`simulator exited while waiting for "${type}"`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`simulator: no "${type}" within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            wake = undefined;
            resolve();
          };
        });
      }
    },
  };
}

// ---------------------------------------------------------------- CPU profile

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

interface Sample { readonly t: number; readonly dt: number; readonly frame: string; readonly idle: boolean }

/** The profile's samples with their CLOCK_MONOTONIC time (µs, the same clock as process.hrtime) and the time each stands for. */
function samplesOf(p: CpuProfile): Sample[] {
  const byId = new Map(p.nodes.map((nd) => [nd.id, nd]));
  const out: Sample[] = [];
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    const cf = byId.get(p.samples[i])?.callFrame;
    if (!cf) continue;
    const url = cf.url.replace(/^file:\/\//, '');
    const file = url.includes('/node_modules/') ? url.replace(/^.*\/node_modules\//, '') : url.replace(/^.*\/dist\//, 'dist/');
    const frame = `${cf.functionName || '(anonymous)'} ${file ? `${file}:${cf.lineNumber + 1}` : ''}`.trim();
    out.push({ t, dt: p.timeDeltas[i + 1] ?? 0, frame, idle: cf.functionName === '(idle)' });
  }
  return out;
}

/** Busy (non-idle) self time per frame within [fromUs, toUs). */
function topFrames(samples: readonly Sample[], top: number, fromUs: number, toUs: number): { busyMs: number; frames: ProfileFrame[] } {
  const self = new Map<string, number>();
  let total = 0;
  for (const x of samples) {
    if (x.idle || x.t < fromUs || x.t >= toUs) continue;
    self.set(x.frame, (self.get(x.frame) ?? 0) + x.dt);
    total += x.dt;
  }
  const frames = [...self]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([frame, us]) => ({ frame, selfMs: round(us / 1000), pct: round((100 * us) / Math.max(1, total)) }));
  return { busyMs: round(total / 1000), frames };
}

function busyBins(samples: readonly Sample[], fromUs: number, toUs: number, binUs: number): number[] {
  const bins = new Array<number>(Math.max(1, Math.ceil((toUs - fromUs) / binUs))).fill(0);
  for (const x of samples) {
    if (x.idle || x.t < fromUs || x.t >= toUs) continue;
    bins[Math.floor((x.t - fromUs) / binUs)] += x.dt / 1000;
  }
  return bins.map((b) => round(b));
}

// ---------------------------------------------------------------- one size

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}

export interface RunOptions {
  readonly perChannel: number;
  readonly profileDir?: string;
  readonly log: (s: string) => void;
  /** Max wait for N first snapshots, for the registry to settle and for the push. */
  readonly timeoutMs: number;
  /** Max wait for the registry to empty after every stream was cancelled. */
  readonly disconnectTimeoutMs: number;
  /** Apply the change as soon as every sidecar has its first snapshot, without waiting for the registry writes. */
  readonly applyDuringRegistration?: boolean;
}

export async function runSize(n: number, o: RunOptions): Promise<PushRun> {
  const load0 = os.loadavg()[0];
  const dir = await mkdtemp(path.join(os.tmpdir(), `trellis-push-${n}-`));
  const profileDir = o.profileDir ? path.join(o.profileDir, `n${n}`) : undefined;
  if (profileDir) await mkdir(profileDir, { recursive: true });
  let cp: ControlPlaneProc | undefined;
  let sim: SimProc | undefined;
  try {
    cp = await startControlPlane(dir, profileDir);
    const { http } = cp;
    const pid = cp.child.pid as number;
    const caPem = await readFile(path.join(dir, 'ca.crt'), 'utf8');
    const adminToken = (await readFile(path.join(dir, 'admin.token'), 'utf8')).trim();
    const client = createMeshClient({ address: cp.grpc, caPem, trustDomain: 'mesh.local', adminToken });
    const base = await call<ApplyResponse>(client, 'Apply', { yaml: config(90), file: 'push-base.yaml', dryRun: false }, { adminToken });
    if (base.issues.length) throw new Error(`base config refused: ${base.issues.join('; ')}`);
    let baseRevision = 0;
    for (const deadline = Date.now() + 5_000; Date.now() < deadline;) {
      baseRevision = (await cpStatus(http)).revision;
      if (baseRevision >= base.revision) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // Let the base config's debounced compile run before anyone connects.
    await new Promise((r) => setTimeout(r, 200));

    // ---- connect: the simulator opens N streams; meanwhile /status is polled (its cost grows with N, so less often for large N).
    const cpu0 = await procSample(pid);
    const opened = nowMs();
    sim = startSim(['--address', cp.grpc, '--ca', path.join(dir, 'ca.crt'), '--n', String(n), '--per-channel', String(o.perChannel)]);
    const timeline: TimelinePoint[] = [];
    // One poll loop for the whole connect phase: /status costs the control plane O(N) (about 40 ms at 10,000), so poll
    // every 500 ms from 5,000 sidecars on. It ends when all have their first snapshot, the revision shows all N registry
    // writes, and no new revision appeared for 300 ms (so the debounced recompile has run).
    let connected: Extract<SimEvent, { type: 'connected' }> | undefined;
    let connectFailed: Error | undefined;
    let allFirstAt = NaN;
    let registeredAtAllFirst = NaN;
    void sim.next('connected', o.timeoutMs, (e) => {
      if (e.type === 'progress') o.log(`  N=${n}: ${e.firstSnapshots}/${n} first snapshots, ${e.errors} stream errors`);
    }).then(async (c) => {
      allFirstAt = nowMs();
      connected = c;
      registeredAtAllFirst = (await cpStatus(http)).revision - baseRevision;
    }, (err: Error) => (connectFailed = err));
    const interval = n >= 5000 ? 500 : 100;
    let registeredAt = NaN;
    let last = -1;
    let lastChange = nowMs();
    for (const deadline = nowMs() + o.timeoutMs; ;) {
      if (connectFailed) throw connectFailed;
      if (nowMs() > deadline) throw new Error(`connect: not all registered within ${o.timeoutMs} ms (revision ${last}, base ${baseRevision})`);
      const [st, pr] = await Promise.all([cpStatus(http), procSample(pid)]);
      const t = nowMs();
      timeline.push({ t: round(t - opened), connected: st.sidecars.length, registered: st.revision - baseRevision, cpCpuSec: round(pr.cpuSec - cpu0.cpuSec, 2) });
      if (st.revision !== last) {
        last = st.revision;
        lastChange = t;
      }
      if (Number.isNaN(registeredAt) && st.revision >= baseRevision + n) registeredAt = t;
      if (connected && !Number.isNaN(registeredAtAllFirst) && !Number.isNaN(registeredAt) && t - lastChange >= 300) break;
      // --apply-during-registration: the change goes in while the registry writes are still coming (a reconnect storm).
      if (o.applyDuringRegistration && connected && !Number.isNaN(registeredAtAllFirst)) break;
      await new Promise((r) => setTimeout(r, interval));
    }
    if (!connected) throw new Error('unreachable: connect loop ended without "connected"');
    if (connected.errors) o.log(`  N=${n}: ${connected.errors} stream errors: ${connected.errorSamples.join(' | ')}`);
    const cpu1 = await procSample(pid);

    // ---- push
    const tApply = nowMs();
    const applied = await call<ApplyResponse>(client, 'Apply', { yaml: config(50), file: 'push-change.yaml', dryRun: false }, { adminToken, timeoutMs: 60_000 });
    const applyRpcMs = nowMs() - tApply;
    if (applied.issues.length) throw new Error(`change refused: ${applied.issues.join('; ')}`);
    sim.send({ cmd: 'await', version: applied.revision, timeoutMs: o.timeoutMs });
    const got = await sim.next('received', o.timeoutMs + 10_000);
    const lat = got.receivedMs.filter((t) => Number.isFinite(t)).map((t) => t - tApply).sort((a, b) => a - b);
    const allAckedMs = lat.length === n ? lat[lat.length - 1] : NaN;
    const tPushDone = tApply + (Number.isFinite(allAckedMs) ? allAckedMs : nowMs() - tApply);
    // /status: every sidecar in sync at the new version (or newer).
    let status: CpStatus | undefined;
    let statusInSyncMs = NaN;
    for (const deadline = nowMs() + 30_000; nowMs() < deadline;) {
      status = await cpStatus(http);
      if (status.sidecars.length === n && status.sidecars.every((x) => x.inSync && Number(x.ackedVersion) >= applied.revision)) {
        statusInSyncMs = nowMs() - tApply;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const cpu2 = await procSample(pid);
    const weights = [...got.sampleRoutesJson.matchAll(/"weight":(\d+)/g)].map((m) => m[1]).join('/');
    // Shutdown (N streams cancelled at once) logs its own events; only those up to here are the measurement's.
    const logged = parseLog(await readFile(cp.logFile, 'utf8'));
    const events: Record<string, number> = {};
    const warnings: string[] = [];
    logged.lines.forEach((l, i) => {
      events[l.event ?? '?'] = (events[l.event ?? '?'] ?? 0) + 1;
      if ((l.level === 'warn' || l.level === 'error') && warnings.length < 10) warnings.push(logged.raw[i].slice(0, 300));
    });

    // ---- disconnect: every stream cancelled at once; until /status lists none and the store shows N registry deletes.
    const revBeforeCancel = (await cpStatus(http)).revision;
    sim.send({ cmd: 'cancel' });
    const cancelled = await sim.next('cancelled', 30_000);
    let goneMs = NaN;
    let deregisteredMs = NaN;
    let deleted = 0;
    for (const deadline = nowMs() + o.disconnectTimeoutMs; nowMs() < deadline && Number.isNaN(deregisteredMs);) {
      const st = await cpStatus(http).catch(() => undefined);
      if (st) {
        deleted = st.revision - revBeforeCancel;
        if (Number.isNaN(goneMs) && st.sidecars.length === 0) goneMs = nowMs() - cancelled.at;
        if (deleted >= n) deregisteredMs = nowMs() - cancelled.at;
      }
      await new Promise((r) => setTimeout(r, n >= 5000 ? 250 : 50));
    }
    const tDisconnectDone = nowMs();

    // ---- stop (SIGTERM: a clean exit writes the CPU profile)
    sim.send({ cmd: 'close' });
    const closed = await sim.next('closed', 10_000).catch(() => undefined);
    await new Promise<void>((resolve) => (sim?.child.exitCode !== null ? resolve() : sim.child.once('exit', () => resolve())));
    client.close();
    const cpuEnd = await procSample(pid);
    const tStop = nowMs();
    const stopped = await stopControlPlane(cp, 60_000);
    const stopMs = nowMs() - tStop;

    let profile: PushRun['profile'];
    if (profileDir) {
      const files = (await readdir(profileDir)).filter((f) => f.endsWith('.cpuprofile'));
      if (files.length) {
        const file = path.join(profileDir, files[0]);
        const samples = samplesOf(JSON.parse(await readFile(file, 'utf8')) as CpuProfile);
        const c = topFrames(samples, 20, opened * 1000, tApply * 1000);
        const p = topFrames(samples, 20, tApply * 1000, tPushDone * 1000);
        const d = topFrames(samples, 20, cancelled.at * 1000, tDisconnectDone * 1000);
        profile = {
          file, connectBusyMs: c.busyMs, pushBusyMs: p.busyMs, pushBusyPer50Ms: busyBins(samples, tApply * 1000, tPushDone * 1000, 50_000),
          connect: c.frames, push: p.frames, disconnectBusyMs: d.busyMs, disconnect: d.frames,
        };
      }
    }

    const target = TARGET_P99_MS[n];
    const p99 = percentile(lat, 0.99);
    return {
      n,
      loadAvg: [round(load0, 2), round(os.loadavg()[0], 2)],
      channels: Math.ceil(n / o.perChannel),
      connect: {
        allFirstSnapshotMs: round(connected.allFirstMs - opened),
        registeredAtAllFirst,
        registeredMs: round(registeredAt - opened),
        registrationsPerSecAfterConnect: round((n - registeredAtAllFirst) / Math.max(0.001, (registeredAt - allFirstAt) / 1000), 0),
        cpCpuSec: round(cpu1.cpuSec - cpu0.cpuSec, 2),
        simCpuSec: round(connected.cpuMs / 1000, 2),
        timeline,
      },
      push: {
        fromVersion: connected.firstVersions.join(','),
        version: applied.revision,
        applyRpcMs: round(applyRpcMs),
        acked: lat.length,
        missing: n - lat.length,
        minMs: round(lat[0] ?? NaN),
        p50Ms: round(percentile(lat, 0.5)),
        p90Ms: round(percentile(lat, 0.9)),
        p99Ms: round(p99),
        maxMs: round(lat[lat.length - 1] ?? NaN),
        allAckedMs: round(allAckedMs),
        statusInSyncMs: round(statusInSyncMs),
        statusSidecars: status?.sidecars.length ?? 0,
        statusInSync: status?.sidecars.filter((x) => x.inSync && Number(x.ackedVersion) >= applied.revision).length ?? 0,
        extraSnapshots: got.extraSnapshots,
        weightsSeen: weights,
        cpCpuSec: round(cpu2.cpuSec - cpu1.cpuSec, 2),
        simCpuSec: round(got.pushCpuMs / 1000, 2),
      },
      disconnect: { goneMs: round(goneMs), deregisteredMs: round(deregisteredMs), deletedWithinTimeout: deleted, stopMs: round(stopMs), stopClean: stopped },
      cp: { peakRssMb: round(cpuEnd.hwmKb / 1024), rssMb: round(cpu2.rssKb / 1024), cpuSec: round(cpuEnd.cpuSec, 2), events, warnings },
      sim: {
        cpuSec: closed ? round((closed.cpuUserMs + closed.cpuSystemMs) / 1000, 2) : NaN,
        peakRssMb: closed ? round(closed.maxRssKb / 1024) : NaN,
        errors: got.errors,
        errorSamples: got.errorSamples,
      },
      targetP99Ms: target,
      targetMet: target === undefined ? undefined : lat.length === n && p99 <= target,
      ...(profile ? { profile } : {}),
    };
  } finally {
    if (sim && sim.child.exitCode === null) sim.child.kill('SIGKILL');
    if (cp) await stopControlPlane(cp);
    await rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- report

const fmt = (x: number | undefined, unit = ''): string => (x === undefined || !Number.isFinite(x) ? '—' : `${x}${unit}`);
const ms = (x: number): string => (!Number.isFinite(x) ? '—' : x >= 1000 ? `${round(x / 1000, 2)} s` : `${round(x)} ms`);

export function renderMarkdown(r: PushResults): string {
  const ok = r.runs.filter((x) => !x.error);
  const n = (x: number) => x.toLocaleString('en-US');
  const lines = [
    '# Control-plane push at scale',
    '',
    `Generated ${r.generatedAt} by \`npm run bench:push\` (bench/push-scale.ts) on ${r.machine.cpus}× ${r.machine.cpuModel}, ` +
      `${r.machine.memGb} GB, Node ${r.machine.node}, code at ${r.commit}. Embedded store, a fresh control plane per N. The N simulated ` +
      `sidecars run in one separate Node process (bench/push-sim.ts), ${r.perChannel} Discover streams per gRPC channel; they ` +
      'share the machine\'s CPUs with the control plane.',
    '',
    ...(r.applyDuringRegistration ? ['**--apply-during-registration**: the change was applied as soon as every sidecar had its first ' +
      'snapshot, while their registry writes were still in progress.', ''] : []),
    'Latency: from sending the Apply RPC (a Route weight change 90/10 → 50/50) until each simulated sidecar received the new ' +
      "version's snapshot and ACKed it. All acked: until the last one did. /status: until the control plane's /status first showed " +
      'every sidecar inSync at the new version (polled after all acked, so an upper bound). Target (issue 5): p99 ≤ 500 ms at ' +
      '1,000, ≤ 5 s at 10,000.',
    '',
    '| N | p50 | p99 | max | all acked | /status all in sync | CP peak RSS (VmHWM) | target met? | load avg (start → end) |',
    '|---:|---:|---:|---:|---:|---:|---:|:---|:---|',
  ];
  for (const x of r.runs) {
    if (x.error) {
      lines.push(`| ${n(x.n)} | — | — | — | — | — | — | — | failed: ${x.error.replace(/\|/g, '\\|').replace(/\n/g, ' ').slice(0, 200)} |`);
      continue;
    }
    const met = x.targetMet === undefined ? '— (no target)' : x.targetMet ? `yes (≤ ${ms(x.targetP99Ms ?? NaN)})` : `**no** (≤ ${ms(x.targetP99Ms ?? NaN)})`;
    const missing = x.push.missing ? ` (${x.push.missing} never)` : '';
    lines.push(`| ${n(x.n)} | ${ms(x.push.p50Ms)} | ${ms(x.push.p99Ms)} | ${ms(x.push.maxMs)} | ${ms(x.push.allAckedMs)}${missing} | ` +
      `${ms(x.push.statusInSyncMs)} (${x.push.statusInSync}/${x.push.statusSidecars}) | ${fmt(x.cp.peakRssMb, ' MB')} | ${met} | ${x.loadAvg[0]} → ${x.loadAvg[1]} |`);
  }
  lines.push('', '## Connect (N streams opened at once)', '',
    '| N | channels | all first snapshots | registered by then | all registered in store | registrations/s after | CP CPU | simulator CPU |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of ok) {
    lines.push(`| ${n(x.n)} | ${x.channels} | ${ms(x.connect.allFirstSnapshotMs)} | ${n(x.connect.registeredAtAllFirst)} | ${ms(x.connect.registeredMs)} | ` +
      `${fmt(x.connect.registrationsPerSecAfterConnect)} | ${fmt(x.connect.cpCpuSec, ' s')} | ${fmt(x.connect.simCpuSec, ' s')} |`);
  }
  lines.push('', 'Each Hello gets its snapshot at once; its registry entry (one put = one store revision; the embedded store group-commits ' +
    'the puts that arrive during an fdatasync into the next one) follows. "all registered": until the store revision showed all N writes.');
  lines.push('', '## Push cost', '',
    '| N | Apply RPC | CP CPU (push) | simulator CPU (push) | extra snapshots | weights after | CP CPU total | CP RSS after push |',
    '|---:|---:|---:|---:|---:|:---|---:|---:|');
  for (const x of ok) {
    lines.push(`| ${n(x.n)} | ${ms(x.push.applyRpcMs)} | ${fmt(x.push.cpCpuSec, ' s')} | ${fmt(x.push.simCpuSec, ' s')} | ${x.push.extraSnapshots - x.n} | ` +
      `${x.push.weightsSeen || '—'} | ${fmt(x.cp.cpuSec, ' s')} | ${fmt(x.cp.rssMb, ' MB')} |`);
  }
  lines.push('', '"extra snapshots": snapshots beyond the one push per sidecar that the change needed (0 = exactly one each). CPU from /proc/PID/stat ' +
    '(10 ms ticks); "CP CPU (push)" runs until /status showed all in sync, so it includes that poll.');
  lines.push('', '## Disconnect (every stream cancelled at once)', '',
    '| N | /status lists none | registry emptied (N deletes) | deletes seen | control plane stop (SIGTERM → exit) |',
    '|---:|---:|---:|---:|---:|');
  for (const x of ok) {
    lines.push(`| ${n(x.n)} | ${ms(x.disconnect.goneMs)} | ${ms(x.disconnect.deregisteredMs)} | ${n(x.disconnect.deletedWithinTimeout)} | ` +
      `${ms(x.disconnect.stopMs)}${x.disconnect.stopClean ? '' : ' (killed)'} |`);
  }
  for (const x of ok) {
    if (!x.profile) continue;
    lines.push('', `## CPU profile of the control plane, N = ${n(x.n)}`, '',
      `\`${x.profile.file}\` (node --cpu-prof). Busy (non-idle) time: connect phase ${ms(x.profile.connectBusyMs)}, push phase ` +
      `${ms(x.profile.pushBusyMs)}, disconnect phase ${ms(x.profile.disconnectBusyMs)}. Busy ms per 50 ms after the Apply was sent: ` +
      `${x.profile.pushBusyPer50Ms.join(', ')}.`, '');
    for (const [name, frames] of [['connect phase', x.profile.connect], ['push phase', x.profile.push], ['disconnect phase', x.profile.disconnect]] as const) {
      lines.push(`Top self time, ${name} (% of its busy time):`, '', '| self ms | % | frame |', '|---:|---:|:---|');
      for (const f of frames.slice(0, 15)) lines.push(`| ${f.selfMs} | ${f.pct} | \`${f.frame}\` |`);
      lines.push('');
    }
  }
  const warned = ok.filter((x) => x.cp.warnings.length || x.sim.errors);
  if (warned.length) {
    lines.push('', '## Warnings', '');
    for (const x of warned) {
      for (const w of x.cp.warnings) lines.push(`- N=${x.n} control plane: \`${w}\``);
      for (const w of x.sim.errorSamples) lines.push(`- N=${x.n} simulator: ${w}`);
    }
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------- main

function commitOf(): string {
  try {
    const root = path.dirname(DIST);
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'control-plane', 'api'], { cwd: root, encoding: 'utf8' }).trim();
    return dirty ? `${head} (control-plane/ or api/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '100,1000,10000' },
      out: { type: 'string', default: 'bench/results' },
      'per-channel': { type: 'string', default: '500' },
      'cpu-prof': { type: 'string' },
      'cpu-prof-min': { type: 'string', default: '10000' },
      timeout: { type: 'string', default: '300' },
      'disconnect-timeout': { type: 'string', default: '120' },
      'apply-during-registration': { type: 'boolean', default: false },
    },
    strict: true,
  });
  for (const f of [MAIN, SIM]) if (!existsSync(f)) throw new Error(`${f} is missing: run "npm run build" first`);
  const sizes = values.sizes.split(',').map((s) => Number(s.trim().replace(/_/g, ''))).filter((x) => Number.isInteger(x) && x > 0);
  if (!sizes.length) throw new Error(`--sizes: expected e.g. 100,1000,10000, got "${values.sizes}"`);
  const perChannel = Number(values['per-channel']);
  const profileMin = Number(values['cpu-prof-min']);
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const runs: PushRun[] = [];
  for (const n of sizes) {
    log(`push-scale: N=${n}`);
    const profileDir = values['cpu-prof'] && n >= profileMin ? path.resolve(values['cpu-prof']) : undefined;
    try {
      const r = await runSize(n, { perChannel, profileDir, log, timeoutMs: Number(values.timeout) * 1000, disconnectTimeoutMs: Number(values['disconnect-timeout']) * 1000,
        applyDuringRegistration: values['apply-during-registration'] });
      log(`  N=${n}: p50 ${ms(r.push.p50Ms)} p99 ${ms(r.push.p99Ms)} max ${ms(r.push.maxMs)} all acked ${ms(r.push.allAckedMs)} ` +
        `(${r.push.acked}/${n}); connect ${ms(r.connect.allFirstSnapshotMs)}, registered ${ms(r.connect.registeredMs)}; CP peak RSS ${r.cp.peakRssMb} MB; ` +
        `disconnect: none listed ${ms(r.disconnect.goneMs)}, registry empty ${ms(r.disconnect.deregisteredMs)}; stop ${ms(r.disconnect.stopMs)}`);
      runs.push(r);
    } catch (err) {
      log(`  N=${n} failed: ${(err as Error).stack ?? String(err)}`);
      runs.push({ n, error: (err as Error).message } as PushRun);
    }
  }
  const cpus = os.cpus();
  const results: PushResults = {
    generatedAt: new Date().toISOString(),
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model ?? 'unknown', memGb: round(os.totalmem() / 2 ** 30), node: process.version },
    commit: commitOf(),
    perChannel,
    applyDuringRegistration: values['apply-during-registration'],
    runs,
  };
  await mkdir(values.out, { recursive: true });
  await writeFile(path.join(values.out, 'push-latest.json'), JSON.stringify(results, null, 2) + '\n');
  await writeFile(path.join(values.out, 'push-latest.md'), renderMarkdown(results));
  log(`push-scale: wrote ${path.join(values.out, 'push-latest.json')} and push-latest.md`);
  return runs.some((r) => r.error) ? 1 : 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then((code) => (process.exitCode = code), (err: unknown) => {
    process.stderr.write(`push-scale: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
