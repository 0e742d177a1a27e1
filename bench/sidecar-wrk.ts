// Saturation throughput with wrk, in one run: the app hit directly, through one sidecar, and through a pair (client sidecar → mTLS → server sidecar → app).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { initCa } from '../certs/ca.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

/** Starts a child and resolves with the first JSON line (on stdout or stderr) whose event is "listening". */
/** Extra node flags for the sidecars only, e.g. BENCH_SIDECAR_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof". */
const sidecarNodeArgs = (process.env.BENCH_SIDECAR_NODE_ARGS ?? '').split(' ').filter(Boolean);

function start(args: string[], stream: 'stdout' | 'stderr'): Promise<{ child: ChildProcess; line: Record<string, unknown> }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start within 10 s`)), 10_000);
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
    createInterface({ input: child[stream] as NodeJS.ReadableStream }).on('line', (text) => {
      try {
        const line = JSON.parse(text) as Record<string, unknown>;
        if (line.event === 'listening') {
          clearTimeout(timer);
          resolve({ child, line });
        }
      } catch { /* not a JSON line */ }
    });
  });
}

interface WrkResult { rps: number; p50: string; p99: string; errors: string }

function wrk(url: string, host: string): Promise<WrkResult> {
  return new Promise((resolve, reject) => {
    const w = spawn('wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-H', `Host: ${host}`, url], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    w.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    w.on('error', reject);
    w.on('exit', () => {
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
      const p50 = /\s50%\s+(\S+)/.exec(out)?.[1] ?? '?';
      const p99 = /\s99%\s+(\S+)/.exec(out)?.[1] ?? '?';
      const errors = [/Socket errors:.*/.exec(out)?.[0], /Non-2xx.*/.exec(out)?.[0]].filter(Boolean).join('; ') || 'none';
      if (!Number.isFinite(rps)) reject(new Error(`wrk printed no result:\n${out}`));
      else resolve({ rps, p50, p99, errors });
    });
  });
}

const DOC = (kind: string, name: string, spec: string) => `apiVersion: mesh/v1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec: ${spec}`;

function sidecar(service: string, app: string, resources: string, dir: string) {
  return start([...LONG_RUNNING_NODE_FLAGS, ...sidecarNodeArgs, join(here, '..', 'cli', 'main.js'), 'sidecar', '--service', service, '--app', app, '--resources', resources, '--dir', dir,
    '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], 'stderr');
}

async function main(): Promise<void> {
  const children: ChildProcess[] = [];
  try {
    const up = await start([join(here, 'upstream.js')], 'stdout');
    children.push(up.child);
    const app = `127.0.0.1:${up.line.port as number}`;
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    await initCa(dir, 'mesh.local');

    // One sidecar, plain HTTP to the app (tls disable): the cost of one hop of Trellis.
    const plain = join(dir, 'plain.yaml');
    writeFileSync(plain, [
      DOC('Service', 'app', '{ protocol: http }'),
      DOC('Endpoints', 'app', `{ service: app, endpoints: [ { address: "${app}" } ] }`),
      DOC('TrafficPolicy', 'app', '{ service: app, tls: { mode: disable } }'),
    ].join('\n---\n'));
    const one = await sidecar('bench', app, plain, dir);
    children.push(one.child);

    // The pair: the server sidecar fronts the app; the client sidecar reaches it over mTLS.
    const serverRes = join(dir, 'server.yaml');
    writeFileSync(serverRes, [DOC('Service', 'app', '{ protocol: http }'), DOC('Service', 'client', '{ protocol: http }')].join('\n---\n'));
    const server = await sidecar('app', app, serverRes, dir);
    children.push(server.child);
    const clientRes = join(dir, 'client.yaml');
    writeFileSync(clientRes, [
      DOC('Service', 'app', '{ protocol: http }'),
      DOC('Service', 'client', '{ protocol: http }'),
      DOC('Endpoints', 'app', `{ service: app, endpoints: [ { address: "${server.line.inbound as string}" } ] }`),
    ].join('\n---\n'));
    const client = await sidecar('client', '127.0.0.1:9', clientRes, dir);
    children.push(client.child);

    const targets = [
      ['direct', `http://${app}/`],
      ['trellis, 1 sidecar (plain)', `http://${one.line.outbound as string}/`],
      ['trellis, pair (mTLS)', `http://${client.line.outbound as string}/`],
    ] as const;
    // Warm every path (JIT, pools, TLS sessions) so start-up is not measured.
    for (const [, url] of targets) await wrk(url, 'app');
    const results: [string, WrkResult][] = [];
    for (const [name, url] of targets) results.push([name, await wrk(url, 'app')]);
    const direct = results[0][1].rps;
    console.log(`wrk -t1 -c${connections} -d${seconds}s, one run, ${new Date().toISOString()}\n`);
    console.log('| path | requests/s | vs direct | p50 | p99 | errors |\n|---|---|---|---|---|---|');
    for (const [name, r] of results) console.log(`| ${name} | ${r.rps.toFixed(0)} | ${(r.rps / direct).toFixed(2)} | ${r.p50} | ${r.p99} | ${r.errors} |`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
