// Service → endpoints, health, ejection, pickers and pools; diff-applied per snapshot so warm pools and health survive.
import type net from 'node:net';
import type { Pool } from 'undici';
import type { Clock, Random } from '../api/clock.js';
import type { ErrorCode, MeshError } from '../api/errors.js';
import type { Snapshot, ServiceConfig } from '../api/snapshot.js';
import type { Logger } from '../api/log.js';
import { createPicker } from './balancer.js';
import { dialPlain } from './dial.js';
import { Endpoint, type Picker } from './endpoint.js';
import { OutlierDetector } from './outlier.js';
import type { Exchange } from './exchange.js';
import { H2Pool } from './h2-pool.js';
import { createEndpointPool, type PoolSettings } from './pool.js';
import { RetryBudget } from './retry-policy.js';
import type { Telemetry } from './telemetry.js';

/** Linkerd's outbound connect timeout: a dead endpoint should cost a retry, not the whole request budget. */
export const CONNECT_TIMEOUT_MS = 1_000;
/** Pause between liveness probes of an endpoint whose connection failed: with the default 5 failures, ejected in ≈ 0.4 s. */
export const PROBE_INTERVAL_MS = 100;
/** Failures that may mean nothing is left at the endpoint's address: each starts a liveness probe (Cluster.report). */
const CONNECTION_FAILURES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['upstream-connect-failed', 'upstream-reset', 'upstream-timeout']);

export interface ClusterDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly telemetry: Telemetry;
  readonly log: Logger;
  /** The mTLS connector for an endpoint of a `tls.mode: mutual` service (tls.ts); without it such a service cannot be reached. */
  readonly connectorFor?: (service: ServiceConfig, ep: Endpoint, h2: boolean) => PoolSettings['connect'];
  /** Raw mTLS connections for tunnels (dial.ts dialMesh), offering one ALPN id; without it a mutual service cannot be tunnelled to. */
  readonly dial?: (service: ServiceConfig, ep: Endpoint, alpn: string) => Promise<net.Socket>;
  /** One liveness probe (default: a plain TCP connect, closed at once, bounded by CONNECT_TIMEOUT_MS); rejects when refused. */
  readonly probe?: (ep: Endpoint) => Promise<void>;
}

const tcpProbe = (ep: Endpoint): Promise<void> => dialPlain(ep, CONNECT_TIMEOUT_MS).then((s) => void s.destroy());

export class Cluster {
  private config: ServiceConfig;
  private endpoints: Endpoint[] = [];
  private readonly pools = new Map<Endpoint, Pool>();
  private readonly h2Pools = new Map<Endpoint, H2Pool>();
  /** Picker per subset name ('' = whole service), rebuilt when membership or health changes. */
  private pickers = new Map<string, Picker>();
  private outlier: OutlierDetector;
  budget: RetryBudget;
  /** Endpoints with a liveness probe under way. */
  private readonly probing = new Set<Endpoint>();
  private closed = false;

  constructor(config: ServiceConfig, private readonly deps: ClusterDeps) {
    this.config = config;
    this.outlier = this.createOutlier(config);
    this.budget = new RetryBudget(config.policy.retryBudget, deps.clock);
    this.update(config);
  }

  private createOutlier(config: ServiceConfig): OutlierDetector {
    const deps = this.deps;
    return new OutlierDetector(config.policy.outlierDetection, deps.clock, {
      onChange: () => this.rebuildPickers(),
      onEject: (ep) => {
        deps.telemetry.ejections.labels(this.name).inc();
        deps.log.warn('endpoint_ejected', { service: this.name, endpoint: ep.id, until_ms: Math.round(ep.ejectedUntil - deps.clock.now()), times: ep.timesEjected });
      },
    });
  }

  get name(): string {
    return this.config.name;
  }

  get policy(): ServiceConfig['policy'] {
    return this.config.policy;
  }

  get protocol(): ServiceConfig['protocol'] {
    return this.config.protocol;
  }

  /** Applies a new config: endpoints still present keep their pool, load and health; removed ones are closed. */
  update(config: ServiceConfig): void {
    const poolChanged = JSON.stringify(config.policy.connectionPool) !== JSON.stringify(this.config.policy.connectionPool) ||
      config.policy.tls.mode !== this.config.policy.tls.mode;
    const previous = this.config.policy;
    this.config = config;
    // A changed detector or budget config starts fresh; ejections in force keep running on the new detector.
    if (JSON.stringify(previous.outlierDetection) !== JSON.stringify(config.policy.outlierDetection)) {
      this.outlier.close();
      this.outlier = this.createOutlier(config);
    }
    if (JSON.stringify(previous.retryBudget) !== JSON.stringify(config.policy.retryBudget)) {
      this.budget = new RetryBudget(config.policy.retryBudget, this.deps.clock);
    }
    const old = new Map(this.endpoints.map((e) => [e.id, e]));
    const next: Endpoint[] = [];
    for (const spec of config.endpoints) {
      const fresh = new Endpoint(spec);
      const prev = old.get(fresh.id);
      if (prev && sameLabels(prev.labels, fresh.labels)) {
        old.delete(fresh.id);
        next.push(prev);
      } else {
        next.push(fresh);
      }
    }
    for (const gone of old.values()) this.closePool(gone);
    if (poolChanged) for (const ep of next) this.closePool(ep);
    this.endpoints = next;
    this.outlier.setEndpoints(next);
    this.rebuildPickers();
  }

