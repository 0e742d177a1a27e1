// The soak's measurements: per-process samples from /proc, the RSS slope after warm-up, and the Markdown report.
import { readdirSync, readFileSync } from 'node:fs';
import type { LoadCounts } from './soak-load.js';

export interface ProcessSamples {
  t: number[];
  rssMb: number[];
  fds: number[];
  /** From the sidecar's own nodejs_eventloop_lag_p99_seconds (prom-client, reset at each scrape); NaN where not known. */
  eventLoopP99Ms: number[];
  /** From the process's own /metrics (prom-client): V8 heap used and reserved, and memory held outside it (Buffers). */
  heapUsedMb: number[];
  heapTotalMb: number[];
  externalMb: number[];
  /** V8's young generation as committed (nodejs_heap_space_size_total_bytes{space="new"}): RSS moves by it in 16 MB steps. */
  newSpaceMb: number[];
  /** Full (mark-compact) collections so far (nodejs_gc_duration_seconds_count{kind="major"}). */
  majorGcs: number[];
}

export interface ProcessSlopes {
  rssSlopeMbPer10Min: number;
  heapTotalSlopeMbPer10Min: number;
  externalSlopeMbPer10Min: number;
  /** RSS less the young generation's committed size, after the warm-up. */
  oldRssSlopeMbPer10Min: number;
  /** The same, from the first full GC after the warm-up began (the old generation has then been swept once); NaN if none. */
  steadyFromS: number;
  steadyOldRssSlopeMbPer10Min: number;
}

export interface SoakResult {
  minutes: number;
  rps: number;
  nodeArgs: string[];
  /** The flags every mesh process started with before nodeArgs (cli/node-flags.ts); absent in reports from before it. */
  nodeFlags?: string[];
  startedAt: string;
  warmupS: number;
  load: LoadCounts;
  appResets: number;
  pushes: number;
  pushFailures: number;
  acks: number;
  nacks: number;
  rotations: Record<string, number>;
  processes: Record<string, ProcessSamples & ProcessSlopes>;
  /** Access-log lines, from every sidecar, of the requests that failed (the first 200 failures). */
  traces: string[];
  errors: string[];
  exited: string[];
}

/** The warm-up when --warmup-minutes is not given: 5 minutes, or a third of a shorter run. */
export function defaultWarmupS(minutes: number): number {
  return Math.min(300, (minutes * 60) / 3);
}

/** RSS (VmRSS, MB) and open file descriptors of a live process, or undefined when it is gone. */
export function sample(pid: number): { rssMb: number; fds: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
    return { rssMb: kb / 1024, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return undefined;
  }
}

/**
 * Least-squares slope of y over t (seconds) for samples after `fromS`, in y-units per 10 minutes; NaN with < 3 points.
 * The fit runs over per-minute medians: RSS swings by tens of MB with each GC cycle under 256 KiB bodies, and a median
 * per minute keeps one unlucky sample from tilting a 25-minute line.
 */
