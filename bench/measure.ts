// One started scenario's measured phases: a wrk warm-up, each fixed rate with bench/load-open.ts, then saturation with wrk; the proxies' CPU is sampled around every phase.
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { cpuPer1k, peakRssMb, sampleCpu } from './proc.js';
import { spawnChild } from './processes.js';
import type { Running } from './scenarios.js';
import type { BenchSettings, OpenLoopRun, ProcessFigures, SaturationRun } from './types.js';
import { runWrk } from './wrk.js';

const LOAD_OPEN = join(fileURLToPath(new URL('.', import.meta.url)), 'load-open.js');
const DRAIN_TIMEOUT_MS = 10_000;

export interface Measured {
  readonly saturation: SaturationRun | { readonly skipped: string };
  readonly openLoop: OpenLoopRun[];
  readonly processes: ProcessFigures[];
}

/** Runs load-open once; `onMeasureStart` fires when its warm-up ends, so CPU samples bracket the measured requests only. */
export async function runOpenLoop(
  r: Running,
  o: { rate: number; seconds: number; warmupSeconds: number; connections: number },
  onMeasureStart: () => void,
): Promise<OpenLoopRun> {
  const child = spawnChild(`load-open ${o.rate} rps`, process.execPath, [
    LOAD_OPEN, '--url', r.url, '--host', r.host, '--rate', String(o.rate), '--seconds', String(o.seconds),
    '--warmup', String(o.warmupSeconds), '--connections', String(o.connections), '--timeout', String(DRAIN_TIMEOUT_MS),
  ]);
  let result: OpenLoopRun | undefined;
  createInterface({ input: child.proc.stdout! }).on('line', (text) => {
    if (!text.startsWith('{')) return;
    const line = JSON.parse(text) as { event: string } & OpenLoopRun;
    if (line.event === 'measure-start') onMeasureStart();
    else if (line.event === 'result') result = line;
  });
  const bound = (o.warmupSeconds + o.seconds) * 1000 + DRAIN_TIMEOUT_MS + 15_000;
  const timer = setTimeout(() => void child.stop('SIGKILL', 1_000), bound);
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  // The 'line' event for the last line can trail 'exit' by a tick.
  await new Promise((res) => setImmediate(res));
  if (code !== 0 || !result) throw new Error(`load-open exited (code ${code}, signal ${signal}) without a result:\n${child.output()}`);
  const { event: _event, ...run } = result as OpenLoopRun & { event?: string };
  return run;
}

/** Everything measured for one scenario, in one place so every scenario gets exactly the same treatment. */
export async function measure(r: Running, s: BenchSettings, wrk: string | undefined, log: (msg: string) => void): Promise<Measured> {
  const pids = r.proxies.map((p) => p.pid);
  const cpu = new Map<number, Record<string, number | null>>(pids.map((pid) => [pid, {}]));
  const record = (phase: string, before: Map<number, number>, after: Map<number, number>, requests: number): void => {
    for (const pid of pids) cpu.get(pid)![phase] = cpuPer1k(before, after, pid, requests) ?? null;
  };
  const sat = { url: r.url, host: r.host, connections: s.saturation.connections, threads: s.saturation.threads };

  // JIT, pools and TLS sessions warm before anything is measured.
  if (wrk && s.saturation.warmupSeconds > 0) await runWrk({ ...sat, bin: wrk, seconds: s.saturation.warmupSeconds });

  const openLoop: OpenLoopRun[] = [];
  for (const rate of s.openLoop.rates) {
    const seconds = s.openLoop.requests ? s.openLoop.requests / rate : s.openLoop.seconds;
    log(`  open loop ${rate} rps for ${seconds} s`);
    let before = new Map<number, number>();
    const { warmupSeconds, connections } = s.openLoop;
    const run = await runOpenLoop(r, { rate, seconds, warmupSeconds, connections }, () => {
      before = sampleCpu(pids);
    });
    record(`open-${rate}`, before, sampleCpu(pids), run.completed);
    openLoop.push(run);
  }

  let saturation: Measured['saturation'] = { skipped: 'wrk not found (PATH or WRK)' };
  if (wrk) {
    log(`  saturation: wrk -t${sat.threads} -c${sat.connections} -d${s.saturation.seconds}s`);
    const before = sampleCpu(pids);
    const w = await runWrk({ ...sat, bin: wrk, seconds: s.saturation.seconds });
    record('saturation', before, sampleCpu(pids), w.requests);
    saturation = { tool: 'wrk', ...sat, ...w };
  }

  const processes = r.proxies.map((p) => ({ role: p.role, pid: p.pid, peakRssMb: peakRssMb(p.pid) ?? null, cpuPer1k: cpu.get(p.pid)! }));
  return { saturation, openLoop, processes };
}