  private rebuildPickers(): void {
    const healthy = this.endpoints.filter((e) => !e.ejected);
    const { loadBalancer, subsets } = this.config.policy;
    const deps = { clock: this.deps.clock, random: this.deps.random };
    const pickers = new Map<string, Picker>([['', createPicker(loadBalancer.policy, healthy, deps)]]);
    for (const s of subsets) {
      const members = healthy.filter((e) => Object.entries(s.labels).every(([k, v]) => e.labels[k] === v));
      pickers.set(s.name, createPicker(loadBalancer.policy, members, deps));
    }
    this.pickers = pickers;
  }

  pick(subset: string, hashKey: string | undefined, exclude: ReadonlySet<Endpoint> | undefined): Endpoint | undefined {
    return this.pickers.get(subset)?.pick(hashKey, exclude);
  }

  /** The header a ring-hash policy hashes on, if any. */
  get hashHeader(): string | undefined {
    return this.config.policy.loadBalancer.hashOn?.header;
  }

  /** HTTP/2 upstream: for a gRPC service, and for an HTTP/2 caller of a mesh peer (which speaks h2 on its inbound port). */
  speaksH2(ex: Exchange): boolean {
    return this.config.protocol === 'grpc' || (ex.req.httpVersionMajor === 2 && this.config.policy.tls.mode === 'mutual');
  }

  h2PoolFor(ep: Endpoint): H2Pool {
    let pool = this.h2Pools.get(ep);
    if (!pool) {
      pool = new H2Pool(ep, {
        idleTimeoutMs: this.config.policy.connectionPool.idleTimeoutMs,
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        connect: this.config.policy.tls.mode === 'mutual' ? this.mtlsConnector(ep, true) : undefined,
      });
      this.h2Pools.set(ep, pool);
    }
    return pool;
  }

  poolFor(ep: Endpoint): Pool {
    let pool = this.pools.get(ep);
    if (!pool) {
      const cp = this.config.policy.connectionPool;
      pool = createEndpointPool(ep, {
        maxConnections: cp.maxConnections,
        idleTimeoutMs: cp.idleTimeoutMs,
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        connect: this.config.policy.tls.mode === 'mutual' ? this.mtlsConnector(ep) : undefined,
      });
      this.pools.set(ep, pool);
    }
    return pool;
  }

  private mtlsConnector(ep: Endpoint, h2 = false): PoolSettings['connect'] {
    const c = this.deps.connectorFor?.(this.config, ep, h2);
    if (c) return c;
    // Never fall back to plaintext for a service that asked for mutual TLS.
    return (_opts, callback) => callback(Object.assign(new Error(`no mTLS available for service "${this.name}"`), { code: 'ERR_MESH_NO_CERTIFICATE' }), null);
  }

  /**
   * A raw connection to `ep` for a tunnel (WebSocket, TCP service), with the pools' connect timeout: mTLS offering
   * `alpn` for `tls: mutual`, plain TCP for `disable`. As for pools, never plaintext to a service that asked for mTLS.
   */
  dial(ep: Endpoint, alpn: string): Promise<net.Socket> {
    if (this.config.policy.tls.mode !== 'mutual') return dialPlain(ep, CONNECT_TIMEOUT_MS);
    if (!this.deps.dial) {
      return Promise.reject(Object.assign(new Error(`no mTLS available for service "${this.name}"`), { code: 'ERR_MESH_NO_CERTIFICATE' }));
    }
    return this.deps.dial(this.config, ep, alpn);
  }

  /**
   * Requests waiting for a connection now, across all endpoints (the circuit's pending count): an endpoint's pool has
   * maxConnections connections carrying one request each, so what is in flight beyond that waits in its queue. Derived,
   * not counted per request: a counter counted a request queued at admission as pending until it finished, long after
   * it had its connection, and refused requests with `circuit-open` while few waited (2,000 concurrent requests against
   * limits of 1,024 + 1,024 were refused by the thousand, `npm run bench:overload -- --clients 2000 --load 1`).
   */
  get queued(): number {
    const max = this.config.policy.connectionPool.maxConnections;
    let n = 0;
    for (const ep of this.endpoints) if (ep.inflight > max) n += ep.inflight - max;
    return n;
  }

