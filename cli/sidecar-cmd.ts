// `mesh sidecar`: flags → SidecarOptions; runs until SIGINT/SIGTERM, reloads the resources file on SIGHUP.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { createLogger, isLogLevel } from '../api/log.js';
import { ConfigError, startSidecar } from '../proxy/sidecar.js';
import { isLoopback, parseDurationFlag, parseHostPort, parseLabels, UsageError } from './args.js';

export const SIDECAR_USAGE = `mesh sidecar --service NAME --app HOST:PORT [--namespace default] [--instance ID] [--labels k=v,…]
             [--inbound 0.0.0.0:15006] [--outbound 127.0.0.1:15001] [--admin 127.0.0.1:15000]
             --resources FILE.yaml [--dir .mesh]   standalone mode: static resources compiled locally,
                                                    certificate issued from the CA in --dir (mesh certs init)
             [--drain-timeout 30s] [--log-level info]`;

export async function sidecarCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      service: { type: 'string' }, app: { type: 'string' }, namespace: { type: 'string', default: 'default' },
      instance: { type: 'string' }, labels: { type: 'string' },
      inbound: { type: 'string', default: '0.0.0.0:15006' }, outbound: { type: 'string', default: '127.0.0.1:15001' },
      admin: { type: 'string', default: '127.0.0.1:15000' }, resources: { type: 'string' },
      'control-plane': { type: 'string' }, 'token-file': { type: 'string' }, dir: { type: 'string', default: '.mesh' },
      'drain-timeout': { type: 'string', default: '30s' }, 'log-level': { type: 'string', default: 'info' },
    },
    strict: true,
  });
  if (!values.service) throw new UsageError('--service is required');
  if (!values.app) throw new UsageError('--app is required');
  const level = values['log-level'];
  if (!isLogLevel(level)) throw new UsageError(`--log-level: expected debug, info, warn or error, got "${level}"`);
  if (!values.resources) {
    const cp = values['control-plane'] ?? process.env.MESH_CONTROL_PLANE;
    throw new UsageError(cp
      ? `dynamic mode (--control-plane ${cp}) is not available in this build: run standalone with --resources FILE.yaml`
      : '--resources FILE.yaml is required (standalone mode)');
  }
  const outbound = parseHostPort('outbound', values.outbound);
  const admin = parseHostPort('admin', values.admin);
  // HARDENING.md security defaults: nothing but local processes may use the outbound or admin ports.
  if (!isLoopback(outbound.host)) throw new UsageError(`--outbound must be a loopback address, got "${outbound.host}"`);
  if (!isLoopback(admin.host)) throw new UsageError(`--admin must be a loopback address, got "${admin.host}"`);
  const instance = values.instance ?? `${hostname()}-${process.pid}`;
  const log = createLogger(level, { program: 'sidecar', service: values.service, instance });

  let sidecar;
  try {
    sidecar = await startSidecar({
      identity: { service: values.service, namespace: values.namespace, app: parseHostPort('app', values.app), labels: parseLabels(values.labels) },
      inbound: parseHostPort('inbound', values.inbound),
      outbound,
      admin,
      resources: values.resources,
      dir: values.dir,
      drainTimeoutMs: parseDurationFlag('drain-timeout', values['drain-timeout']),
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

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('signal', { signal });
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
