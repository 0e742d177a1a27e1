// gRPC unary through the mesh vs direct: h2load (nghttp2-client) → [client sidecar → mTLS h2 → server sidecar →] grpc-js Echo app.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { stringify } from 'yaml';
import { initCa } from '../certs/ca.js';
import { cpuSeconds } from './proc.js';
import { findExecutable, startListening, stopAll } from './processes.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI_MAIN = path.join(ROOT, 'dist/cli/main.js');
const PROTO = path.join(ROOT, 'test/fixtures/echo.proto');

interface Options {
  readonly requests: number;
  readonly clients: number;
  readonly streams: number;
}

/** `--requests N --clients C --streams M` (h2load -n -c -m); defaults suit a 2-core machine and finish in seconds. */
function parseArgs(argv: readonly string[]): Options {
  const get = (flag: string, dflt: number) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  return { requests: get('--requests', 50_000), clients: get('--clients', 4), streams: get('--streams', 16) };
}

async function startEchoApp(): Promise<{ address: string; close: () => void }> {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO)) as unknown as { trellis: { test: { Echo: grpc.ServiceClientConstructor } } };
  const server = new grpc.Server();
  const unary = (call: grpc.ServerUnaryCall<{ text: string; seq: number }, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, call.request);
  const unimplemented = (call: { emit(e: string, err: unknown): void }) => call.emit('error', { code: grpc.status.UNIMPLEMENTED });
  server.addService(pkg.trellis.test.Echo.service, { unary, serverStream: unimplemented, clientStream: unimplemented, bidi: unimplemented });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { address: `127.0.0.1:${port}`, close: () => server.forceShutdown() };
}

const doc = (kind: string, name: string, spec: Record<string, unknown>) => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

async function sidecar(dir: string, service: string, app: string, docs: object[]): Promise<{ outbound: string; inbound: string; pid: number }> {
  const file = path.join(dir, `${service}.yaml`);
  await writeFile(file, docs.map((d) => stringify(d)).join('---\n'));
  const { line, child } = await startListening(`${service} sidecar`, process.execPath, [
    ...LONG_RUNNING_NODE_FLAGS, CLI_MAIN, 'sidecar', '--service', service, '--app', app, '--resources', file, '--dir', dir,
    '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0',
  ], 'stderr');
  const admin = String(line.admin);
  // Ready once config and certificate are loaded.
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`http://${admin}/ready`).then((r) => r.ok, () => false);
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return { outbound: String(line.outbound), inbound: String(line.inbound), pid: child.pid };
}

/** One gRPC frame: Msg { text: "hello", seq: 1 } behind the 5-byte length prefix. */
function requestBody(): Buffer {
  const msg = Buffer.from([0x0a, 0x05, ...Buffer.from('hello'), 0x10, 0x01]);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(msg.length, 1);
  return Buffer.concat([prefix, msg]);
}

interface Result {
  readonly label: string;
  readonly rps: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly latency: string;
}

/** Runs h2load without blocking this process's event loop, which serves the in-process gRPC app. */
function run(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.once('error', reject);
    child.once('exit', () => resolve(out));
  });
}

async function h2load(h2loadPath: string, label: string, connectTo: string, bodyFile: string, o: Options): Promise<Result> {
  const args = [
    '-n', String(o.requests), '-c', String(o.clients), '-m', String(o.streams), '-d', bodyFile,
    '-H', 'content-type: application/grpc', '-H', 'te: trailers', `--connect-to=${connectTo}`,
    'http://echo/trellis.test.Echo/Unary',
  ];
  const out = await run(h2loadPath, args);
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? NaN);
  const m = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(out);
  const lat = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  return {
    label, rps, succeeded: Number(m?.[1] ?? 0), failed: Number(m?.[2] ?? 0),
    latency: lat ? `min ${lat[1]} max ${lat[2]} mean ${lat[3]} sd ${lat[4]}` : 'n/a',
  };
}

async function main(): Promise<void> {
  const h2loadPath = findExecutable('h2load', 'H2LOAD');
  if (!h2loadPath) throw new Error('h2load not found (Debian package nghttp2-client)');
  const o = parseArgs(process.argv.slice(2));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-grpc-bench-'));
  await initCa(dir, 'mesh.local');
  const app = await startEchoApp();
  try {
    const grpcService = (endpoints?: string[]) => [
      doc('Service', 'echo', { protocol: 'grpc' }),
      ...(endpoints ? [doc('Endpoints', 'echo', { service: 'echo', endpoints: endpoints.map((address) => ({ address, labels: {} })) })] : []),
      doc('TrafficPolicy', 'echo', { service: 'echo', tls: { mode: 'mutual' } }),
    ];
    const server = await sidecar(dir, 'echo', app.address, grpcService());
    const client = await sidecar(dir, 'bench', '127.0.0.1:9', [doc('Service', 'bench', { protocol: 'http' }), ...grpcService([server.inbound])]);
    const bodyFile = path.join(dir, 'unary.bin');
    await writeFile(bodyFile, requestBody());
    // A short warm-up per path (JIT, TLS sessions, h2 sessions), then the measured run.
    await h2load(h2loadPath, 'warm-up', app.address, bodyFile, { ...o, requests: 2_000 });
    await h2load(h2loadPath, 'warm-up', client.outbound, bodyFile, { ...o, requests: 2_000 });
    const direct = await h2load(h2loadPath, 'direct', app.address, bodyFile, o);
    const cpu0 = [cpuSeconds(client.pid) ?? NaN, cpuSeconds(server.pid) ?? NaN];
    const mesh = await h2load(h2loadPath, 'trellis', client.outbound, bodyFile, o);
    const cpu = [cpuSeconds(client.pid) ?? NaN, cpuSeconds(server.pid) ?? NaN].map((c, i) => ((c - cpu0[i]) / o.requests) * 1000);
    console.log(`gRPC unary, h2load -n ${o.requests} -c ${o.clients} -m ${o.streams}, ${os.cpus().length} CPUs, node ${process.version}`);
    for (const r of [direct, mesh]) console.log(`${r.label.padEnd(8)} ${r.rps.toFixed(0).padStart(7)} req/s  ok ${r.succeeded}  failed ${r.failed}  ${r.latency}`);
    console.log(`trellis CPU s per 1,000 calls: client sidecar ${cpu[0].toFixed(3)} / server sidecar ${cpu[1].toFixed(3)}`);
  } finally {
    await stopAll();
    app.close();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
