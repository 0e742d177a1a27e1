// `npm run bench` orchestrator: flags → settings, each scenario started, measured and stopped in turn (always, and within a time budget), then latest.json, latest.md and latency.svg.
import { spawnSync } from 'node:child_process';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { addedLatency, headlineRate, ratios, targets, tracingCost } from './analysis.js';
import { measure } from './measure.js';
import { createBenchPki } from './pki.js';
import { latencySvg } from './plot.js';
import { machineBusySeconds, ownTreeCpuSeconds } from './proc.js';
import { findExecutable, stopAll } from './processes.js';
import { renderMarkdown } from './report.js';
import { ALL_SCENARIOS, probe, type Running, type ScenarioContext } from './scenarios.js';
import { SCENARIOS, type BenchResults, type BenchSettings, type ScenarioName, type ScenarioResult } from './types.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');
const log = (msg: string): void => void process.stderr.write(`[bench] ${msg}\n`);

function positive(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!(n > 0)) throw new Error(`--${flag}: expected a positive number, got "${v}"`);
  return n;
}

function settingsFrom(argv: string[]): { settings: BenchSettings; out: string; names: ScenarioName[] } {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      out: { type: 'string' },
      scenarios: { type: 'string' },
      seconds: { type: 'string' },
      requests: { type: 'string' },
      rates: { type: 'string' },
    },
    strict: true,
  });
  const quick = values.quick === true;
  const seconds = positive('seconds', values.seconds);
  const requests = positive('requests', values.requests);
  const rates = values.rates?.split(',').map((r) => positive('rates', r)!) ?? (quick ? [1000] : [200, 1000, 2000]);
  const satSeconds = seconds ?? (quick ? 5 : 15);
  const openSeconds = seconds ?? (quick ? 8 : 20);
  const warm = (d: number): number => (seconds === undefined ? d : Math.min(d, Math.max(1, Math.round(seconds))));
  const names = (values.scenarios?.split(',').map((s) => s.trim()) ?? [...SCENARIOS]) as ScenarioName[];
  const unknown = names.filter((n) => !SCENARIOS.includes(n));
  if (unknown.length > 0) throw new Error(`--scenarios: unknown ${unknown.join(', ')}; expected some of ${SCENARIOS.join(', ')}`);
  return {
    settings: {
      mode: quick ? 'quick' : 'full',
      saturation: { connections: 50, threads: 1, seconds: satSeconds, warmupSeconds: warm(quick ? 2 : 3) },
      openLoop: { rates, seconds: openSeconds, warmupSeconds: warm(quick ? 2 : 3), connections: 64, ...(requests ? { requests } : {}) },
    },
    out: resolve(values.out ?? join(REPO, 'bench', 'results')),
    names,
  };
}

/** The longest a scenario may take: its phases plus drains and start-up slack. */
function scenarioBudgetSeconds(s: BenchSettings): number {
  const open = s.openLoop.rates.reduce((a, r) => a + s.openLoop.warmupSeconds + (s.openLoop.requests ? s.openLoop.requests / r : s.openLoop.seconds) + 12, 0);
  return s.saturation.warmupSeconds + s.saturation.seconds + 20 + open + 60;
}

function versionOf(bin: string | undefined, args: string[]): string {
  if (!bin) return 'absent';
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 5_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0].replace(/^nginx version: /, '').replace(/ \[.*$/, '').trim();
}

async function runScenario(name: ScenarioName, ctx: ScenarioContext, settings: BenchSettings, wrk: string | undefined): Promise<ScenarioResult> {
  const scenario = ALL_SCENARIOS.find((s) => s.name === name)!;
  const base = { name, description: scenario.description, openLoop: [], addedMs: {}, processes: [] };
  const started = Date.now();
  const skip = scenario.skip(ctx);
  if (skip) {
    log(`${name}: skipped (${skip})`);
    return { ...base, status: 'skipped', reason: skip, seconds: 0 };
  }
  let running: Running | undefined;
  const busy = machineBusySeconds();
  const own = ownTreeCpuSeconds();
  // Measured after stop(), when every process of the scenario has been waited for and its CPU is in cutime.
  const noise = (): number => {
    const other = machineBusySeconds() - busy - (ownTreeCpuSeconds() - own);
    return Number((other / (((Date.now() - started) / 1000) * cpus().length)).toFixed(3));
  };
  let result: Omit<ScenarioResult, 'otherCpuShare'>;
  try {
    log(`${name}: starting`);
    running = await scenario.start({ ...ctx, tmp: await mkdtemp(join(ctx.tmp, `${name}-`)) });
    await probe(running);
    const m = await measure(running, settings, wrk, log);
    result = { ...base, status: 'ok', ...m, seconds: (Date.now() - started) / 1000 };
  } catch (err) {
    log(`${name}: failed: ${(err as Error).message}`);
    result = { ...base, status: 'failed', reason: (err as Error).message, seconds: (Date.now() - started) / 1000 };
  } finally {
    await running?.stop();
  }
  return { ...result, otherCpuShare: noise() };
}

