// `mesh up`: runs the example shop on this machine (control plane, every app beside its sidecar), waits until the mesh is healthy, prints how to use it.
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { parseHostPort, UsageError, type HostPort } from './args.js';
import { reservePorts } from './ports.js';
import { DEFAULT_CONTROL_PLANE, type CommandOutput } from './cp-connect.js';
import { applyCommand } from './resources-cmd.js';
import { Supervisor, type ChildSpec } from './up-children.js';
import { waitHealthy } from './up-health.js';
import { banner } from './up-banner.js';
import { cmdlineOf, killLeftovers, leftovers, readState, removeState, writeState, type UpInstance, type UpState } from './up-state.js';
import { prometheusSpec } from './up-prometheus.js';
import { which } from './which.js';
import { LONG_RUNNING_NODE_FLAGS } from './node-flags.js';

export const UP_USAGE = `mesh up [--etcd HOST:PORT[,…]] [--dir .mesh] [--port 8080] [--listen 127.0.0.1:15010] [--http 127.0.0.1:15014]
        [--prometheus] [--prometheus-port 9090]
  runs the example shop (examples/shop) on this machine: the control plane (embedded store, or etcd with --etcd), users,
  billing v1 and v2 (gRPC) and the gateway, each app beside its own sidecar; applies examples/shop/mesh.yaml, waits until
  "mesh check" passes, then prints the gateway URL (http://127.0.0.1:PORT) and what to try. Ctrl-C stops everything.
  --dir holds the CA, the embedded store, and under shop/ each service's database and every program's log; a second
  "mesh up" carries on with the same data. --prometheus also runs prometheus (from PATH) on the mesh's file_sd targets.`;

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MAIN = path.join(HERE, 'main.js');
const SHOP_DIST = path.join(HERE, '..', 'examples', 'shop');
/** The mesh file is not compiled: it is read from the source tree (dist/cli → repo root). */
export const SHOP_MESH_FILE = path.resolve(HERE, '..', '..', 'examples', 'shop', 'mesh.yaml');

interface InstancePlan {
  readonly service: string;
  readonly instance: string;
  readonly app: 'users' | 'billing' | 'gateway';
  readonly appArgs: readonly string[];
  readonly version: string;
}

/** Stop stages: apps first, then their sidecars, then prometheus and the control plane. */
const STAGE = { app: 0, sidecar: 1, infra: 2 } as const;

