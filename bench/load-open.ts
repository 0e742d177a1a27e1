// Open-loop load generator (its own process): GETs on a fixed schedule through a keep-alive undici Pool, latency from the intended send time into an HDR histogram, printed as JSON.
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { build, type Histogram } from 'hdr-histogram-js';
import { Pool } from 'undici';
import { hrMs, type ClockSchedule } from './load-clock.js';
import { cpuSeconds, peakRssMb } from './proc.js';
import type { LatencySummary, OpenLoopRun } from './types.js';

const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    host: { type: 'string', default: 'app' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '64' },
    timeout: { type: 'string', default: '10000' },
  },
  strict: true,
});
if (!values.url) throw new Error('load-open: --url is required');
const url = new URL(values.url);
const rate = Number(values.rate);
const seconds = Number(values.seconds);
const warmup = Number(values.warmup);
const connections = Number(values.connections);
const timeoutMs = Number(values.timeout);
if (!(rate > 0 && seconds > 0 && warmup >= 0 && connections > 0 && timeoutMs > 0)) throw new Error('load-open: rate, seconds, connections and timeout must be positive');

// Microseconds, 3 significant digits: 0.1% resolution at every magnitude.
const histogram = (): Histogram => build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
const corrected = histogram(); // completion − intended send time: what a user with this schedule would see
const service = histogram(); // completion − actual send time: what coordinated omission would report
const lag = histogram(); // actual − intended send time: the generator's own scheduling delay

const pool = new Pool(url.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
const headers = { host: values.host };
const path = `${url.pathname}${url.search}`;

const interval = 1000 / rate;
const t0 = hrMs() + 100; // time for the clock thread to start
const measureAt = t0 + warmup * 1000;
const end = measureAt + seconds * 1000;
const count = Math.ceil((end - t0) / interval);
const pending = new Set<number>(); // intended times of measured requests still in flight
let sent = 0;
let completed = 0;
let errors = 0;
let firstError: string | undefined;
let cpuAtStart: number | undefined;
let i = 0;
let finishing = false;

const us = (ms: number): number => Math.max(1, Math.round(ms * 1000));

function fire(intended: number, measured: boolean): void {
  const at = hrMs();
  if (measured) {
    sent++;
    pending.add(intended);
    lag.recordValue(us(at - intended));
  }
  const done = (ok: boolean, why?: string): void => {
    if (!measured || !pending.delete(intended)) return;
    const now = hrMs();
    if (ok) {
      completed++;
      corrected.recordValue(us(now - intended));
      service.recordValue(us(now - at));
    } else {
      errors++;
      firstError ??= why;
    }
  };
  pool.request({ path, method: 'GET', headers }).then(
    async ({ statusCode, body }) => {
      await body.dump();
      done(statusCode >= 200 && statusCode < 300, `HTTP ${statusCode}`);
    },
    (err: Error) => done(false, err.message),
  );
}

/** Sends every request whose intended time has come; the metronome thread calls it at each one. */
function tick(): void {
  const now = hrMs();
  for (; i < count && t0 + i * interval <= now; i++) {
    const intended = t0 + i * interval;
    const measured = intended >= measureAt;
    if (measured && cpuAtStart === undefined) {
      cpuAtStart = cpuSeconds('self');
      process.stdout.write(`${JSON.stringify({ event: 'measure-start' })}\n`);
    }
    fire(intended, measured);
  }
  if (i >= count && !finishing) {
    finishing = true;
    void finish();
  }
}

function summary(h: Histogram): LatencySummary {
  // A percentile is reported as its bucket's highest equivalent value, which can sit a hair above the exact max.
  const at = (p: number): number => Math.min(h.getValueAtPercentile(p), h.maxValue) / 1000;
  return { p50: at(50), p90: at(90), p99: at(99), p999: at(99.9), p9999: at(99.99), max: h.maxValue / 1000, mean: h.mean / 1000 };
}

/** Points for the percentile plot: 50th up to the deepest percentile the sample count supports, eight per "nine". */
function curve(h: Histogram): [number, number][] {
  const deepest = Math.min(5, Math.log10(Math.max(2, h.totalCount)));
  const nines = [Math.log10(2)];
  for (let k = 3; k / 8 <= deepest + 1e-9; k++) nines.push(k / 8);
  const points = nines.map((n): [number, number] => {
    const p = Number((100 * (1 - 10 ** -n)).toFixed(4));
    return [p, Math.min(h.getValueAtPercentile(p), h.maxValue) / 1000];
  });
  return points;
}

async function finish(): Promise<void> {
  // Drain the measured requests, bounded: whatever is still out at the deadline is recorded at that age, not dropped.
  const deadline = hrMs() + timeoutMs;
  while (pending.size > 0 && hrMs() < deadline) await new Promise((r) => setTimeout(r, 5));
  const unfinished = pending.size;
  const now = hrMs();
  for (const intended of pending) corrected.recordValue(us(now - intended));
  pending.clear();
  const cpu = (cpuSeconds('self') ?? NaN) - (cpuAtStart ?? NaN);
  const result: OpenLoopRun = {
    rate,
    seconds,
    warmupSeconds: warmup,
    connections,
    sent,
    completed,
    errors,
    unfinished,
    firstError,
    achievedRps: completed / seconds,
    latencyMs: summary(corrected),
    serviceTimeMs: summary(service),
    scheduleLagMs: summary(lag),
    percentiles: curve(corrected),
    generator: { cpuSeconds: cpu, cpuPer1k: (cpu / Math.max(1, sent)) * 1000, peakRssMb: peakRssMb('self') ?? NaN },
  };
  process.stdout.write(`${JSON.stringify({ event: 'result', ...result })}\n`, () => {
    void pool.destroy().finally(() => process.exit(0));
  });
}

const schedule: ClockSchedule = { t0, interval, count };
const clock = new Worker(new URL('./load-clock.js', import.meta.url), { workerData: schedule });
clock.on('message', tick);
clock.on('error', (err) => {
  process.stderr.write(`load-open: clock thread failed: ${err.message}\n`);
  process.exit(1);
});
