// Test harness: pieces shared by the control-plane end-to-end tests: the billing/gateway resources, sync waits, open-ended steady traffic.
import { createPool, header, request } from './client.js';
import type { ControlPlaneProcess, Status } from './control-plane.js';
import type { DynamicSidecar } from './dynamic-sidecar.js';
import { meshConfig, route, toYaml, type Doc } from './resources.js';
import { waitFor } from './wait.js';

const doc = (kind: string, name: string, spec: Record<string, unknown>): Doc => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

/** Service billing (subsets v1/v2 by label, mTLS between sidecars), Service gateway, and a Route for billing at weights v1/v2. */
export function billingDocs(v1Weight: number, v2Weight: number): Doc[] {
  return [
    doc('Service', 'billing', { protocol: 'http' }),
    doc('Service', 'gateway', { protocol: 'http' }),
    doc('TrafficPolicy', 'billing', {
      service: 'billing',
      subsets: [{ name: 'v1', labels: { version: 'v1' } }, { name: 'v2', labels: { version: 'v2' } }],
    }),
    billingRoute(v1Weight, v2Weight),
  ];
}

export function billingRoute(v1Weight: number, v2Weight: number): Doc {
  return route('billing', ['billing'], [{
    backends: [{ service: 'billing', subset: 'v1', weight: v1Weight }, { service: 'billing', subset: 'v2', weight: v2Weight }],
  }]);
}

export function billingYaml(v1Weight: number, v2Weight: number): string {
  return toYaml(billingDocs(v1Weight, v2Weight));
}

export function trustDomainYaml(trustDomain: string): string {
  return toYaml([meshConfig({ trustDomain })]);
}

/**
 * Status lists exactly `count` sidecars, every one in sync (acked what was sent, no NACK) and held by `controlPlane` when given;
 * with `minVersion`, each on that revision or later; with `atCurrent`, each on the replica's current revision (settled); with `sameVersion` (default) all on one version. (A sidecar is pushed only when its view changes, so after a reconnect
 * sidecars can be in sync on different revisions.)
 */
export function allInSync(s: Status, count: number, o: { version?: string; minVersion?: number; sameVersion?: boolean; atCurrent?: boolean; controlPlane?: string } = {}): boolean {
  if (s.sidecars.length !== count) return false;
  const versions = new Set(s.sidecars.map((x) => x.ackedVersion));
  if (o.sameVersion !== false && versions.size !== 1) return false;
  if (o.controlPlane !== undefined && s.sidecars.some((x) => x.controlPlane !== o.controlPlane)) return false;
  if (o.minVersion !== undefined && s.sidecars.some((x) => !(Number(x.ackedVersion) >= o.minVersion!))) return false;
  if (o.atCurrent && s.sidecars.some((x) => x.ackedVersion !== s.currentVersion)) return false;
  return s.sidecars.every((x) => x.inSync && x.nackError === '') && (o.version === undefined || versions.has(o.version));
}

export async function waitAllInSync(
  cp: ControlPlaneProcess, count: number,
  opts: { timeoutMs?: number; version?: string; minVersion?: number; sameVersion?: boolean; atCurrent?: boolean; controlPlane?: string; what?: string } = {},
): Promise<Status> {
  let last: Status | undefined;
  try {
    await waitFor(async () => allInSync((last = await cp.status()), count, opts), {
      timeoutMs: opts.timeoutMs ?? 10_000, intervalMs: 100, what: opts.what ?? `${count} sidecars in sync on ${cp.name}`,
    });
  } catch (e) {
    throw new Error(`${(e as Error).message}\nlast Status: ${JSON.stringify(last, null, 1)}`);
  }
  return last!;
}

/** The endpoints of `service` in a sidecar's active snapshot. */
export async function snapshotEndpoints(sc: DynamicSidecar, service: string): Promise<{ address: string; labels: Record<string, string> }[]> {
  const dump = await sc.configDump();
  const services = (dump.snapshot.services ?? []) as { name: string; endpoints: { address: string; labels: Record<string, string> }[] }[];
  return services.find((s) => s.name === service)?.endpoints ?? [];
}