export async function upCommand(argv: string[], out: CommandOutput): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      etcd: { type: 'string' }, dir: { type: 'string', default: '.mesh' }, port: { type: 'string', default: '8080' },
      listen: { type: 'string', default: DEFAULT_CONTROL_PLANE }, http: { type: 'string', default: '127.0.0.1:15014' },
      prometheus: { type: 'boolean', default: false }, 'prometheus-port': { type: 'string', default: '9090' },
    },
    strict: true,
  });
  const port = portFlag('port', values.port);
  const promPort = portFlag('prometheus-port', values['prometheus-port']);
  const listen = parseHostPort('listen', values.listen);
  const http = parseHostPort('http', values.http);
  const etcd = values.etcd?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
  for (const e of etcd) parseHostPort('etcd', e);
  const prometheusBin = values.prometheus ? which('prometheus') : undefined;
  if (values.prometheus && !prometheusBin) throw new UsageError('--prometheus: no "prometheus" on PATH (Debian: apt-get install prometheus)');

  const dir = path.resolve(values.dir);
  const shop = path.join(dir, 'shop');
  const logs = path.join(shop, 'logs');
  await mkdir(logs, { recursive: true });
  const stateFile = path.join(shop, 'up.json');

  // A second `mesh up` beside a live one would fight over ports and data; after a crash, it cleans up and carries on.
  const previous = await readState(stateFile);
  if (previous) {
    const left = leftovers(previous);
    if (left.supervisor !== undefined) {
      out.stderr(`mesh up: already running for ${dir} (pid ${left.supervisor}); stop it with Ctrl-C in its terminal, or: kill ${left.supervisor}`);
      return 1;
    }
    if (left.processes.length) {
      const stuck = await killLeftovers(left.processes);
      out.stderr(`mesh up: the previous run (pid ${previous.pid}) did not stop cleanly; stopped what it left running: ${left.processes.map((p) => p.name).join(', ')}`);
      if (stuck.length) {
        out.stderr(`mesh up: could not stop ${stuck.map((p) => `${p.name} (pid ${p.pid})`).join(', ')}`);
        return 1;
      }
    }
    await removeState(stateFile);
  }

  // Taken ports fail here with the flag to change, not later inside some child's log.
  const fixed: [string, HostPort][] = [['--listen', listen], ['--http', http]];
  if (port !== 0) fixed.push(['--port', { host: '127.0.0.1', port }]);
  if (prometheusBin && promPort !== 0) fixed.push(['--prometheus-port', { host: '127.0.0.1', port: promPort }]);
  for (const [flag, hp] of fixed) {
    const err = await probe(hp);
    if (err) {
      out.stderr(`mesh up: ${hp.host}:${hp.port} (${flag}) is not free: ${err}`);
      return 1;
    }
  }

  const sup = new Supervisor({
    // The log's last lines help only when the program failed by itself; after a kill or a clean exit they are noise.
    exited: (name, how, delay, tail) => out.stderr(`mesh up: ${name} ${how}; restarting in ${(delay ?? 0) / 1000} s${/^exit code [1-9]/.test(how) ? tail : ''}`),
    changed: () => scheduleStateWrite(),
  });
  let state: Omit<UpState, 'processes'> = {
    pid: process.pid, cmdline: cmdlineOf(process.pid) ?? process.argv.join(' '), startedAt: new Date().toISOString(),
    controlPlane: '', controlPlaneHttp: '', instances: [],
  };
  let stateTimer: NodeJS.Timeout | undefined;
  let stateWrites = Promise.resolve();
  const flushState = () => {
    const processes = sup.running().flatMap((r) => (r.pid === undefined ? [] : [{ name: r.spec.name, pid: r.pid, cmdline: cmdlineOf(r.pid) ?? [r.spec.command, ...r.spec.args].join(' ') }]));
    const snapshot: UpState = { ...state, processes };
    stateWrites = stateWrites.then(() => writeState(stateFile, snapshot)).catch((err: Error) => out.stderr(`mesh up: cannot write ${stateFile}: ${err.message}`));
    return stateWrites;
  };
  let stateClosed = false;
  function scheduleStateWrite() {
    if (stateClosed) return;
    // /proc/PID/cmdline is filled in once exec has happened; a moment later it names the program, not node's own argv[0].
    stateTimer ??= setTimeout(() => { stateTimer = undefined; void flushState(); }, 50);
  }

  let stopRequested: (() => void) | undefined;
  const stopSignal = new Promise<void>((resolve) => (stopRequested = resolve));
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    signals++;
    if (signals === 1) {
      out.stderr(`\nmesh up: ${sig}: stopping (the gateway and apps, then the sidecars, then the control plane)…`);
      stopRequested?.();
    } else {
      out.stderr('mesh up: stopping now (SIGKILL)');
      sup.killAll();
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // If we die some other way, take the children with us (the IPC watchdog covers SIGKILL; this covers a thrown error).
  process.once('exit', () => sup.killAll());

  const log = (name: string) => path.join(logs, `${name}.log`);
  const node = process.execPath;
  let code = 0;
  try {
    const started = (async () => {
      const cp = await sup.start(childSpec('control-plane', node, [...LONG_RUNNING_NODE_FLAGS, MAIN, 'control-plane', '--dir', dir, '--listen', `${listen.host}:${listen.port}`,
        '--http', `${http.host}:${http.port}`, '--name', 'shop-control-plane', ...(etcd.length ? ['--etcd', etcd.join(',')] : [])], log, STAGE.infra, true),
      (e) => e.event === 'listening' && typeof e.grpc === 'string');
      state = { ...state, controlPlane: String(cp.grpc), controlPlaneHttp: String(cp.http) };
      const connect = ['--control-plane', state.controlPlane, '--dir', dir];

      const applied = capture();
      if (await applyCommand(['-f', SHOP_MESH_FILE, ...connect], applied.out) !== 0) throw new Error(`mesh apply -f ${SHOP_MESH_FILE} failed:\n${applied.text()}`);

      const plans: InstancePlan[] = [
        { service: 'users', instance: 'users-1', app: 'users', version: 'v1', appArgs: ['--db', path.join(shop, 'users')] },
        // Two v1 instances: killing one while traffic flows shows the mesh retrying onto the other, with nothing lost.
        { service: 'billing', instance: 'billing-v1-1', app: 'billing', version: 'v1', appArgs: ['--db', path.join(shop, 'billing'), '--version', 'v1'] },
        { service: 'billing', instance: 'billing-v1-2', app: 'billing', version: 'v1', appArgs: ['--db', path.join(shop, 'billing'), '--version', 'v1'] },
        { service: 'billing', instance: 'billing-v2-1', app: 'billing', version: 'v2', appArgs: ['--db', path.join(shop, 'billing'), '--version', 'v2'] },
        { service: 'gateway', instance: 'gateway-1', app: 'gateway', version: 'v1', appArgs: [] },
      ];
      const ports = await reservePorts(plans.length * 2);
      const instances = await Promise.all(plans.map(async (p, i): Promise<UpInstance> => {
        const appAddr = `127.0.0.1:${p.app === 'gateway' && port !== 0 ? port : ports[2 * i]}`;
        const outbound = `127.0.0.1:${ports[2 * i + 1]}`;
        const [sidecar] = await Promise.all([
          sup.start(childSpec(`${p.instance}-sidecar`, node, [...LONG_RUNNING_NODE_FLAGS, MAIN, 'sidecar', '--service', p.service, '--instance', p.instance, '--labels', `version=${p.version}`,
            '--app', appAddr, ...connect, '--inbound', '127.0.0.1:0', '--outbound', outbound, '--admin', '127.0.0.1:0',
            '--drain-timeout', '5s', '--stats-interval', '5s'], log, STAGE.sidecar, true),
          (e) => e.event === 'listening' && typeof e.admin === 'string'),
          sup.start(childSpec(p.instance, node, [path.join(SHOP_DIST, `${p.app}.js`), '--listen', appAddr, '--outbound', outbound, '--instance', p.instance, ...p.appArgs],
            log, STAGE.app, true), (e) => e.event === 'listening'),
        ]);
        return { service: p.service, instance: p.instance, app: appAddr, outbound, inbound: String(sidecar.inbound), admin: String(sidecar.admin) };
      }));
      const gateway = `http://${instances.find((x) => x.service === 'gateway')!.app}`;
      state = { ...state, instances, gateway };
      scheduleStateWrite();
      if (prometheusBin) {
        const prom = await prometheusSpec({ bin: prometheusBin, shopDir: shop, meshDir: dir, port: promPort === 0 ? (await reservePorts(1))[0] : promPort });
        await sup.start(childSpec('prometheus', prom.command, prom.args, log, STAGE.infra, false), undefined);
        state = { ...state, prometheus: prom.url };
      }
      await waitHealthy({ instances, controlPlane: state.controlPlane, dir, gateway, prometheus: state.prometheus, timeoutMs: 90_000 });
      await flushState();
      out.stdout(banner({ state: { ...state, processes: [] }, dir, etcd, defaultControlPlane: state.controlPlane === DEFAULT_CONTROL_PLANE, logs, canaryFile: path.join(path.dirname(SHOP_MESH_FILE), 'canary-50.yaml') }));
    })();
    // A Ctrl-C during start-up leaves `started` to fail on its own later; that failure is not news.
    started.catch(() => undefined);
    await Promise.race([started, stopSignal]);
    if (signals === 0) await stopSignal;
  } catch (err) {
    out.stderr(`mesh up: ${(err as Error).message}`);
    code = 1;
  }
  await sup.stopAll();
  // Exits during the stop scheduled writes; none may land after the file is removed.
  stateClosed = true;
  if (stateTimer) clearTimeout(stateTimer);
  await stateWrites;
  await removeState(stateFile);
  out.stderr(code === 0 ? 'mesh up: stopped; data kept in ' + dir : 'mesh up: stopped everything it had started');
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

function childSpec(name: string, command: string, args: string[], log: (n: string) => string, stage: number, ipc: boolean): ChildSpec {
  return { name, command, args, logFile: log(name), stage, ipc };
}

function portFlag(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new UsageError(`--${flag}: expected a port number 0..65535, got "${v}"`);
  return n;
}

/** An in-process command's output, kept for the error message. */
function capture(): { out: CommandOutput; text(): string } {
  const lines: string[] = [];
  return { out: { stdout: (s) => lines.push(s), stderr: (s) => lines.push(s) }, text: () => lines.join('\n') };
}

/** Whether a port can be bound now (undefined) or why not. */
function probe(hp: HostPort): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE' ? 'address already in use' : err.message));
    s.listen(hp.port, hp.host, () => s.close(() => resolve(undefined)));
  });
}

