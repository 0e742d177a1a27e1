// `mesh sidecar`: flags → SidecarOptions; runs until SIGINT/SIGTERM, reloads the resources file on SIGHUP.
import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createLogger, isLogLevel } from '../api/log.js';
import { ConfigError, startSidecar } from '../proxy/sidecar.js';
import type { TcpListenerSpec } from '../proxy/tcp-outbound.js';
import { isLoopback, parseDurationFlag, parseHostPort, parseLabels, parseSizeFlag, UsageError } from './args.js';
import { startPeriodicGc } from './periodic-gc.js';

export const SIDECAR_USAGE = `mesh sidecar --service NAME --app HOST:PORT [--namespace default] [--instance ID] [--labels k=v,…]
             [--inbound 0.0.0.0:15006] [--outbound 127.0.0.1:15001] [--admin 127.0.0.1:15000]
             [--control-plane HOST:PORT[,…]] [--token-file F] [--dir .mesh]   dynamic mode: config and certificate from the control plane
             [--resources FILE.yaml]                                         standalone mode: static resources, certificate from the CA in --dir
             [--drain-timeout 30s] [--stats-interval 10s] [--tracing on|off] [--log-level info]
             [--tcp SERVICE=127.0.0.1:PORT[,…]] [--tunnel-idle-timeout 1h] [--shed-lag 100ms] [--max-request-body 16Mi]
  --stats-interval  how often (dynamic mode) cumulative request stats go to the control plane for "mesh stat"
  --tracing off     no tracing stage at all: trace headers pass through unchanged, no spans (for measuring its cost)
  --tcp             a loopback port per "protocol: tcp" service the app calls; each connection goes to one endpoint over mTLS
  --tunnel-idle-timeout  WebSocket and TCP tunnels with no bytes either way for this long are closed
  --shed-lag        when the event loop falls this far behind and the requests in flight would wait over 10 times
                    that (for as long), a growing share of new ones is refused at once with 503 and
                    x-mesh-error: overloaded, so admitted ones stay within their timeouts (0 = never shed)
  --max-request-body  the largest HTTP request body forwarded (gRPC streams exempt): a larger declared length is
                    answered 413 payload-too-large, and a body without one is cut before the chunk that crosses it`;

/** `--tcp billing-db=127.0.0.1:5432,cache=127.0.0.1:6379`: loopback only, like --outbound, one service per port. */
export function parseTcpFlag(value: string | undefined): TcpListenerSpec[] {
  if (!value) return [];
  const specs: TcpListenerSpec[] = [];
  for (const item of value.split(',').map((v) => v.trim()).filter(Boolean)) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`--tcp: expected SERVICE=HOST:PORT[,…], got "${item}"`);
    const service = item.slice(0, eq).trim();
    const listen = parseHostPort('tcp', item.slice(eq + 1).trim());
    if (!isLoopback(listen.host)) throw new UsageError(`--tcp ${service} must listen on a loopback address, got "${listen.host}"`);
    if (specs.some((s) => s.service === service)) throw new UsageError(`--tcp: service "${service}" is listed twice`);
    specs.push({ service, listen });
  }
  return specs;
}

/** The join token: --token-file, else MESH_TOKEN, else the admin token in --dir (one machine: it may obtain any identity). */
async function readToken(file: string | undefined, dir: string): Promise<string> {
  if (file) return (await readFile(file, 'utf8').catch(() => { throw new UsageError(`--token-file: cannot read "${file}"`); })).trim();
  if (process.env.MESH_TOKEN) return process.env.MESH_TOKEN.trim();
  return (await readFile(join(dir, 'admin.token'), 'utf8').catch(() => {
    throw new UsageError(`no join token: pass --token-file (mesh token create --service NAME), or run where ${join(dir, 'admin.token')} exists`);
  })).trim();
}