/** Route `name`'s backends [service/subset, weight] in a sidecar's active snapshot. */
export async function snapshotWeights(sc: DynamicSidecar, name: string): Promise<string[]> {
  const dump = await sc.configDump();
  const routes = (dump.snapshot.routes ?? []) as { name: string; rules: { backends: { service: string; subset?: string; weight: number }[] }[] }[];
  const r = routes.find((x) => x.name === name);
  return r ? r.rules.flatMap((rule) => rule.backends.map((b) => `${b.service}/${b.subset ?? ''}=${b.weight}`)) : [];
}

export interface TrafficSample {
  /** ms since traffic started (performance.now() based). */
  readonly startedAt: number;
  readonly latencyMs: number;
  readonly status: number;
  readonly upstream: string | undefined;
  readonly meshError: string | undefined;
  readonly error: string | undefined;
}

export interface Traffic {
  /** performance.now() at start: sample times are relative to it. */
  readonly t0: number;
  readonly samples: TrafficSample[];
  /** Stops starting requests, waits for those in flight, returns every sample in start order. */
  stop(): Promise<TrafficSample[]>;
}

/** Open-ended steady traffic: `rate` requests/s (paced, bounded concurrency) for `host` through `addr` until stop(). */
export function startTraffic(addr: string, opts: { rate: number; host: string; path?: string; concurrency?: number; timeoutMs?: number }): Traffic {
  const pool = createPool(addr, opts.concurrency ?? 16);
  const samples: TrafficSample[] = [];
  const inflight = new Set<Promise<void>>();
  const t0 = performance.now();
  let stopped = false;
  const interval = 1000 / opts.rate;
  const loop = (async () => {
    for (let i = 0; !stopped; i++) {
      const wait = t0 + i * interval - performance.now();
      // Pacing the schedule, not waiting for a condition.
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      if (stopped) break;
      while (inflight.size >= (opts.concurrency ?? 16)) await Promise.race(inflight);
      const startedAt = performance.now() - t0;
      const p = request(addr, { host: opts.host, path: opts.path ?? '/', dispatcher: pool, timeoutMs: opts.timeoutMs ?? 10_000 }).then(
        (r) => {
          samples.push({ startedAt, latencyMs: performance.now() - t0 - startedAt, status: r.status, upstream: header(r, 'x-upstream'), meshError: header(r, 'x-mesh-error'), error: undefined });
        },
        (err: unknown) => {
          samples.push({ startedAt, latencyMs: performance.now() - t0 - startedAt, status: 0, upstream: undefined, meshError: undefined, error: (err as Error).message });
        },
      ).finally(() => inflight.delete(p));
      inflight.add(p);
    }
  })();
  let stopping: Promise<TrafficSample[]> | undefined;
  return {
    t0,
    samples,
    stop() {
      stopping ??= (async () => {
        stopped = true;
        await loop;
        await Promise.all(inflight);
        await pool.close();
        return [...samples].sort((a, b) => a.startedAt - b.startedAt);
      })();
      return stopping;
    },
  };
}

export const failed = (s: readonly TrafficSample[]): TrafficSample[] => s.filter((x) => x.status !== 200 || x.error !== undefined);

/** A compact description of failures for assertion messages. */
export function describeFailures(s: readonly TrafficSample[], max = 10): string {
  const f = failed(s);
  return `${f.length} of ${s.length} failed${f.length ? ': ' : ''}${f.slice(0, max).map((x) => `@${Math.round(x.startedAt)}ms ${x.status} ${x.meshError ?? ''} ${x.error ?? ''}`.trim()).join('; ')}`;
}

/** One request through `addr` for `host`; the upstream that answered. */
export async function whoAnswers(addr: string, host: string): Promise<{ status: number; upstream: string | undefined }> {
  const r = await request(addr, { host, path: '/', timeoutMs: 5_000 });
  return { status: r.status, upstream: header(r, 'x-upstream') };
}

/** Polls a sidecar's snapshot for the number of endpoints of `service` until stopped; reports the smallest count seen. */
export function watchEndpoints(sc: DynamicSidecar, service: string, intervalMs = 100): { stop(): Promise<{ min: number; samples: number }> } {
  let min = Infinity;
  let samples = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const n = (await snapshotEndpoints(sc, service)).length;
        min = Math.min(min, n);
        samples++;
      } catch {
        // the admin port answering late is not what is measured here
      }
      // Sampling period of the monitor, not a wait for a condition.
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      return { min, samples };
    },
  };
}
