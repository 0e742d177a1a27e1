// `npm run soak -- --minutes N`: a control plane and three sidecars under mixed load with faults, certificate rotations
// and config pushes; reports RSS slope, file descriptors, event-loop p99, uncaught errors and failed requests.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { applyCommand } from '../cli/resources-cmd.js';
import { startListening, stopAll, type Child } from './processes.js';
import { startSoakApp } from './soak-app.js';
import { runSoakLoad, type LoadCounts } from './soak-load.js';
import { defaultWarmupS, renderSoak, sample, slopesOf, type ProcessSamples, type SoakResult } from './soak-report.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.resolve(HERE, '..', 'cli', 'main.js');
const RESULTS = path.resolve(HERE, '..', '..', 'bench', 'results');

const doc = (kind: string, name: string, spec: Record<string, unknown>) => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

/** The soak mesh. The route's timeout alternates at every push, so each push is a real change every sidecar must ACK. */
function resources(push: number): string {
  return [
    // The access log is on so that a failed request can be followed through every sidecar (soak.ts keeps the last 20 s).
    // 3 minutes: renewal at 70 % of the lifetime, so every sidecar rotates its certificate about every 2 minutes.
    doc('MeshConfig', 'default', { mtls: 'strict', certificateTTL: '3m', tracing: { sampling: 0.01 }, accessLog: true }),
    doc('Service', 'soak-client', { protocol: 'http' }),
    doc('Service', 'soak', { protocol: 'http' }),
    doc('Route', 'soak', {
      hosts: ['soak'],
      rules: [{
        backends: [{ service: 'soak', weight: 100 }],
        timeout: push % 2 === 0 ? '10s' : '11s',
        retries: { attempts: 3, perTryTimeout: '5s', retryOn: ['connect-failure', 'refused-stream', 'reset', 'gateway-error'], backoff: { base: '10ms', max: '100ms' } },
      }],
    }),
  ].map((d) => JSON.stringify(d)).join('\n---\n');
}

async function apply(file: string, text: string, cp: string, dir: string): Promise<void> {
  await writeFile(file, text);
  const lines: string[] = [];
  const code = await applyCommand(['-f', file, '--control-plane', cp, '--dir', dir], { stdout: (s) => lines.push(s), stderr: (s) => lines.push(s) });
  if (code !== 0) throw new Error(`mesh apply failed: ${lines.join('\n')}`);
}

async function metricsOf(admin: string): Promise<string> {
  const r = await fetch(`http://${admin}/metrics`, { signal: AbortSignal.timeout(5_000) });
  return r.text();
}

