// `npm run bench:overload`: the Trellis pair at twice its measured capacity, with load shedding on and off side by side.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { createBenchPki } from './pki.js';
import { findExecutable, spawnChild, stopAll } from './processes.js';
import { trellisPair, type Running } from './scenarios.js';
import { runWrk } from './wrk.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RESULTS = path.resolve(HERE, '..', '..', 'bench', 'results');

interface H2loadResult { ok2xx: number; s5xx: number; failed: number; meanMs: number; maxMs: number; rps: number }

/** h2load prints "status codes: N 2xx, …", "finished in Xs, Y req/s" and "time for request: min max mean sd". */
function parseH2load(out: string): H2loadResult {
  const codes = /status codes: (\d+) 2xx, \d+ 3xx, \d+ 4xx, (\d+) 5xx/.exec(out);
  const req = /requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const time = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  const rps = /finished in [^,]+, ([\d.]+) req\/s/.exec(out);
  const ms = (v: string | undefined) => (v === undefined ? NaN : v.endsWith('us') ? parseFloat(v) / 1000 : v.endsWith('ms') ? parseFloat(v) : parseFloat(v) * 1000);
  return {
    ok2xx: Number(codes?.[1] ?? 0), s5xx: Number(codes?.[2] ?? 0),
    // h2load counts a 5xx answer as "failed" too: only what got no answer at all is a failure here.
    failed: Number(req?.[1] ?? 0) - Number(codes?.[2] ?? 0) + Number(req?.[2] ?? 0) + Number(req?.[3] ?? 0),
    meanMs: ms(time?.[3]), maxMs: ms(time?.[2]), rps: Number(rps?.[1] ?? NaN),
  };
}

async function scrape(admin: string): Promise<string> {
  const r = await request(`http://${admin}/metrics`, { headersTimeout: 5_000, bodyTimeout: 5_000 });
  return r.body.text();
}

const value = (text: string, prefix: string): number => {
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
};

/** p99 of the outbound 200s as the client sidecar timed them, from its histogram buckets (upper bound of the bucket). */
function p99FromBuckets(text: string): number {
  const buckets = text.split('\n')
    .filter((l) => l.startsWith('mesh_request_duration_seconds_bucket{') && l.includes('direction="outbound"'))
    .map((l) => ({ le: Number(/le="([^"]+)"/.exec(l)?.[1] === '+Inf' ? Infinity : /le="([^"]+)"/.exec(l)?.[1]), n: Number(l.slice(l.lastIndexOf(' ') + 1)) }));
  const byLe = new Map<number, number>();
  for (const b of buckets) byLe.set(b.le, (byLe.get(b.le) ?? 0) + b.n);
  const sorted = [...byLe].sort((a, b) => a[0] - b[0]);
  const total = sorted.at(-1)?.[1] ?? 0;
  return (sorted.find(([, n]) => n >= total * 0.99)?.[0] ?? NaN) * 1000;
}

interface ModeResult { mode: string; h2: H2loadResult; shed: number; lagP99MaxMs: number[]; sidecarP99Ms: number; other: string; probe: string }

