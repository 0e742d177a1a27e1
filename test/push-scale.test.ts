// Keeps the control-plane push benchmark (bench/push-scale.ts) from rotting: N = 50 simulated sidecars into a temp --out dir.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { PushResults } from '../bench/push-scale.js';

const RUN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist/bench/push-scale.js');

function runPushBench(args: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [RUN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('npm run bench:push', () => {
  let out: string | undefined;
  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('pushes a weight change to 50 simulated sidecars, every one ACKs it, and writes push-latest.json and .md', async () => {
    if (!existsSync(RUN)) throw new Error(`${RUN} is missing: run "npm run build" first (npm test does)`);
    out = await mkdtemp(path.join(os.tmpdir(), 'trellis-push-test-'));
    const { code, output } = await runPushBench(['--sizes', '50', '--out', out, '--timeout', '20', '--disconnect-timeout', '10'], 38_000);
    expect(code, output).toBe(0);

    const results = JSON.parse(await readFile(path.join(out, 'push-latest.json'), 'utf8')) as PushResults;
    expect(results.runs).toHaveLength(1);
    const [run] = results.runs;
    expect(run.error, output).toBeUndefined();
    expect(run.n).toBe(50);
    // Every simulated sidecar received the new version and ACKed it; the control plane agrees.
    expect(run.push.acked, output).toBe(50);
    expect(run.push.missing).toBe(0);
    expect(run.push.statusSidecars).toBe(50);
    expect(run.push.statusInSync).toBe(50);
    expect(run.push.version).toBeGreaterThan(0);
    expect(run.push.weightsSeen).toBe('50/50');
    for (const x of [run.push.p50Ms, run.push.p99Ms, run.push.maxMs, run.push.allAckedMs, run.push.statusInSyncMs, run.connect.allFirstSnapshotMs,
      run.connect.registeredMs, run.cp.peakRssMb, run.cp.cpuSec]) {
      expect(Number.isFinite(x), JSON.stringify(run)).toBe(true);
    }
    expect(run.push.p50Ms).toBeGreaterThan(0);
    expect(run.push.p50Ms).toBeLessThanOrEqual(run.push.p99Ms);
    expect(run.push.p99Ms).toBeLessThanOrEqual(run.push.maxMs);
    expect(run.cp.peakRssMb).toBeGreaterThan(10);

    const md = await readFile(path.join(out, 'push-latest.md'), 'utf8');
    expect(md).toMatch(/\| N \| p50 \| p99 \| max \| all acked/);
    expect(md).toMatch(/^\| 50 \|/m);
  }, 40_000);
});