export function slopePer10Min(t: readonly number[], y: readonly number[], fromS: number): number {
  const minutes = new Map<number, number[]>();
  t.forEach((x, i) => {
    if (x >= fromS && Number.isFinite(y[i])) (minutes.get(Math.floor(x / 60)) ?? minutes.set(Math.floor(x / 60), []).get(Math.floor(x / 60))!).push(y[i]);
  });
  const pts = [...minutes].map(([m, vs]) => [m * 60 + 30, [...vs].sort((a, b) => a - b)[Math.floor(vs.length / 2)]] as const);
  if (pts.length < 3) return NaN;
  const mx = pts.reduce((a, [x]) => a + x, 0) / pts.length;
  const my = pts.reduce((a, [, v]) => a + v, 0) / pts.length;
  let num = 0;
  let den = 0;
  for (const [x, v] of pts) {
    num += (x - mx) * (v - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : (num / den) * 600;
}

/** Every slope the report shows, for one process's samples and the run's warm-up. */
export function slopesOf(s: ProcessSamples, warmupS: number): ProcessSlopes {
  const oldRss = s.rssMb.map((v, i) => v - s.newSpaceMb[i]);
  const atWarmup = s.t.findIndex((t) => t >= warmupS / 2);
  const base = s.majorGcs[atWarmup] ?? NaN;
  const firstFull = s.t.find((t, i) => i > atWarmup && s.majorGcs[i] > base);
  const steadyFromS = firstFull === undefined ? NaN : Math.max(warmupS, firstFull);
  return {
    rssSlopeMbPer10Min: slopePer10Min(s.t, s.rssMb, warmupS),
    heapTotalSlopeMbPer10Min: slopePer10Min(s.t, s.heapTotalMb, warmupS),
    externalSlopeMbPer10Min: slopePer10Min(s.t, s.externalMb, warmupS),
    oldRssSlopeMbPer10Min: slopePer10Min(s.t, oldRss, warmupS),
    steadyFromS,
    steadyOldRssSlopeMbPer10Min: Number.isNaN(steadyFromS) ? NaN : slopePer10Min(s.t, oldRss, steadyFromS),
  };
}

const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–');
const finite = (xs: readonly number[]) => xs.filter(Number.isFinite);
const pct = (xs: readonly number[], p: number) => {
  const s = [...finite(xs)].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

export function renderSoak(r: SoakResult): string {
  const l = r.load;
  const rows = Object.entries(r.processes).map(([name, s]) => {
    const after = s.t.map((t, i) => (t >= r.warmupS ? i : -1)).filter((i) => i >= 0);
    const rssAfter = after.map((i) => s.rssMb[i]);
    return `| ${name} | ${f(s.rssMb[0] ?? NaN)} → ${f(s.rssMb.at(-1) ?? NaN)} | ${f(Math.min(...finite(rssAfter)))} / ${f(Math.max(...finite(rssAfter)))} | **${f(s.rssSlopeMbPer10Min, 2)}** | ${Math.min(...s.fds)} / ${Math.max(...s.fds)} / ${s.fds.at(-1) ?? '–'} | ${f(pct(s.eventLoopP99Ms, 50))} / ${f(Math.max(...finite(s.eventLoopP99Ms)))} | ${r.rotations[name] ?? '–'} |`;
  });
  const memRows = Object.entries(r.processes).map(([name, s]) => {
    const after = s.t.map((t, i) => (t >= r.warmupS ? i : -1)).filter((i) => i >= 0);
    const at = (xs: number[], i: number | undefined) => f(i === undefined ? NaN : xs[i]);
    const young = finite(after.map((i) => s.newSpaceMb[i]));
    return `| ${name} | ${at(s.heapUsedMb, after[0])} → ${at(s.heapUsedMb, after.at(-1))} | ${at(s.heapTotalMb, after[0])} → ${at(s.heapTotalMb, after.at(-1))} | ${f(s.heapTotalSlopeMbPer10Min, 2)} | ${f(Math.min(...young))} / ${f(Math.max(...young))} | ${at(s.externalMb, after[0])} → ${at(s.externalMb, after.at(-1))} | ${f(s.externalSlopeMbPer10Min, 2)} | ${f(s.oldRssSlopeMbPer10Min, 2)} | ${Number.isNaN(s.steadyFromS) ? 'no full GC' : `${f(s.steadyOldRssSlopeMbPer10Min, 2)} (from ${f(s.steadyFromS, 0)} s)`} |`;
  });
  return [
    '# Trellis soak',
    '',
    `\`npm run soak -- --minutes ${r.minutes} --rps ${r.rps}${r.warmupS !== defaultWarmupS(r.minutes) ? ` --warmup-minutes ${r.warmupS / 60}` : ''}${r.nodeArgs.length ? ` --node-args="${r.nodeArgs.join(' ')}"` : ''}\`, started ${r.startedAt}. One control plane (embedded store), a client sidecar and`,
    'two server sidecars (mTLS between them) in front of one app, all on this machine, sharing its cores with the load.',
    r.nodeFlags ? `Each ran under node as \`mesh\` starts it: \`node ${r.nodeFlags.join(' ')}\` (cli/node-flags.ts), with a forced full GC after 2 minutes without one (cli/periodic-gc.ts).` : 'Each ran under plain `node` (a report from before cli/node-flags.ts).',
    '',
    `- Load: an open loop of ${r.rps} requests/s: 1 KiB GETs, 256 KiB streamed GETs, 8 KiB POST echoes, GETs whose first try the app`,
    '  kills with a TCP reset (the mesh must retry them), GETs the client aborts after 50 ms, and streamed GETs the client abandons after',
    '  the first chunk.',
    `- Certificates: a 3-minute TTL, renewed at 70 %, so every sidecar rotates about every 2 minutes. Config: a Route change pushed every 30 s.`,
    `- RSS slope: least squares over per-minute medians after a ${f(r.warmupS, 0)} s warm-up, one sample per process every 5 s.`,
    '',
    '| outcome | count |',
    '| --- | --- |',
    `| requests sent | ${l.sent} |`,
    `| succeeded | ${l.ok} |`,
    `| **failed (not injected)** | **${l.failed}** |`,
    `| aborted by the client on purpose | ${l.aborted} |`,
    `| not sent: over 2,000 in flight | ${l.skipped} |`,
    `| upstream resets injected by the app (each retried by the mesh) | ${r.appResets} |`,
    `| config pushes / failed / ACKs seen by the client sidecar / NACKs | ${r.pushes} / ${r.pushFailures} / ${r.acks} / ${r.nacks} |`,
    `| **uncaught errors and error events** | **${r.errors.length}** |`,
    `| processes that exited | ${r.exited.length ? r.exited.join(', ') : 'none'} |`,
    '',
    '| process | RSS first → last, MB | RSS after warm-up min / max | **RSS slope, MB per 10 min** | fds min / max / last | event-loop p99, ms: median / max | cert rotations |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    'Where the memory is (after warm-up; each process\'s own /metrics): V8 heap used and reserved, its young generation, and external',
    'memory (Buffers). V8 releases one semi-space of the young generation after a full GC while the allocation rate is under 1 MB/s',
    'and commits it again at the next scavenge, so RSS moves by that much; the old generation keeps garbage until a full GC.',
    'The last two columns take RSS without the young generation, after the warm-up, and from the first full GC after the warm-up began.',
    '',
    '| process | heap used, MB | heap reserved, MB | heap reserved slope, MB per 10 min | young generation min / max, MB | external, MB | external slope, MB per 10 min | RSS less young generation, slope | the same after a full GC |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...memRows,
    '',
    '| request kind | sent | ok | failed |',
    '| --- | --- | --- | --- |',
    ...Object.entries(l.byKind).map(([k, v]) => `| ${k} | ${v.sent} | ${v.ok} | ${v.failed} |`),
    '',
    ...(Object.keys(l.byReason).length ? ['| failure | count |', '| --- | --- |', ...Object.entries(l.byReason).sort((a, b) => b[1] - a[1]).map(([k, v]) => `| ${k} | ${v} |`), ''] : []),
    ...(l.failures.length ? ['First failures:', '', '```', ...l.failures, '```', ''] : []),
    ...(r.traces.length ? ['Access-log lines of the failed requests, and connections a sidecar closed unanswered (TRELLIS_DEBUG_CLOSES=1):', '', '```', ...r.traces.slice(0, 60), '```', ''] : []),
    ...(r.errors.length ? ['Errors:', '', '```', ...r.errors.slice(0, 30), '```', ''] : []),
  ].join('\n');
}
