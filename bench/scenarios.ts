// The scenarios: how each one's processes are started (its own app every time), which of them are the proxies, and how they are stopped.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { startNginxPair } from './nginx.js';
import { startListening, type Child } from './processes.js';
import type { BenchPki } from './pki.js';
import type { ScenarioName } from './types.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const CLI_MAIN = join(here, '..', 'cli', 'main.js');

export interface ScenarioContext {
  readonly pki: BenchPki;
  /** A temp directory this scenario may write into. */
  readonly tmp: string;
  readonly nginx: string | undefined;
}

export interface Running {
  /** Where the load generator sends its requests. */
  readonly url: string;
  /** The Host header (the sidecars route on it). */
  readonly host: string;
  /** The proxy processes whose CPU and RSS are reported; empty for direct. */
  readonly proxies: { role: string; pid: number }[];
  /** Trellis only: the sidecars' admin addresses (for /metrics), client first. */
  readonly admins?: string[];
  stop(): Promise<void>;
}

export interface Scenario {
  readonly name: ScenarioName;
  readonly description: string;
  /** Why it cannot run here (a missing tool), or undefined. */
  skip(ctx: ScenarioContext): string | undefined;
  start(ctx: ScenarioContext): Promise<Running>;
}

function node(name: string, script: string, args: string[], stream: 'stdout' | 'stderr') {
  return startListening(name, process.execPath, [join(here, script), ...args], stream);
}

async function startApp(): Promise<{ child: Child; address: string }> {
  const { child, line } = await node('app', 'upstream.js', [], 'stdout');
  return { child, address: `127.0.0.1:${line.port as number}` };
}

/** Runs `fn`, which pushes every child it starts onto `own`; if it throws, those children are stopped before the error goes on. */
async function owning(fn: (own: Child[]) => Promise<Omit<Running, 'stop'>>): Promise<Running> {
  const own: Child[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(own.map((c) => c.stop('SIGTERM', 5_000)));
  };
  try {
    return { ...(await fn(own)), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

const DOC = (kind: string, name: string, spec: string): string => `apiVersion: mesh/v1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec: ${spec}`;

async function sidecar(
  ctx: ScenarioContext, service: string, app: string, resources: string[], extraArgs: readonly string[],
): Promise<{ child: Child; line: Record<string, unknown> }> {
  const file = join(ctx.tmp, `${service}.yaml`);
  await writeFile(file, resources.join('\n---\n'));
  const started = await startListening(`${service} sidecar`, process.execPath, [
    ...LONG_RUNNING_NODE_FLAGS, CLI_MAIN, 'sidecar', '--service', service, '--app', app, '--resources', file, '--dir', ctx.pki.dir,
    '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--drain-timeout', '2s', ...extraArgs,
  ], 'stderr');
  await waitReady(`http://${started.line.admin as string}/ready`);
  return started;
}

/** GET until 200 (a sidecar's /ready), bounded. */
async function waitReady(url: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await request(url, { headersTimeout: 2_000 });
      await r.body.dump();
      if (r.statusCode === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const direct: Scenario = {
  name: 'direct',
  description: 'load → app',
  skip: () => undefined,
  start: () => owning(async (own) => {
    const app = await startApp();
    own.push(app.child);
    return { url: `http://${app.address}/`, host: 'app', proxies: [] };
  }),
};

/** The Trellis pair; `sidecarArgs` go to both sidecars (the only difference between trellis and trellis-notrace). */
export function trellisPair(name: ScenarioName, description: string, sidecarArgs: readonly string[]): Scenario {
  return {
    name,
    description,
    skip: () => undefined,
    start: (ctx) => owning(async (own) => {
      const app = await startApp();
      own.push(app.child);
      const services = [DOC('Service', 'app', '{ protocol: http }'), DOC('Service', 'client', '{ protocol: http }')];
      const server = await sidecar(ctx, 'app', app.address, services, sidecarArgs);
      own.push(server.child);
      // TrafficPolicy defaults: mutual TLS, EWMA, default retries.
      const endpoints = DOC('Endpoints', 'app', `{ service: app, endpoints: [ { address: "${server.line.inbound as string}" } ] }`);
      const client = await sidecar(ctx, 'client', '127.0.0.1:9', [...services, endpoints], sidecarArgs);
      own.push(client.child);
      return {
        url: `http://${client.line.outbound as string}/`,
        host: 'app',
        proxies: [{ role: 'client sidecar', pid: client.child.pid }, { role: 'server sidecar', pid: server.child.pid }],
        admins: [client.line.admin as string, server.line.admin as string],
      };
    }),
  };
}

const trellis = trellisPair(
  'trellis',
  'load → client sidecar (outbound) → mTLS → server sidecar (inbound) → app; metrics on, default tracing, default retries, EWMA',
  [],
);

// The same pair with tracing off, measured next to `trellis` in the same run: the difference is what tracing costs.
const trellisNotrace = trellisPair(
  'trellis-notrace',
  'as trellis, both sidecars with `--tracing off` (trace headers pass through untouched, no spans): the baseline for the cost of tracing',
  ['--tracing', 'off'],
);

const nginxPair: Scenario = {
  name: 'nginx-pair',
  description: 'load → client nginx → mTLS (TLS 1.3, keepalive 64, session reuse) → server nginx → app; one worker each',
  skip: (ctx) => (ctx.nginx ? undefined : 'nginx not found (PATH, /usr/sbin, /usr/local/sbin; or set NGINX)'),
  start: (ctx) => owning(async (own) => {
    const app = await startApp();
    own.push(app.child);
    const pair = await startNginxPair(ctx.nginx!, join(ctx.tmp, 'nginx'), app.address, ctx.pki);
    own.push(...pair.masters);
    return { url: `http://${pair.address}/`, host: 'app', proxies: pair.workers };
  }),
};

const httpProxyPair: Scenario = {
  name: 'http-proxy-pair',
  description: 'load → http-proxy client → mTLS (keep-alive https.Agent) → http-proxy server → app',
  skip: () => undefined,
  start: ({ pki }) => owning(async (own) => {
    const app = await startApp();
    own.push(app.child);
    const half = (role: string, upstream: string, leaf: { cert: string; key: string }) =>
      node(`http-proxy ${role}`, 'http-proxy-pair.js', ['--role', role, '--upstream', upstream, '--cert', leaf.cert, '--key', leaf.key, '--ca', pki.caFile], 'stdout');
    const server = await half('server', app.address, pki.server);
    own.push(server.child);
    const client = await half('client', `127.0.0.1:${server.line.port as number}`, pki.client);
    own.push(client.child);
    return {
      url: `http://127.0.0.1:${client.line.port as number}/`,
      host: 'app',
      proxies: [{ role: 'client http-proxy', pid: client.child.pid }, { role: 'server http-proxy', pid: server.child.pid }],
    };
  }),
};

export const ALL_SCENARIOS: readonly Scenario[] = [direct, trellis, trellisNotrace, nginxPair, httpProxyPair];

/** One request through the whole chain: a wrong certificate or route fails here with its answer, not as a page of errors later. */
export async function probe(r: Running): Promise<void> {
  const res = await request(r.url, { headers: { host: r.host }, headersTimeout: 5_000, bodyTimeout: 5_000 });
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`probe of ${r.url} answered ${res.statusCode}: ${body.slice(0, 300)}`);
}