  /** Circuit check before dispatch: a request that would queue beyond maxPendingRequests is refused instead. */
  admit(ep: Endpoint): 'now' | 'queued' | 'refused' {
    const cp = this.config.policy.connectionPool;
    if (ep.inflight < cp.maxConnections) return 'now';
    return this.queued >= cp.maxPendingRequests ? 'refused' : 'queued';
  }

  /** One try's outcome for outlier detection; `error` (a failed try's) decides whether the endpoint is probed. */
  report(ep: Endpoint, ok: boolean, error?: MeshError): void {
    if (ok) return this.outlier.reportSuccess(ep);
    this.outlier.reportFailure(ep);
    if (error && CONNECTION_FAILURES.has(error.code)) this.probe(ep);
  }

  /**
   * HARDENING.md: a dead endpoint is ejected within 1 s. Consecutive failures alone do not get there with the EWMA
   * picker (the default): after its first failure the picker avoids the endpoint (balance.ts's failure penalty), so the
   * failures that would eject it never come, and /clusters calls a dead endpoint healthy until its estimate decays and a
   * real request fails on it again (test/hardening/faults.test.ts). So, as Linkerd reconnects an endpoint whose connection
   * failed and keeps it out of the balancer while it cannot connect, a try that failed at the connection level starts
   * plain TCP connects to the endpoint, PROBE_INTERVAL_MS apart: each refused (or timed-out) one is a connect error for
   * the detector, as DESIGN.md counts them; probing stops at the first connect, at ejection, or after consecutiveFailures
   * probes (when the percentage cap keeps the endpoint in). A plain connect closed before any byte is not a failed
   * handshake for a mesh peer (tls.ts waits for the first byte), and needs no certificate.
   */
  private probe(ep: Endpoint): void {
    if (this.probing.has(ep) || !this.outlier.enabled) return;
    this.probing.add(ep);
    let left = this.config.policy.outlierDetection.consecutiveFailures;
    const next = (): void => {
      if (this.closed || ep.ejected || left-- <= 0 || !this.endpoints.includes(ep)) return void this.probing.delete(ep);
      (this.deps.probe ?? tcpProbe)(ep).then(
        () => void this.probing.delete(ep),
        () => {
          if (this.closed) return void this.probing.delete(ep);
          this.outlier.reportFailure(ep);
          this.deps.clock.setTimeout(next, PROBE_INTERVAL_MS);
        },
      );
    };
    next();
  }

  snapshot(): object {
    const now = this.deps.clock.now();
    return {
      service: this.name,
      loadBalancer: this.config.policy.loadBalancer.policy,
      queued: this.queued,
      endpoints: this.endpoints.map((e) => ({
        address: e.id,
        labels: e.labels,
        healthy: !e.ejected,
        ejected: e.ejected,
        ejectedForMs: e.ejected ? Math.max(0, Math.round(e.ejectedUntil - now)) : 0,
        timesEjected: e.timesEjected,
        inflight: e.inflight,
        consecutiveFailures: e.consecutiveFailures,
        latencyMs: Math.round(e.rttAt(now) * 100) / 100,
      })),
    };
  }

  private closePool(ep: Endpoint): void {
    const h2 = this.h2Pools.get(ep);
    this.h2Pools.delete(ep);
    void h2?.close();
    const pool = this.pools.get(ep);
    if (!pool) return;
    this.pools.delete(ep);
    // Let in-flight requests finish on the old pool; new ones get a fresh pool.
    pool.close().catch(() => undefined);
  }

  close(): Promise<void> {
    this.closed = true;
    this.outlier.close();
    const all = [...this.pools.values()].map((p) => p.close().catch(() => undefined));
    all.push(...[...this.h2Pools.values()].map((p) => p.close()));
    this.pools.clear();
    this.h2Pools.clear();
    return Promise.all(all).then(() => undefined);
  }
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** All clusters of a snapshot, updated in place on every new snapshot. */
export class ClusterSet {
  private readonly clusters = new Map<string, Cluster>();

  constructor(private readonly deps: ClusterDeps) {}

  apply(snapshot: Snapshot): void {
    const seen = new Set<string>();
    for (const svc of snapshot.services) {
      seen.add(svc.name);
      const existing = this.clusters.get(svc.name);
      if (existing) existing.update(svc);
      else this.clusters.set(svc.name, new Cluster(svc, this.deps));
    }
    for (const [name, c] of this.clusters) {
      if (seen.has(name)) continue;
      this.clusters.delete(name);
      void c.close();
    }
  }

  get(service: string): Cluster | undefined {
    return this.clusters.get(service);
  }

  snapshot(): object {
    return { clusters: [...this.clusters.values()].map((c) => c.snapshot()) };
  }

  close(): Promise<void> {
    return Promise.all([...this.clusters.values()].map((c) => c.close())).then(() => undefined);
  }
}
