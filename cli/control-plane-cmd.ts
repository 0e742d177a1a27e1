// `mesh control-plane`: flags → ControlPlaneOptions; runs until SIGINT/SIGTERM.
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { createLogger, isLogLevel } from '../api/log.js';
import { startControlPlane } from '../control-plane/control-plane.js';
import { parseDurationFlag, parseHostPort, UsageError } from './args.js';
import { startPeriodicGc } from './periodic-gc.js';

export const CONTROL_PLANE_USAGE = `mesh control-plane [--etcd HOST:PORT[,…]] [--listen 127.0.0.1:15010] [--http 127.0.0.1:15014] [--dir .mesh]
             [--trust-domain mesh.local] [--name ID] [--advertise HOST:PORT] [--registry-grace 45s] [--prometheus-sd FILE] [--log-level info]
  --advertise  where the other replicas reach this one's gRPC API (default: --listen; a wildcard host becomes the host name)
  --registry-grace  how long a sidecar registered by a replica that died stays an endpoint while it reconnects elsewhere
  --prometheus-sd  the Prometheus file_sd written with every sidecar's admin /metrics and every replica's --http /metrics
                   (default DIR/prometheus/targets.json)
  Replicas share one etcd (--etcd) and the same CA and admin token: copy ca.crt, ca.key and admin.token into each --dir.`;

export async function controlPlaneCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      etcd: { type: 'string' }, listen: { type: 'string', default: '127.0.0.1:15010' }, http: { type: 'string', default: '127.0.0.1:15014' },
      dir: { type: 'string', default: '.mesh' }, 'trust-domain': { type: 'string', default: 'mesh.local' }, name: { type: 'string' }, advertise: { type: 'string' }, 'registry-grace': { type: 'string', default: '45s' },
      'prometheus-sd': { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
    },
    strict: true,
  });
  const level = values['log-level'];
  if (!isLogLevel(level)) throw new UsageError(`--log-level: expected debug, info, warn or error, got "${level}"`);
  const etcd = values.etcd?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const e of etcd ?? []) parseHostPort('etcd', e);
  if (values.advertise !== undefined) parseHostPort('advertise', values.advertise);
  if (values['prometheus-sd'] === '') throw new UsageError('--prometheus-sd: expected a file path, got ""');
  const name = values.name ?? `${hostname()}-${process.pid}`;
  const log = createLogger(level, { program: 'control-plane', name });
  let cp;
  try {
    cp = await startControlPlane({
      dir: values.dir, listen: parseHostPort('listen', values.listen), http: parseHostPort('http', values.http),
      etcd: etcd?.map((e) => `http://${e}`), trustDomain: values['trust-domain'], log, name, advertise: values.advertise,
      registryGraceMs: parseDurationFlag('registry-grace', values['registry-grace']),
      prometheusSd: values['prometheus-sd'],
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const reason = e.code === 'EADDRINUSE' ? `address already in use: ${e.message}` : e.message;
    log.error('start_failed', { error: reason });
    process.stderr.write(`mesh control-plane: ${reason}\n`);
    return 1;
  }
  const gc = startPeriodicGc();
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      log.info('signal', { signal });
      gc.stop();
      cp.stop().then(() => resolve(0), () => resolve(1));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
