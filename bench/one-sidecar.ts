// Saturation throughput with wrk: the upstream hit directly vs through one Trellis sidecar, measured in the same run.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);

/** Starts a child and resolves with the first JSON line (on stdout or stderr) whose event is "listening". */
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

async function main(): Promise<void> {
  const children: ChildProcess[] = [];
  try {
    const up = await start([join(here, 'upstream.js')], 'stdout');
    children.push(up.child);
    const port = up.line.port as number;
    const dir = mkdtempSync(join(tmpdir(), 'trellis-bench-'));
    const resources = join(dir, 'resources.yaml');
    writeFileSync(resources, [
      'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: upstream }\nspec: { protocol: http }',
      `apiVersion: mesh/v1\nkind: Endpoints\nmetadata: { name: upstream }\nspec: { service: upstream, endpoints: [ { address: "127.0.0.1:${port}" } ] }`,
      'apiVersion: mesh/v1\nkind: TrafficPolicy\nmetadata: { name: upstream }\nspec: { service: upstream, tls: { mode: disable } }',
    ].join('\n---\n'));
    const sc = await start([join(here, '..', 'cli', 'main.js'), 'sidecar', '--service', 'bench', '--app', `127.0.0.1:${port}`,
      '--resources', resources, '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0'], 'stderr');
    children.push(sc.child);
    const outbound = sc.line.outbound as string;
    // Warm both paths (JIT, connection pools) so start-up is not measured.
    await wrk(`http://127.0.0.1:${port}/`, 'upstream');
    await wrk(`http://${outbound}/`, 'upstream');
    const direct = await wrk(`http://127.0.0.1:${port}/`, 'upstream');
    const trellis = await wrk(`http://${outbound}/`, 'upstream');
    const rows = [['direct', direct], ['trellis (1 sidecar)', trellis]] as const;
    console.log(`wrk -t1 -c${connections} -d${seconds}s, same run, ${new Date().toISOString()}\n`);
    console.log('| path | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|');
    for (const [name, r] of rows) console.log(`| ${name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.errors} |`);
    console.log(`\ntrellis / direct throughput: ${(trellis.rps / direct.rps).toFixed(2)}`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
