// The sidecar program: load config, start the outbound, inbound and admin listeners, swap config atomically, drain on SIGTERM.
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import { systemClock, systemRandom, type Clock, type Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { Snapshot } from '../api/snapshot.js';
import { MeshError } from '../api/errors.js';
import { spiffeUri } from '../certs/spiffe.js';
import { AccessLog } from './access-log.js';
import { createAdminServer } from './admin.js';
import { Cluster, ClusterSet, CONNECT_TIMEOUT_MS } from './cluster.js';
import { configSource, loadSnapshot } from './config-source.js';
export { ConfigError } from './config-source.js';
import { CertificateManager } from './credentials.js';
import { dialMesh } from './dial.js';
import { createListener, InFlight, LIMITS } from './listener.js';
import { createH2Listener, createOutboundFront } from './h2-listener.js';
import { FirstByteWait } from './first-byte.js';
import { LoadShedder } from './overload.js';
import { inboundPipeline, inboundUpgradePipeline, outboundPipeline, outboundUpgradePipeline } from './pipeline.js';
import type { Handler } from './pipeline-types.js';
import { respondError } from './respond.js';
import { createSidecarTunnels } from './sidecar-tunnels.js';
import { startStatsReporter } from './stats-report.js';
import type { TcpListenerSpec } from './tcp-outbound.js';
import { compileRuntime, dumpRuntime, type Identity, type Runtime } from './runtime.js';
import { Telemetry } from './telemetry.js';
import { createInboundServer, meshConnector } from './tls.js';
import { SpanRing } from './trace-ring.js';
import { Tracing } from './tracing.js';
import { TUNNEL_IDLE_TIMEOUT_MS } from './tunnel.js';
import { Watch } from './watch.js';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface SidecarOptions {
  readonly identity: Identity;
  readonly inbound: HostPort;
  readonly outbound: HostPort;
  readonly admin: HostPort;
  /**
   * Where config and certificates come from: a resources file compiled locally with the control plane's compiler
   * and the CA in `dir` (standalone), or the control plane (dynamic; `dir` then only needs ca.crt to trust it).
   */
  readonly config: { readonly mode: 'file'; readonly resources: string } | { readonly mode: 'control-plane'; readonly endpoints: readonly string[]; readonly token: string };
  readonly dir: string;
  /** How long a drain waits for in-flight requests before closing what is left. */
  readonly drainTimeoutMs: number;
  /** Dynamic mode: how often cumulative request stats go to the control plane (mesh stat); default 10 s. */
  readonly statsIntervalMs?: number;
  /** false: no trace layer at all (`--tracing off`); trace headers then pass through untouched, like any other header. */
  readonly tracing?: boolean;
  /** `--tcp`: a loopback listener per `protocol: tcp` service the app calls. */
  readonly tcp?: readonly TcpListenerSpec[];
  /** WebSocket and TCP tunnels with no bytes either way for this long are closed; default 1 h. */
  readonly tunnelIdleTimeoutMs?: number;
  /** Event-loop lag above which new requests are shed with 503 overloaded (overload.ts); 0 turns shedding off; default 100 ms. */
  readonly shedLagMs?: number;
  /** The largest request body forwarded (HARDENING.md row 12); LIMITS.maxRequestBodyBytes (16 MiB) by default. */
  readonly maxRequestBodyBytes?: number;
  readonly log: Logger;
  readonly clock?: Clock;
  readonly random?: Random;
  readonly wallNow?: () => number;
}


export interface Sidecar {
  readonly addresses: { outbound: string; inbound: string; admin: string; tcp: Record<string, string> };
  /** Resolves once a config is applied (at once in standalone mode). */
  readonly configured: Promise<void>;
  /** Re-read the resources file (standalone mode); a file that fails validation changes nothing (as a NACK would). */
  reload(): Promise<boolean>;
  /** Stop accepting, let in-flight requests finish (bounded by drainTimeoutMs), close everything. */
  shutdown(): Promise<void>;
}

function listen(server: net.Server, at: HostPort): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      resolve(a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`);
    });
  });
}

export async function startSidecar(o: SidecarOptions): Promise<Sidecar> {
  const clock = o.clock ?? systemClock;
  const random = o.random ?? systemRandom;
  const { log, identity: me } = o;
  const wallNow = o.wallNow ?? Date.now;
  const telemetry = new Telemetry();
  const spans = new SpanRing();
  const tracing = o.tracing === false ? undefined : new Tracing({ service: me.service, namespace: me.namespace, instance: me.instance }, spans, log, random);
  const accessLog = new AccessLog(clock, wallNow);
  const runtime = new Watch<Runtime | undefined>(undefined);
  const source = await configSource(o, me, { clock, random, log });
  const { trustDomain } = source;
  const id = { trustDomain, namespace: me.namespace, service: me.service };
  const selfUri = spiffeUri(id);
  const certs = new CertificateManager(source.certificates(() => runtime.get()?.snapshot.meshConfig.certificateTTLMs), id, { clock, wallNow, random, log, telemetry });
  const credentials = () => certs.credentials.get();
  const clusters = new ClusterSet({
    clock, random, telemetry, log,
    connectorFor: (svc, _ep, h2) => meshConnector(credentials, spiffeUri({ trustDomain, namespace: svc.namespace, service: svc.name }), { telemetry, connectTimeoutMs: CONNECT_TIMEOUT_MS, h2 }),
    dial: (svc, ep, alpn) => dialMesh(ep, {
      credentials: credentials(), expected: spiffeUri({ trustDomain, namespace: svc.namespace, service: svc.name }), alpn, connectTimeoutMs: CONNECT_TIMEOUT_MS, telemetry,
    }),
  });
  let appCluster: Cluster | undefined;
  let configuredResolve: () => void = () => undefined;
  const configured = new Promise<void>((r) => { configuredResolve = r; });
  /** Compiles first and swaps only on success, so a snapshot that cannot be applied changes nothing. */
  const apply = (snapshot: Snapshot): void => {
    if (snapshot.meshConfig.trustDomain !== trustDomain) {
      // Our certificate and every peer check are tied to the trust domain: switching needs new certificates first.
      throw new Error(`MeshConfig trustDomain "${snapshot.meshConfig.trustDomain}" does not match this sidecar's trust domain "${trustDomain}"`);
    }
    const rt = compileRuntime(snapshot, me, telemetry, clock, runtime.get());
    clusters.apply(snapshot);
    if (appCluster) appCluster.update(rt.appConfig);
    else appCluster = new Cluster(rt.appConfig, { clock, random, telemetry, log });
    runtime.set(rt);
    tracing?.configure(snapshot.meshConfig);
    accessLog.enabled = snapshot.meshConfig.accessLog;
    configuredResolve();
    telemetry.configUpdates.labels('ack').inc();
    log.info('config_applied', { version: snapshot.version, services: snapshot.services.length, routes: snapshot.routes.length });
  };
  const applyOrCount = (snapshot: Snapshot): void => {
    try {
      apply(snapshot);
    } catch (err) {
      telemetry.configUpdates.labels('nack').inc();
      throw err;
    }
  };
  source.onSnapshot(applyOrCount);
  if (source.first) apply(source.first);
  await certs.start();

  const current = () => runtime.get() as Runtime;
  // Dynamic mode listens before its first snapshot (the Hello needs the inbound address): until then, a clear 503.
  const gate = (h: Handler): Handler => (ex) => {
    if (runtime.get()) return h(ex);
    respondError(ex, new MeshError('no-healthy-upstream', 'sidecar has no config from the control plane yet'));
    return Promise.resolve();
  };
  const outIn = new InFlight();
  const inIn = new InFlight();
  const shedLagMs = o.shedLagMs ?? 100;
  // The real clock always: the lag of a fake clock would mean nothing.
  const shedder = shedLagMs > 0
    ? new LoadShedder({ lagTargetMs: shedLagMs, clock: systemClock, random, inFlight: () => outIn.count + inIn.count, finished: () => outIn.finished + inIn.finished })
    : undefined;
  const limits = { ...LIMITS, maxRequestBodyBytes: o.maxRequestBodyBytes ?? LIMITS.maxRequestBodyBytes };
  const deps = {
    maxRequestBodyBytes: limits.maxRequestBodyBytes,
    clock, random, log, telemetry, routes: () => current().routes, cluster: (s: string) => clusters.get(s),
    tracer: tracing && (() => tracing.active), accessLog, shedder,
  };
  const tunnels = createSidecarTunnels({
    clock, log, telemetry, service: me.service, cluster: deps.cluster, appCluster: () => appCluster, access: () => current().access,
    idleTimeoutMs: o.tunnelIdleTimeoutMs ?? TUNNEL_IDLE_TIMEOUT_MS, tcp: o.tcp ?? [],
  });
  const outboundDeps = {
    direction: 'outbound' as const, clock, log, handler: gate(outboundPipeline(deps, me.service)),
    upgrade: gate(outboundUpgradePipeline(deps, me.service, tunnels.websocket)),
    refused: telemetry.routeStats('outbound', me.service, 'unknown', 'none'), accessLog, limits,
  };
  const outboundHttp = createListener(outboundDeps, outIn);
  // h2c with prior knowledge (gRPC apps) shares the outbound port with HTTP/1.1.
  const outboundH2 = createH2Listener(outboundDeps, outIn);
  // Connections on either port that have not begun a request yet: the drain closes them at once.
  const firstByteWait = new FirstByteWait();
  const outbound = createOutboundFront(outboundHttp, outboundH2.server, log, limits.keepAliveTimeoutMs, firstByteWait);
  const inboundChain = {
    ...deps,
    service: me.service,
    appRule: () => current().appRule,
    appCluster: () => appCluster as Cluster,
    rateLimiter: () => current().rateLimiter,
    access: () => current().access,
    selfUri: () => selfUri,
  };
  const inboundDeps = {
    direction: 'inbound' as const, clock, log,
    refused: telemetry.routeStats('inbound', 'unknown', me.service, 'inbound'), accessLog, limits,
    handler: gate(inboundPipeline(inboundChain)),
    upgrade: gate(inboundUpgradePipeline(inboundChain, tunnels.websocket)),
  };
  const inboundHttp = createListener(inboundDeps, inIn);
  const inboundH2 = createH2Listener(inboundDeps, inIn);
  const front = createInboundServer(inboundHttp, {
    credentials,
    mtls: () => current().snapshot.meshConfig.mtls,
    trustDomain: () => trustDomain,
    wallNow,
    telemetry,
    log,
    tcp: tunnels.tcpInbound,
    idleMs: limits.keepAliveTimeoutMs,
    wait: firstByteWait,
  }, inboundH2.server);
  certs.credentials.subscribe(() => front.refresh());
  const inbound = front.server;

  let draining: Promise<void> | undefined;
  const drain = (): Promise<void> => {
    draining ??= (async () => {
      log.info('drain_started', { inflight: outIn.count + inIn.count });
      outIn.draining = inIn.draining = true;
      // Listeners close first: no new connections; idle keep-alive connections are closed by close() itself.
      const closed = Promise.all([...[outbound, inbound].map((s) => new Promise((r) => s.close(r))), tunnels.closeListeners()]);
      // HTTP/2 clients get GOAWAY now, so they open new streams elsewhere while the open ones finish.
      outboundH2.drain();
      inboundH2.drain();
      outboundHttp.closeIdleConnections();
      firstByteWait.closeAll();
      let timer: { cancel(): void } | undefined;
      const deadline = new Promise<'timeout'>((r) => { timer = clock.setTimeout(() => r('timeout'), o.drainTimeoutMs); });
      // WebSocket and TCP tunnels get the same grace as requests, then are closed.
      const result = await Promise.race([Promise.all([outIn.idle(), inIn.idle(), tunnels.idle()]), deadline]);
      timer?.cancel();
      if (result === 'timeout') log.warn('drain_timeout', { inflight: outIn.count + inIn.count, tunnels: tunnels.open });
      tunnels.closeAll();
      outboundHttp.closeAllConnections();
      inboundHttp.closeAllConnections();
      await Promise.all([outboundH2.closeAll(), inboundH2.closeAll()]);
      await closed;
      log.info('drain_finished', {});
    })();
    return draining;
  };

  const admin = createAdminServer({
    telemetry,
    ready: () => runtime.get() !== undefined && credentials() !== undefined && !draining,
    configDump: () => dumpRuntime(current()),
    clusters: () => ({ ...clusters.snapshot(), app: appCluster?.snapshot() }),
    certs: () => {
      const c = credentials();
      return c
        ? { spiffeId: c.uri, serial: c.serial, notBefore: new Date(c.notBefore).toISOString(), notAfter: new Date(c.notAfter).toISOString(), rotations: certs.rotations }
        : { spiffeId: selfUri, loaded: false };
    },
    traces: (traceId) => ({ tracing: tracing ? 'on' : 'off', recorded: spans.recorded, capacity: spans.capacity, spans: spans.recent(traceId) }),
    drain,
  });

  const addresses = {
    outbound: await listen(outbound, o.outbound),
    inbound: await listen(inbound, o.inbound),
    admin: await listen(admin, o.admin),
    tcp: await tunnels.listen(listen),
  };
  log.info('listening', { service: me.service, ...addresses });
  source.start(addresses.inbound, () => Math.floor((credentials()?.notAfter ?? 0) / 1000), addresses.admin);
  const stats = source.stats && startStatsReporter({
    telemetry, clock, log, intervalMs: o.statsIntervalMs ?? 10_000, startedUnixMs: wallNow(), connected: source.stats.connected, send: source.stats.send,
  });
  certs.credentials.subscribe((c) => source.certificateRenewed(Math.floor((c?.notAfter ?? 0) / 1000)));

  return {
    addresses,
    configured,
    async reload() {
      if (o.config.mode !== 'file') return false;
      try {
        apply(await loadSnapshot(o.config.resources));
        return true;
      } catch (err) {
        telemetry.configUpdates.labels('nack').inc();
        log.error('config_rejected', { file: o.config.resources, error: (err as Error).message });
        return false;
      }
    },
    async shutdown() {
      await drain();
      await new Promise((r) => admin.close(r));
      admin.closeAllConnections();
      certs.stop();
      shedder?.stop();
      stats?.stop();
      source.stop();
      await clusters.close();
      await appCluster?.close();
      accessLog.flush();
      await tracing?.close();
    },
  };
}
