// Test harness: runs a real `prometheus` (Debian package prometheus) on a free loopback port with a temp storage dir and
// a file_sd scrape config, and reads its /api/v1/targets.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../cli/ports.js';
import { which } from '../../cli/which.js';
import { request } from './client.js';
import { waitFor, withDeadline } from './wait.js';

/** .ci/run installs Debian's prometheus: under CI a missing binary fails the test; elsewhere it is skipped with a reason. */
export const REQUIRE_PROMETHEUS = process.env.CI === 'true';

/** $PROMETHEUS_BIN, else the first `prometheus` on PATH. */
export function prometheusBinary(): string | undefined {
  return which('prometheus', process.env.PROMETHEUS_BIN);
}

export interface ActiveTarget {
  readonly scrapeUrl: string;
  readonly health: string;
  readonly labels: Record<string, string>;
  readonly lastError: string;
}

export interface Prometheus {
  readonly address: string;
  targets(): Promise<ActiveTarget[]>;
  log(): string;
  stop(): Promise<void>;
}


/** Scrapes every target listed in `fileSd` every `scrapeInterval` (default 1s); resolves once /-/ready answers. */
export async function startPrometheus(bin: string, fileSd: string, scrapeInterval = '1s'): Promise<Prometheus> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-prom-'));
  const config = path.join(dir, 'prometheus.yml');
  // The one-line config the README documents: a file_sd job; the targets carry their own `job` label.
  await writeFile(config, [
    'global:',
    `  scrape_interval: ${scrapeInterval}`,
    `  scrape_timeout: ${scrapeInterval}`,
    'scrape_configs:',
    `  - { job_name: mesh, file_sd_configs: [ { files: [ ${JSON.stringify(fileSd)} ] } ] }`,
    '',
  ].join('\n'));
  const address = `127.0.0.1:${await freePort()}`;
  const child: ChildProcess = spawn(bin, [
    `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=${address}`, '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (log += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      try {
        await withDeadline(exited, 10_000, 'prometheus to exit after SIGTERM');
      } catch {
        child.kill('SIGKILL');
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    })();
    return stopping;
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${log.slice(-2_000)}`);
      return (await request(address, { path: '/-/ready', timeoutMs: 1_000 })).status === 200;
    }, { timeoutMs: 20_000, intervalMs: 100, what: 'prometheus /-/ready' });
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n--- prometheus log:\n${log.slice(-2_000)}`);
  }
  return {
    address,
    log: () => log,
    async targets() {
      const r = await request(address, { path: '/api/v1/targets?state=active', timeoutMs: 3_000 });
      if (r.status !== 200) throw new Error(`GET /api/v1/targets answered ${r.status}: ${r.body}`);
      return (JSON.parse(r.body) as { data: { activeTargets: ActiveTarget[] } }).data.activeTargets;
    },
    stop,
  };
}