async function main(argv: string[]): Promise<number> {
  const { settings, out, names } = settingsFrom(argv);
  const startedAt = new Date();
  // Another job on the machine skews every figure; the load average before the run is the cheapest hint of one.
  const loadAtStart = loadavg()[0];
  const busyAtStart = machineBusySeconds();
  const ownAtStart = ownTreeCpuSeconds();
  const budget = names.length * scenarioBudgetSeconds(settings) + 60;
  const watchdog = setTimeout(() => {
    log(`exceeded its ${budget.toFixed(0)} s budget: stopping every process it started`);
    void stopAll().finally(() => process.exit(2));
  }, budget * 1000);
  const wrk = findExecutable('wrk', 'WRK');
  const nginx = findExecutable('nginx', 'NGINX');
  const tmp = await mkdtemp(join(tmpdir(), 'trellis-bench-'));
  try {
    log(`${settings.mode} run: ${names.join(', ')}; results to ${out}`);
    const ctx: ScenarioContext = { pki: await createBenchPki(join(tmp, 'ca')), tmp, nginx };
    const scenarios: ScenarioResult[] = [];
    for (const name of names) scenarios.push(await runScenario(name, ctx, settings, wrk));
    const direct = scenarios.find((s) => s.name === 'direct' && s.status === 'ok');
    const withAdded = scenarios.map((s) => ({ ...s, addedMs: s.status === 'ok' ? addedLatency(s, direct) : {} }));
    await stopAll();
    const finishedAt = new Date();
    const seconds = (finishedAt.getTime() - startedAt.getTime()) / 1000;
    // Busy CPU on the machine that was not the bench or anything it started: the other work it competed with.
    const otherCpu = machineBusySeconds() - busyAtStart - (ownTreeCpuSeconds() - ownAtStart);
    const results: BenchResults = {
      schema: 1,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationSeconds: seconds,
      settings,
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        memoryGb: Math.round(totalmem() / 2 ** 30),
        kernel: release(),
        node: process.version,
        nginx: versionOf(nginx, ['-v']),
        wrk: versionOf(wrk, ['-v']),
        loadAverage1mAtStart: Number(loadAtStart.toFixed(2)),
        loadAverage1mAtEnd: Number(loadavg()[0].toFixed(2)),
        otherCpuSeconds: Number(otherCpu.toFixed(1)),
        otherCpuShare: Number((otherCpu / (seconds * cpus().length)).toFixed(3)),
      },
      scenarios: withAdded,
      ratios: ratios(withAdded, settings),
      targets: targets(withAdded, settings),
      tracingCost: tracingCost(withAdded, settings),
      notMeasured: [{ figure: 'control-plane push (mesh apply until N sidecars ACK, N = 100, 1,000, 10,000)', reason: 'measured separately by `npm run bench:push`, see [push-latest.md](push-latest.md)' }],
    };
    const rate = headlineRate(settings);
    const lines = withAdded.flatMap((s) => {
      const run = s.openLoop.find((r) => r.rate === rate);
      return run ? [{ name: s.name, points: run.percentiles }] : [];
    });
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
    await writeFile(join(out, 'latency.svg'), latencySvg(`Latency by percentile at ${rate} rps, open loop, coordinated omission corrected`, lines));
    await writeFile(join(out, 'latest.md'), renderMarkdown(results, 'latency.svg'));
    log(`done in ${results.durationSeconds.toFixed(0)} s: ${join(out, 'latest.md')}`);
    return withAdded.some((s) => s.status === 'failed') ? 1 : 0;
  } finally {
    clearTimeout(watchdog);
    await stopAll();
    await rm(tmp, { recursive: true, force: true });
  }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping every process it started`);
    void stopAll().finally(() => process.exit(130));
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).message ?? String(err)}`);
    void stopAll().finally(() => process.exit(1));
  },
);