/** `name{labels} value` → value, for the first series of `name` whose labels include `match`. */
function metric(text: string, name: string, match = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{') && line.includes(match)) {
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return undefined;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { minutes: { type: 'string', default: '30' }, rps: { type: 'string', default: '200' }, out: { type: 'string' }, 'node-args': { type: 'string', default: '' }, 'warmup-minutes': { type: 'string' } },
    strict: true,
  });
  const minutes = Number(values.minutes);
  // Node/V8 options for the control plane and the sidecars (e.g. to compare heap settings); none by default.
  const nodeArgs = values['node-args'].split(/\s+/).filter(Boolean);
  const rps = Number(values.rps);
  if (!(minutes > 0) || !(rps > 0)) throw new Error('--minutes and --rps must be positive numbers');
  const warmupS = values['warmup-minutes'] === undefined ? defaultWarmupS(minutes) : Number(values['warmup-minutes']) * 60;
  if (!(warmupS >= 0) || warmupS > minutes * 60 - 180) throw new Error('--warmup-minutes must leave at least 3 minutes of the run');
  const work = await mkdtemp(path.join(os.tmpdir(), 'trellis-soak-'));
  const dir = path.join(work, 'mesh');
  await mkdir(dir);
  const errors: string[] = [];
  const watched: { name: string; child: Child; admin?: string }[] = [];
  const recent = new Map<string, { t: number; line: string }[]>();
  const traces: string[] = [];
  const watch = (name: string, child: Child, admin?: string) => {
    watched.push({ name, child, admin });
    // The access log (stdout): only the last 20 s are kept, enough to look up a failed request a few seconds later.
    const ring: { t: number; line: string }[] = [];
    recent.set(name, ring);
    let out = '';
    child.proc.stdout?.on('data', (d: Buffer) => {
      const lines = (out + d.toString()).split('\n');
      out = lines.pop() ?? '';
      const now = Date.now();
      for (const line of lines) ring.push({ t: now, line });
      while (ring.length && ring[0].t < now - 20_000) ring.shift();
    });
    // Every non-JSON line on stderr (a stack trace, a Node warning) and every error-level event is counted as an error.
    let partial = '';
    child.proc.stderr?.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        if (!l.trim()) continue;
        if (!l.startsWith('{') || /"level":"error"/.test(l)) errors.push(`${name}: ${l.slice(0, 300)}`);
        // With TRELLIS_DEBUG_CLOSES=1 in the environment: connections a sidecar closed unanswered, with who closed them.
        else if (l.includes('"connection_closed_unanswered"') && traces.length < 200) traces.push(`${name}: ${l.slice(0, 2_000)}`);
      }
    });
  };
  try {
    const cp = await startListening('control-plane', process.execPath, [...LONG_RUNNING_NODE_FLAGS, ...nodeArgs, MAIN, 'control-plane', '--dir', dir, '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'], 'stderr');
    const cpAddr = String(cp.line.grpc);
    watch('control-plane', cp.child, String(cp.line.http));
    const file = path.join(work, 'soak.yaml');
    await apply(file, resources(0), cpAddr, dir);
    const app = await startSoakApp();
    const sidecar = async (name: string, service: string) => {
      const s = await startListening(name, process.execPath, [...LONG_RUNNING_NODE_FLAGS, ...nodeArgs, MAIN, 'sidecar', '--service', service, '--instance', name, '--app', app.address,
        '--control-plane', cpAddr, '--dir', dir, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--drain-timeout', '5s'], 'stderr');
      watch(name, s.child, String(s.line.admin));
      return { child: s.child, outbound: String(s.line.outbound), admin: String(s.line.admin) };
    };
    const [client] = await Promise.all([sidecar('client', 'soak-client'), sidecar('server-1', 'soak'), sidecar('server-2', 'soak')]);
    for (const w of watched.filter((x) => x.admin)) {
      for (let i = 0; ; i++) {
        const r = await fetch(`http://${w.admin}/ready`).catch(() => undefined);
        if (r?.status === 200) break;
        if (i > 300) throw new Error(`${w.name} not ready after 30 s`);
        await new Promise((r2) => setTimeout(r2, 100));
      }
    }
    // Ready is not enough: the client must also have been pushed both servers' endpoints (their registrations reach it
    // a push later). A run that started without this waited for nothing and counted 6 early 503 no-healthy-upstream.
    for (let i = 0; ; i++) {
      const r = await fetch(`http://${client.admin}/clusters`).then((x) => x.json() as Promise<{ clusters: { service: string; endpoints: unknown[] }[] }>).catch(() => undefined);
      if ((r?.clusters.find((c) => c.service === 'soak')?.endpoints.length ?? 0) >= 2) break;
      if (i > 300) throw new Error('the client sidecar did not get both server endpoints within 30 s');
      await new Promise((r2) => setTimeout(r2, 100));
    }
    process.stderr.write(`soak: ${minutes} min at ${rps} rps through ${client.outbound}; work dir ${work}\n`);

    const durationMs = minutes * 60_000;
    const started = Date.now();
    const samples = new Map<string, ProcessSamples>(watched.map((w) => [w.name, { rssMb: [], fds: [], eventLoopP99Ms: [], heapUsedMb: [], heapTotalMb: [], externalMb: [], newSpaceMb: [], majorGcs: [], t: [] }]));
    const certExpiry = new Map<string, Set<number>>();
    let pushes = 0;
    let pushFailures = 0;
    // A failed request's access-log lines from every sidecar, looked up once the batched log has been written.
    const onFailure = (id: string) => {
      if (traces.length >= 200) return;
      setTimeout(() => {
        for (const [name, ring] of recent) for (const { line } of ring) if (line.includes(`"${id}"`)) traces.push(`${name}: ${line}`);
      }, 3_000).unref();
    };
    const load = runSoakLoad({ target: client.outbound, rps, durationMs, onFailure });
    const sampler = setInterval(() => {
      void (async () => {
        const t = (Date.now() - started) / 1000;
        for (const w of watched) {
          const s = samples.get(w.name)!;
          const one = sample(w.child.pid);
          if (!one) continue;
          const text = w.admin ? await metricsOf(w.admin).catch(() => '') : '';
          const mb = (name: string) => (metric(text, name) ?? NaN) / 2 ** 20;
          const lag = metric(text, 'nodejs_eventloop_lag_p99_seconds');
          const exp = metric(text, 'mesh_certificate_expiry_timestamp_seconds');
          if (exp) (certExpiry.get(w.name) ?? certExpiry.set(w.name, new Set()).get(w.name)!).add(exp);
          s.t.push(t);
          s.rssMb.push(one.rssMb);
          s.fds.push(one.fds);
          s.heapUsedMb.push(mb('nodejs_heap_size_used_bytes'));
          s.heapTotalMb.push(mb('nodejs_heap_size_total_bytes'));
          s.externalMb.push(mb('nodejs_external_memory_bytes'));
          s.newSpaceMb.push((metric(text, 'nodejs_heap_space_size_total_bytes', 'space="new"') ?? NaN) / 2 ** 20);
          s.majorGcs.push(metric(text, 'nodejs_gc_duration_seconds_count', 'kind="major"') ?? 0);
          s.eventLoopP99Ms.push(lag === undefined ? NaN : lag * 1000);
        }
      })();
    }, 5_000);
    const pusher = setInterval(() => {
      pushes++;
      apply(file, resources(pushes), cpAddr, dir).catch((err: Error) => {
        pushFailures++;
        errors.push(`push ${pushes}: ${err.message}`);
      });
    }, 30_000);
    let counts: LoadCounts;
    try {
      counts = await load;
    } finally {
      clearInterval(sampler);
      clearInterval(pusher);
    }
    const clientMetrics = await metricsOf(client.admin).catch(() => '');
    const exited = watched.filter((w) => !w.child.running()).map((w) => w.name);
    for (const name of exited) errors.push(`${name} exited during the soak`);
    const result: SoakResult = {
      minutes, rps, nodeArgs, nodeFlags: [...LONG_RUNNING_NODE_FLAGS], startedAt: new Date(started).toISOString(), warmupS,
      load: counts, appResets: app.resets(), pushes, pushFailures,
      acks: metric(clientMetrics, 'mesh_config_updates_total', 'result="ack"') ?? 0,
      nacks: metric(clientMetrics, 'mesh_config_updates_total', 'result="nack"') ?? 0,
      rotations: Object.fromEntries([...certExpiry].map(([k, v]) => [k, v.size - 1])),
      processes: Object.fromEntries([...samples].map(([k, s]) => [k, { ...s, ...slopesOf(s, warmupS) }])),
      traces,
      errors,
      exited,
    };
    await app.close();
    const md = renderSoak(result);
    const out = values.out ?? path.join(RESULTS, 'soak-latest.md');
    await writeFile(out, md);
    await writeFile(out.replace(/\.md$/, '.json'), JSON.stringify(result, null, 1));
    process.stdout.write(md + '\n');
    const failed = counts.failed > 0 || errors.length > 0 || exited.length > 0;
    return failed ? 1 : 0;
  } finally {
    await stopAll();
    await rm(work, { recursive: true, force: true });
  }
}

main().then((code) => process.exit(code), (err: Error) => {
  process.stderr.write(`soak: ${err.stack ?? err.message}\n`);
  void stopAll().finally(() => process.exit(2));
});
