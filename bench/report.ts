// bench/results/latest.md: every scenario side by side, the ratios, the cost of tracing, the Trellis targets, the plot reference and what was not measured.
import { headlineRate } from './analysis.js';
import type { BenchResults, LatencySummary, OpenLoopRun, ScenarioResult } from './types.js';

const PCTS: [keyof LatencySummary, string][] = [['p50', 'p50'], ['p90', 'p90'], ['p99', 'p99'], ['p999', 'p99.9'], ['max', 'max']];

function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  return `${Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(1)} ms`;
}

function signed(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '';
  return ` (${v >= 0 ? '+' : '−'}${Math.abs(v) < 10 ? Math.abs(v).toFixed(2) : Math.abs(v).toFixed(1)})`;
}

function num(v: number | null | undefined, digits = 2): string {
  return v === null || v === undefined || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits);
}

const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;

/** `a` against `b` as "a vs b (+d)"; the difference is what tracing adds. */
function versus(a: number | null, b: number | null, fmt: (v: number) => string): string {
  if (a === null || b === null) return 'n/a';
  const d = a - b;
  return `${fmt(a)} vs ${fmt(b)} (${d >= 0 ? '+' : '−'}${fmt(Math.abs(d))})`;
}

function tracingCostLines(r: BenchResults): string[] {
  const c = r.tracingCost;
  const missing = (['trellis', 'trellis-notrace'] as const).filter((n) => !r.scenarios.some((s) => s.name === n && s.status === 'ok'));
  const head = 'Trellis with tracing at the default sampling (`trellis`: trace context extracted and propagated on every request, '
    + 'spans recorded at MeshConfig `tracing.sampling`, 0.01 by default) against the same pair with both sidecars started with '
    + '`--tracing off` (`trellis-notrace`), measured one after the other in this run.';
  if (missing.length > 0) return [head, '', `Not measured: ${missing.map((n) => `\`${n}\``).join(' and ')} did not run.`];
  const pct = c.throughputRatio === null ? '' : ` (${c.throughputRatio <= 1 ? '−' : '+'}${Math.abs((1 - c.throughputRatio) * 100).toFixed(1)} %)`;
  return [
    head,
    '',
    row(['figure', 'trellis vs trellis-notrace']),
    row(['---', '---']),
    row(['tracing cost: trellis throughput / trellis-notrace throughput', c.throughputRatio === null ? 'n/a' : `${c.throughputRatio.toFixed(3)}×${pct}`]),
    row([`p99 at ${c.rate} rps`, versus(c.p99Ms.trellis, c.p99Ms.notrace, (v) => ms(v))]),
    row([`CPU s per 1,000 req at ${c.rate} rps (larger sidecar)`, versus(c.cpuPer1k.trellis, c.cpuPer1k.notrace, (v) => v.toFixed(3))]),
    '',
    'Two runs of the same pair differ by several per cent on this machine (see bench/README.md), so a cost smaller than that is within noise.',
  ];
}

/** A cell for a scenario that did not run: the whole row says why. */
function notRun(s: ScenarioResult): string | undefined {
  return s.status === 'ok' ? undefined : `${s.status}`;
}

function perProcess(s: ScenarioResult, f: (p: ScenarioResult['processes'][number]) => string): string {
  if (s.status !== 'ok') return s.status;
  return s.processes.length === 0 ? '–' : s.processes.map(f).join(' / ');
}

function latencyRows(all: ScenarioResult[], rate: number): string[] {
  const run = (s: ScenarioResult): OpenLoopRun | undefined => s.openLoop.find((r) => r.rate === rate);
  const rows = PCTS.map(([k, label]) =>
    row([`${label} at ${rate} rps`, ...all.map((s) => notRun(s) ?? (run(s) ? `${ms(run(s)!.latencyMs[k])}${signed(s.addedMs[String(rate)]?.[k])}` : 'n/a'))]));
  rows.push(row([`achieved rps / errors at ${rate} rps`, ...all.map((s) => notRun(s) ?? (run(s)
    ? `${run(s)!.achievedRps.toFixed(0)} / ${run(s)!.errors + run(s)!.unfinished}` : 'n/a'))]));
  return rows;
}

function sideBySide(r: BenchResults): string[] {
  const all = r.scenarios;
  const rate = headlineRate(r.settings);
  const sat = r.settings.saturation;
  const out = [
    row(['figure', ...all.map((s) => `**${s.name}**`)]),
    row(['---', ...all.map(() => '---')]),
    row([`throughput, req/s (wrk -t${sat.threads} -c${sat.connections} -d${sat.seconds}s)`, ...all.map((s) => notRun(s)
      ?? (s.saturation && 'rps' in s.saturation ? s.saturation.rps.toFixed(0) : `skipped: ${s.saturation?.skipped ?? 'n/a'}`))]),
    row(['wrk p50 / p99 (closed loop, not CO-corrected)', ...all.map((s) => notRun(s)
      ?? (s.saturation && 'rps' in s.saturation ? `${ms(s.saturation.p50Ms)} / ${ms(s.saturation.p99Ms)}` : 'n/a'))]),
    row(['wrk socket errors / non-2xx', ...all.map((s) => notRun(s)
      ?? (s.saturation && 'rps' in s.saturation ? `${s.saturation.socketErrors} / ${s.saturation.non2xx}` : 'n/a'))]),
    ...latencyRows(all, rate),
    row([`CPU s per 1,000 req at ${rate} rps, per proxy process`, ...all.map((s) => perProcess(s, (p) => num(p.cpuPer1k[`open-${rate}`], 3)))]),
    row(['CPU s per 1,000 req at saturation, per proxy process', ...all.map((s) => perProcess(s, (p) => num(p.cpuPer1k.saturation, 3)))]),
    row(['peak RSS (VmHWM) MB, per proxy process', ...all.map((s) => perProcess(s, (p) => num(p.peakRssMb, 1)))]),
    row(['proxy processes', ...all.map((s) => perProcess(s, (p) => p.role))]),
    row(['other programs\' share of all cores while it ran (noise)', ...all.map((s) => (s.otherCpuShare === undefined ? 'n/a' : `${(s.otherCpuShare * 100).toFixed(0)} %`))]),
  ];
  return out;
}

export function renderMarkdown(r: BenchResults, svgName: string): string {
  const rate = headlineRate(r.settings);
  const m = r.machine;
  const o = r.settings.openLoop;
  const lines: string[] = [
    '# Trellis benchmarks',
    '',
    `${r.settings.mode} run of \`npm run bench${r.settings.mode === 'quick' ? ' -- --quick' : ''}\`, started ${r.startedAt}, took ${r.durationSeconds.toFixed(0)} s.`,
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGb} GB, Linux ${m.kernel}, Node ${m.node}, ${m.nginx}, ${m.wrk}; 1-minute load average ${m.loadAverage1mAtStart} before the run (${m.loadAverage1mAtEnd} at its end, which includes the bench itself).`,
    `Every scenario was measured in this run, one after another, each with its own processes, all on loopback and sharing the same cores. Other programs on the machine used ${m.otherCpuSeconds} CPU-seconds during the run (${(Number(m.otherCpuShare) * 100).toFixed(0)} % of all cores); the more, the noisier the figures.`,
    'How each figure is measured and what it does not say: [bench/README.md](../README.md).',
    '',
    '## Side by side',
    '',
    `Latency cells: open loop at a fixed rate through an undici Pool (bench/load-open.ts), ${o.seconds} s after ${o.warmupSeconds} s of warm-up, measured from each request's intended send time (coordinated omission corrected); in parentheses the latency added over \`direct\` at the same rate and percentile in this run. Per-process cells list ${'`client / server`'} halves.`,
    '',
    ...sideBySide(r),
  ];
  const others = o.rates.filter((x) => x !== rate);
  if (others.length > 0) {
    lines.push('', '## Latency at the other rates', '', row(['figure', ...r.scenarios.map((s) => `**${s.name}**`)]), row(['---', ...r.scenarios.map(() => '---')]));
    for (const x of others) {
      lines.push(...latencyRows(r.scenarios, x));
      lines.push(row([`CPU s per 1,000 req at ${x} rps`, ...r.scenarios.map((s) => perProcess(s, (p) => num(p.cpuPer1k[`open-${x}`], 3)))]));
    }
  }
  lines.push('', '## Ratios', '', row(['ratio', 'value']), row(['---', '---']));
  for (const [k, v] of Object.entries(r.ratios)) lines.push(row([k, v === null ? 'n/a' : `${v.toFixed(2)}×`]));
  lines.push('', `An added-p99 ratio above 1 means Trellis adds more tail latency than the baseline; when the baseline adds almost nothing the ratio is large and noisy, so read it with the absolute figures above.`);
  lines.push('', '## Tracing cost', '', ...tracingCostLines(r));
  lines.push('', '## Trellis targets', '', row(['target', 'measured', 'threshold', 'met']), row(['---', '---', '---', '---']));
  for (const t of r.targets) {
    const value = t.value === null ? 'n/a' : t.target.startsWith('throughput') ? `${t.value.toFixed(2)}×` : t.value.toFixed(t.value < 1 ? 3 : 2);
    lines.push(row([t.note ? `${t.target} (${t.note})` : t.target, value, t.threshold, t.met === null ? 'unknown' : t.met ? 'yes' : '**no**']));
  }
  lines.push('', `## Latency by percentile at ${rate} rps`, '', `![latency by percentile](${svgName})`);
  lines.push('', '## Not measured', '');
  for (const n of r.notMeasured) lines.push(`- ${n.figure}: not measured: ${n.reason}`);
  const notOk = r.scenarios.filter((s) => s.status !== 'ok');
  if (notOk.length > 0) {
    lines.push('', '## Skipped or failed scenarios', '');
    for (const s of notOk) lines.push(`- \`${s.name}\` ${s.status}: ${(s.reason ?? '').split('\n')[0]}`);
  }
  const gen = r.scenarios.flatMap((s) => s.openLoop).map((x) => x.generator.cpuPer1k).filter(Number.isFinite);
  const lag = r.scenarios.flatMap((s) => s.openLoop.filter((x) => x.rate === rate)).map((x) => x.scheduleLagMs.p99);
  lines.push('', '## The load generator', '',
    `bench/load-open.ts (undici Pool, ${o.connections} keep-alive connections, one process) used ${gen.length ? `${num(Math.min(...gen), 3)}–${num(Math.max(...gen), 3)}` : 'n/a'} s of CPU per 1,000 requests in this run (from /proc/self/stat), on the same cores as the proxies. `
    + `Its own send lag at ${rate} rps (actual minus intended send time), p99: ${lag.length ? lag.map((v) => ms(v)).join(', ') : 'n/a'} by scenario; it is part of every latency figure, direct's too, and it grows when the proxies leave the generator less CPU.`);
  lines.push('', '## Scenarios', '');
  for (const s of r.scenarios) lines.push(`- \`${s.name}\`: ${s.description}`);
  return `${lines.join('\n')}\n`;
}