/** Counters that say where refusals other than shedding came from (a full circuit, failed TLS handshakes, ejections). */
function otherCounters(client: string, server: string): string {
  const picked: string[] = [];
  for (const [who, text] of [['client', client], ['server', server]] as const) {
    for (const line of text.split('\n')) {
      if (!/^mesh_(tls_handshake_errors|endpoint_ejections|retries)_total\{/.test(line)) continue;
      const v = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (v > 0) picked.push(`${who} ${line.slice(5, line.lastIndexOf(' ')).replace(/_total/, '')} ${v}`);
    }
  }
  return picked.join('; ') || 'none';
}

async function overloadRun(mode: 'on' | 'off', running: Running, h2loadBin: string, o: { rps: number; clients: number; seconds: number }): Promise<ModeResult> {
  const admins = running.admins ?? [];
  const lagMax = admins.map(() => 0);
  const sampler = setInterval(() => {
    admins.forEach((a, i) => void scrape(a).then((t) => { lagMax[i] = Math.max(lagMax[i], value(t, 'nodejs_eventloop_lag_p99_seconds') * 1000); }, () => undefined));
  }, 1_000);
  // A probe request every 100 ms: h2load counts 5xx but cannot say which x-mesh-error each carried.
  const kinds = new Map<string, number>();
  const prober = setInterval(() => {
    void request(running.url, { headers: { host: 'app' }, headersTimeout: 30_000 }).then(async (r) => {
      await r.body.dump();
      const k = `${r.statusCode}${r.headers['x-mesh-error'] ? ` ${String(r.headers['x-mesh-error'])}` : ''}`;
      kinds.set(k, (kinds.get(k) ?? 0) + 1);
    }, (err: Error & { code?: string }) => kinds.set(err.code ?? 'error', (kinds.get(err.code ?? 'error') ?? 0) + 1));
  }, 100);
  const perClient = Math.max(1, Math.round(o.rps / o.clients));
  const child = spawnChild('h2load', h2loadBin, ['--h1', '-t', '1', '-c', String(o.clients), '--rps', String(perClient), '-D', String(o.seconds),
    '-H', ':authority: app', '-T', '30', running.url]);
  let out = '';
  child.proc.stdout?.on('data', (c: Buffer) => { out += c.toString(); });
  const timer = setTimeout(() => void child.stop('SIGKILL', 1_000), (o.seconds + 60) * 1000);
  await child.exited;
  clearTimeout(timer);
  clearInterval(sampler);
  clearInterval(prober);
  const clientMetrics = admins[0] ? await scrape(admins[0]) : '';
  const serverMetrics = admins[1] ? await scrape(admins[1]) : '';
  return {
    mode, h2: parseH2load(out),
    shed: value(clientMetrics, 'mesh_overload_shed_total{direction="outbound"}') + value(serverMetrics, 'mesh_overload_shed_total{direction="inbound"}'),
    lagP99MaxMs: lagMax, sidecarP99Ms: p99FromBuckets(clientMetrics), other: otherCounters(clientMetrics, serverMetrics),
    probe: [...kinds].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k}: ${n}`).join(', '),
  };
}

async function main(): Promise<number> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { seconds: { type: 'string', default: '15' }, clients: { type: 'string', default: '400' }, load: { type: 'string', default: '2' }, out: { type: 'string' } }, strict: true });
  const seconds = Number(values.seconds);
  const clients = Number(values.clients);
  // The offered rate as a multiple of the measured capacity: 2 is the issue's overload; 1 tells apart what the
  // connection count costs from what the excess does.
  const load = Number(values.load);
  if (!(seconds > 0) || !(clients > 0) || !(load > 0)) throw new Error('--seconds, --clients and --load must be positive numbers');
  const wrk = findExecutable('wrk', 'WRK');
  const h2loadBin = findExecutable('h2load', 'H2LOAD');
  if (!wrk || !h2loadBin) throw new Error('needs wrk and h2load (Debian: wrk, nghttp2-client)');
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'trellis-overload-'));
  try {
    const ctx = { pki: await createBenchPki(tmp), tmp, nginx: undefined };
    const on = trellisPair('trellis', 'shedding on (default --shed-lag 100ms)', []);
    const off = trellisPair('trellis', 'shedding off (--shed-lag 0)', ['--shed-lag', '0']);
    let r = await on.start(ctx);
    const cap = await runWrk({ bin: wrk, url: r.url, host: r.host, connections: 50, seconds: 8 });
    await r.stop();
    const offered = Math.round(cap.rps * load);
    process.stderr.write(`overload: capacity ${Math.round(cap.rps)} req/s (wrk -c50); offering ${offered} req/s from ${clients} connections for ${seconds} s\n`);
    const results: ModeResult[] = [];
    for (const [mode, sc] of [['on', on], ['off', off]] as const) {
      r = await sc.start(ctx);
      results.push(await overloadRun(mode, r, h2loadBin, { rps: offered, clients, seconds }));
      await r.stop();
    }
    const md = [
      '# Trellis under overload',
      '',
      `\`npm run bench:overload -- --clients ${clients} --load ${load}\`, ${new Date().toISOString()}, ${os.cpus().length} CPUs. The Trellis pair (client sidecar → mTLS → server sidecar → app),`,
      `first at saturation (wrk -t1 -c50 -d8s: **${Math.round(cap.rps)} req/s**, the capacity), then offered ${load === 2 ? 'twice' : `${load} ×`} that,`,
      `${offered} req/s, as h2load --h1 -c ${clients} --rps ${Math.max(1, Math.round(offered / clients))} for ${seconds} s: once with load shedding on`,
      '(the default, `--shed-lag 100ms`) and once off (`--shed-lag 0`). The load generator shares the two cores with both sidecars.',
      '',
      '| figure | shedding on | shedding off |',
      '| --- | --- | --- |',
      `| 2xx answered, req/s | ${f(results[0].h2.ok2xx / seconds)} | ${f(results[1].h2.ok2xx / seconds)} |`,
      `| 503 answered (shed, x-mesh-error: overloaded) | ${results[0].h2.s5xx} (${results[0].shed} counted by the sidecars) | ${results[1].h2.s5xx} (${results[1].shed}) |`,
      `| no answer: errored or timed out (h2load, 30 s timeout) | ${results[0].h2.failed} | ${results[1].h2.failed} |`,
      `| time per request, mean / max (all answers, h2load) | ${f(results[0].h2.meanMs)} / ${f(results[0].h2.maxMs)} ms | ${f(results[1].h2.meanMs)} / ${f(results[1].h2.maxMs)} ms |`,
      `| p99 of outbound requests as the client sidecar timed them (bucket bound) | ${f(results[0].sidecarP99Ms)} ms | ${f(results[1].sidecarP99Ms)} ms |`,
      `| answers to a probe request every 100 ms (status x-mesh-error: count) | ${results[0].probe} | ${results[1].probe} |`,
      `| other refusals and retries (the sidecars' counters) | ${results[0].other} | ${results[1].other} |`,
      `| event-loop lag p99, worst 1-s sample, client / server sidecar | ${results[0].lagP99MaxMs.map((x) => f(x)).join(' / ')} ms | ${results[1].lagP99MaxMs.map((x) => f(x)).join(' / ')} ms |`,
      '',
    ].join('\n');
    await writeFile(values.out ?? path.join(RESULTS, 'overload-latest.md'), md);
    process.stdout.write(md + '\n');
    return 0;
  } finally {
    await stopAll();
    await rm(tmp, { recursive: true, force: true });
  }
}

const f = (n: number) => (Number.isFinite(n) ? (n >= 100 ? n.toFixed(0) : n.toFixed(1)) : '–');

main().then((code) => process.exit(code), (err: Error) => {
  process.stderr.write(`overload: ${err.stack ?? err.message}\n`);
  void stopAll().finally(() => process.exit(2));
});