export async function sidecarCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      service: { type: 'string' }, app: { type: 'string' }, namespace: { type: 'string', default: 'default' },
      instance: { type: 'string' }, labels: { type: 'string' },
      inbound: { type: 'string', default: '0.0.0.0:15006' }, outbound: { type: 'string', default: '127.0.0.1:15001' },
      admin: { type: 'string', default: '127.0.0.1:15000' }, resources: { type: 'string' },
      'control-plane': { type: 'string' }, 'token-file': { type: 'string' }, dir: { type: 'string', default: '.mesh' },
      'drain-timeout': { type: 'string', default: '30s' }, 'stats-interval': { type: 'string', default: '10s' }, 'shed-lag': { type: 'string', default: '100ms' }, 'max-request-body': { type: 'string', default: '16Mi' }, tracing: { type: 'string', default: 'on' }, 'log-level': { type: 'string', default: 'info' },
      tcp: { type: 'string' }, 'tunnel-idle-timeout': { type: 'string', default: '1h' },
    },
    strict: true,
  });
  if (!values.service) throw new UsageError('--service is required');
  if (!values.app) throw new UsageError('--app is required');
  const level = values['log-level'];
  if (!isLogLevel(level)) throw new UsageError(`--log-level: expected debug, info, warn or error, got "${level}"`);
  const cp = values['control-plane'] ?? process.env.MESH_CONTROL_PLANE;
  if (!values.resources && !cp) throw new UsageError('either --resources FILE.yaml (standalone) or --control-plane HOST:PORT[,…] (dynamic) is required');
  if (values.resources && cp) throw new UsageError('--resources and --control-plane are exclusive: pick standalone or dynamic mode');
  const endpoints = cp ? cp.split(',').map((e) => e.trim()).filter(Boolean) : [];
  for (const e of endpoints) parseHostPort('control-plane', e);
  const outbound = parseHostPort('outbound', values.outbound);
  const admin = parseHostPort('admin', values.admin);
  // HARDENING.md security defaults: nothing but local processes may use the outbound or admin ports.
  if (!isLoopback(outbound.host)) throw new UsageError(`--outbound must be a loopback address, got "${outbound.host}"`);
  if (!isLoopback(admin.host)) throw new UsageError(`--admin must be a loopback address, got "${admin.host}"`);
  const statsInterval = parseDurationFlag('stats-interval', values['stats-interval']);
  if (statsInterval < 100) throw new UsageError(`--stats-interval: must be at least 100ms, got "${values['stats-interval']}"`);
  if (values.tracing !== 'on' && values.tracing !== 'off') throw new UsageError(`--tracing: expected on or off, got "${values.tracing}"`);
  const tcp = parseTcpFlag(values.tcp);
  const tunnelIdleTimeoutMs = parseDurationFlag('tunnel-idle-timeout', values['tunnel-idle-timeout']);
  if (tunnelIdleTimeoutMs < 1) throw new UsageError(`--tunnel-idle-timeout: must be positive, got "${values['tunnel-idle-timeout']}"`);
  const maxRequestBodyBytes = parseSizeFlag('max-request-body', values['max-request-body']);
  const instance = values.instance ?? `${hostname()}-${process.pid}`;
  const log = createLogger(level, { program: 'sidecar', service: values.service, instance });

  let sidecar;
  try {
    sidecar = await startSidecar({
      identity: { service: values.service, namespace: values.namespace, app: parseHostPort('app', values.app), labels: parseLabels(values.labels), instance },
      inbound: parseHostPort('inbound', values.inbound),
      outbound,
      admin,
      config: values.resources
        ? { mode: 'file', resources: values.resources }
        : { mode: 'control-plane', endpoints, token: await readToken(values['token-file'], values.dir) },
      dir: values.dir,
      drainTimeoutMs: parseDurationFlag('drain-timeout', values['drain-timeout']),
      statsIntervalMs: statsInterval,
      shedLagMs: values['shed-lag'] === '0' ? 0 : parseDurationFlag('shed-lag', values['shed-lag']),
      maxRequestBodyBytes,
      tracing: values.tracing === 'on',
      tcp,
      tunnelIdleTimeoutMs,
      log,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (err instanceof ConfigError) log.error('config_invalid', { file: values.resources, issues: e.message.split('\n') });
    else if (e.code === 'EADDRINUSE') log.error('port_in_use', { error: `address ${(e as { address?: string }).address}:${(e as { port?: number }).port} is already in use` });
    else if (e.code === 'ENOENT') log.error('file_missing', { error: e.message });
    else log.error('start_failed', { error: e.message });
    process.stderr.write(`mesh sidecar: ${err instanceof ConfigError ? `invalid resources:\n${e.message}` : e.message}\n`);
    return 1;
  }

  const gc = startPeriodicGc();
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('signal', { signal });
      gc.stop();
      sidecar.shutdown().then(() => resolve(0), (err: unknown) => {
        log.error('shutdown_failed', { error: err });
        resolve(1);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void sidecar.reload());
  });
}
