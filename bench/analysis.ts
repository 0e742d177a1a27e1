// Figures derived from the measured ones: latency added over direct at the same rate, the Trellis/baseline ratios, the Trellis targets and the cost of tracing.
import type { BenchSettings, LatencySummary, OpenLoopRun, ScenarioName, ScenarioResult, TargetCheck, TracingCost } from './types.js';

const KEYS: (keyof LatencySummary)[] = ['p50', 'p90', 'p99', 'p999', 'p9999', 'max', 'mean'];

/** The rate the added-latency and CPU targets are read at: 1,000 rps when it was run, else the first rate. */
export function headlineRate(s: BenchSettings): number {
  return s.openLoop.rates.includes(1000) ? 1000 : s.openLoop.rates[0];
}

function runAt(s: ScenarioResult | undefined, rate: number): OpenLoopRun | undefined {
  return s?.status === 'ok' ? s.openLoop.find((r) => r.rate === rate) : undefined;
}

/** Scenario minus direct, percentile by percentile, for every rate both ran in this run. */
export function addedLatency(s: ScenarioResult, direct: ScenarioResult | undefined): Record<string, LatencySummary | null> {
  const out: Record<string, LatencySummary | null> = {};
  if (s.name === 'direct') return out;
  for (const run of s.openLoop) {
    const base = runAt(direct, run.rate);
    out[String(run.rate)] = base
      ? (Object.fromEntries(KEYS.map((k) => [k, run.latencyMs[k] - base.latencyMs[k]])) as unknown as LatencySummary)
      : null;
  }
  return out;
}

function find(all: ScenarioResult[], name: ScenarioName): ScenarioResult | undefined {
  return all.find((s) => s.name === name && s.status === 'ok');
}

export function throughput(s: ScenarioResult | undefined): number | null {
  return s?.saturation && 'rps' in s.saturation ? s.saturation.rps : null;
}

export function addedP99(s: ScenarioResult | undefined, rate: number): number | null {
  return s?.addedMs[String(rate)]?.p99 ?? null;
}

function ratio(a: number | null, b: number | null): number | null {
  return a !== null && b !== null && b > 0 ? a / b : null;
}

export function ratios(all: ScenarioResult[], s: BenchSettings): Record<string, number | null> {
  const rate = headlineRate(s);
  const [t, n, h] = [find(all, 'trellis'), find(all, 'nginx-pair'), find(all, 'http-proxy-pair')];
  const cost = tracingCost(all, s);
  return {
    'throughput trellis/nginx-pair': ratio(throughput(t), throughput(n)),
    'throughput trellis/http-proxy-pair': ratio(throughput(t), throughput(h)),
    [`added p99 at ${rate} rps trellis/nginx-pair`]: ratio(addedP99(t, rate), addedP99(n, rate)),
    [`added p99 at ${rate} rps trellis/http-proxy-pair`]: ratio(addedP99(t, rate), addedP99(h, rate)),
    'tracing cost: throughput trellis/trellis-notrace': cost.throughputRatio,
    [`tracing cost: p99 at ${rate} rps trellis/trellis-notrace`]: ratio(cost.p99Ms.trellis, cost.p99Ms.notrace),
  };
}

/** Tracing at the default sampling (trellis) against no tracing stage at all (trellis-notrace), same run. */
export function tracingCost(all: ScenarioResult[], s: BenchSettings): TracingCost {
  const rate = headlineRate(s);
  const [t, off] = [find(all, 'trellis'), find(all, 'trellis-notrace')];
  const cpu = (x: ScenarioResult | undefined): number | null => (x ? worstOf(x.processes.map((p) => p.cpuPer1k[`open-${rate}`])) : null);
  return {
    throughputRatio: ratio(throughput(t), throughput(off)),
    rate,
    p99Ms: { trellis: runAt(t, rate)?.latencyMs.p99 ?? null, notrace: runAt(off, rate)?.latencyMs.p99 ?? null },
    cpuPer1k: { trellis: cpu(t), notrace: cpu(off) },
  };
}

function check(target: string, value: number | null, threshold: string, ok: (v: number) => boolean, note?: string): TargetCheck {
  return { target, value, threshold, met: value === null ? null : ok(value), ...(note ? { note } : {}) };
}

function worstOf(values: (number | null | undefined)[]): number | null {
  const v = values.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return v.length === values.length && v.length > 0 ? Math.max(...v) : null;
}

/** The Trellis targets of the issue; `met` is null when a figure needed for the check is missing. */
export function targets(all: ScenarioResult[], s: BenchSettings): TargetCheck[] {
  const rate = headlineRate(s);
  const r = ratios(all, s);
  const t = find(all, 'trellis');
  const sidecars = t?.processes ?? [];
  return [
    check('throughput vs nginx-pair', r['throughput trellis/nginx-pair'], '≥ 0.5×', (v) => v >= 0.5),
    check('throughput vs http-proxy-pair', r['throughput trellis/http-proxy-pair'], '≥ 2.5×', (v) => v >= 2.5),
    check(`added p99 at ${rate} rps (ms)`, addedP99(t, rate), '≤ 1.5 ms', (v) => v <= 1.5),
    check('peak RSS per sidecar (MB)', worstOf(sidecars.map((p) => p.peakRssMb)), '≤ 64 MB', (v) => v <= 64, 'the larger of the two sidecars'),
    check(`CPU per 1,000 requests per sidecar at ${rate} rps (s)`, worstOf(sidecars.map((p) => p.cpuPer1k[`open-${rate}`])), '≤ 0.25 s', (v) => v <= 0.25,
      'the larger of the two sidecars'),
  ];
}
