// Keeps the benchmark harness from rotting: a tiny run of every scenario (or its skip reason) into a temp --out, plus the wrk report parser.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { parseWrk } from '../bench/wrk.js';
import { SCENARIOS, type BenchResults } from '../bench/types.js';

const RUN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist/bench/run.js');

function runBench(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    // SIGINT lets the harness stop the processes it started before it exits.
    const timer = setTimeout(() => child.kill('SIGINT'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('npm run bench', () => {
  let out: string | undefined;
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('measures every scenario (or says why it skipped) and writes latest.json, latest.md and latency.svg', async () => {
    if (!existsSync(RUN)) throw new Error(`${RUN} is missing: run "npm run build" first (npm test does)`);
    out = await mkdtemp(path.join(os.tmpdir(), 'trellis-bench-test-'));
    const { code, output } = await runBench(['--seconds', '1', '--requests', '300', '--rates', '1000', '--out', out], 75_000);
    expect(code, output).toBe(0);

    const results = JSON.parse(await readFile(path.join(out, 'latest.json'), 'utf8')) as BenchResults;
    expect(results.scenarios.map((s) => s.name)).toEqual([...SCENARIOS]);
    for (const s of results.scenarios) {
      expect(s.status, `${s.name}: ${s.reason ?? ''}`).not.toBe('failed');
      if (s.status === 'skipped') {
        expect(s.reason, s.name).toMatch(/not found/);
        continue;
      }
      const sat = s.saturation!;
      if ('rps' in sat) expect(sat.rps, s.name).toBeGreaterThan(0);
      else expect(sat.skipped, s.name).toMatch(/wrk not found/);
      const [run] = s.openLoop;
      expect(run.rate).toBe(1000);
      expect(run.completed, s.name).toBeGreaterThan(250);
      for (const v of Object.values(run.latencyMs)) expect(Number.isFinite(v) && v > 0, `${s.name} latency`).toBe(true);
      expect(run.percentiles.length).toBeGreaterThan(5);
      expect(Number.isFinite(run.generator.cpuPer1k)).toBe(true);
      expect(s.processes.length, s.name).toBe(s.name === 'direct' ? 0 : 2);
      for (const p of s.processes) {
        expect(p.peakRssMb, `${s.name} ${p.role}`).toBeGreaterThan(1);
        expect(typeof p.cpuPer1k['open-1000'], `${s.name} ${p.role}`).toBe('number');
      }
      if (s.name !== 'direct') expect(typeof s.addedMs['1000']?.p99, s.name).toBe('number');
    }
    expect(results.targets).toHaveLength(5);
    expect(Object.keys(results.ratios)).toHaveLength(6);
    // The cost of tracing: trellis (default tracing) against trellis-notrace (--tracing off), from the same run.
    const cost = results.tracingCost;
    expect(cost.p99Ms.trellis).toBeGreaterThan(0);
    expect(cost.p99Ms.notrace).toBeGreaterThan(0);
    expect(cost.cpuPer1k.notrace).toBeGreaterThan(0);
    const tracedSat = results.scenarios.find((s) => s.name === 'trellis')?.saturation;
    if (tracedSat && 'rps' in tracedSat) expect(cost.throughputRatio).toBeGreaterThan(0);

    const md = await readFile(path.join(out, 'latest.md'), 'utf8');
    for (const name of SCENARIOS) expect(md).toContain(`**${name}**`);
    expect(md).toContain('](latency.svg)');
    expect(md).toMatch(/\| tracing cost: trellis throughput \/ trellis-notrace throughput \| \d+\.\d+×/);
    expect(md).toContain('measured separately by `npm run bench:push`');
    const svg = await readFile(path.join(out, 'latency.svg'), 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('99.9');
  }, 90_000);
});

describe('parseWrk', () => {
  it('reads throughput, percentiles, the max and every kind of error from a wrk --latency report', () => {
    const report = `Running 5s test @ http://127.0.0.1:8080/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.06ms    1.21ms  40.10ms   90.00%
    Req/Sec     7.80k   300.00     8.10k    70.00%
  Latency Distribution
     50%    5.90ms
     75%    6.50ms
     90%    7.20ms
     99%   12.21ms
  38800 requests in 5.00s, 3.10MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 7
Requests/sec:   7760.00
Transfer/sec:    634.00KB
`;
    expect(parseWrk(report)).toEqual({
      requests: 38800, seconds: 5, rps: 7760, p50Ms: 5.9, p90Ms: 7.2, p99Ms: 12.21, maxMs: 40.1, socketErrors: 10, non2xx: 7,
    });
    expect(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused')).toThrow(/no result/);
  });
});
