import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock, seededRandom } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import { createLogger } from '../api/log.js';
import type { ServiceConfig } from '../api/snapshot.js';
import { defaultTrafficPolicy } from '../control-plane/compiler.js';
import { Cluster, PROBE_INTERVAL_MS, type ClusterDeps } from './cluster.js';
import type { Endpoint } from './endpoint.js';
import { Telemetry } from './telemetry.js';

function config(ports: number[], patch: Partial<ServiceConfig['policy']> = {}): ServiceConfig {
  return {
    name: 'billing', namespace: 'default', protocol: 'http',
    endpoints: ports.map((p) => ({ address: `127.0.0.1:${p}`, host: '127.0.0.1', port: p, labels: { version: p % 2 ? 'v1' : 'v2' } })),
    policy: { ...defaultTrafficPolicy('billing'), tls: { mode: 'disable' }, subsets: [{ name: 'v1', labels: { version: 'v1' } }], ...patch },
  };
}

describe('Cluster', () => {
  const clusters: Cluster[] = [];
  afterEach(async () => { await Promise.all(clusters.splice(0).map((c) => c.close())); });

  function make(cfg: ServiceConfig, extra: Partial<ClusterDeps> = {}) {
    const clock = new FakeClock();
    const telemetry = new Telemetry();
    const c = new Cluster(cfg, { clock, random: seededRandom(1), telemetry, log: createLogger('error'), ...extra });
    clusters.push(c);
    return { c, clock, telemetry };
  }

  function picks(c: Cluster, subset = '', n = 300): Set<string> {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) seen.add(c.pick(subset, undefined, undefined)?.id ?? 'none');
    return seen;
  }

  it('ejects after consecutive failures, skips the endpoint, and takes it back when the time is up', async () => {
    const { c, clock, telemetry } = make(config([1001, 1002, 1003]));
    const bad = c.pick('', undefined, undefined);
    if (!bad) throw new Error('no endpoint');
    for (let i = 0; i < 5; i++) c.report(bad, false);
    expect(picks(c).has(bad.id)).toBe(false);
    expect((await telemetry.ejections.get()).values[0]?.value).toBe(1);
    clock.advance(30_000);
    expect(picks(c).has(bad.id)).toBe(true);
  });

  it('keeps endpoint objects and ejections across config updates, drops removed endpoints', () => {
    const { c } = make(config([1001, 1002, 1003]));
    const ep = c.pick('v1', undefined, new Set());
    if (!ep) throw new Error('no endpoint');
    for (let i = 0; i < 5; i++) c.report(ep, false);
    c.update(config([1001, 1002, 1003, 1004]));
    expect(picks(c)).toEqual(new Set([1001, 1002, 1003, 1004].map((p) => `127.0.0.1:${p}`).filter((id) => id !== ep.id)));
    expect(ep.ejected).toBe(true);
    c.update(config([1002]));
    expect(picks(c)).toEqual(new Set(['127.0.0.1:1002']));
    expect(picks(c, 'v1')).toEqual(new Set(['none']));
  });

  it('a subset picks only its members', () => {
    const { c } = make(config([1001, 1002, 1003, 1004]));
    expect(picks(c, 'v1')).toEqual(new Set(['127.0.0.1:1001', '127.0.0.1:1003']));
    expect(picks(c, 'nope')).toEqual(new Set(['none']));
  });

  it('applies a changed outlier config on update', () => {
    const { c } = make(config([1001, 1002, 1003]));
    c.update(config([1001, 1002, 1003], { outlierDetection: { consecutiveFailures: 1, intervalMs: 1000, baseEjectionTimeMs: 1000, maxEjectionPercent: 50 } }));
    const ep = c.pick('', undefined, undefined);
    if (!ep) throw new Error('no endpoint');
    c.report(ep, false);
    expect(ep.ejected).toBe(true);
  });

  it('admits up to maxConnections per endpoint, queues up to maxPendingRequests, then refuses', () => {
    const { c } = make(config([1001], { connectionPool: { maxConnections: 1, maxPendingRequests: 1, idleTimeoutMs: 1000 } }));
    const ep = c.pick('', undefined, undefined);
    if (!ep) throw new Error('no endpoint');
    expect(c.admit(ep)).toBe('now');
    ep.inflight = 1;
    expect(c.admit(ep)).toBe('queued');
    ep.inflight = 2;
    expect(c.queued).toBe(1);
    expect(c.admit(ep)).toBe('refused');
    ep.inflight = 1;
    expect(c.admit(ep)).toBe('queued');
  });

  it('a queued request that got its connection no longer counts as pending', () => {
    // 2 connections, 2 pending: 4 requests in flight fill both; when the first 2 finish, the 2 that waited have the
    // connections and nothing waits, so the next 2 queue again (a per-request counter kept refusing them).
    const { c } = make(config([1001], { connectionPool: { maxConnections: 2, maxPendingRequests: 2, idleTimeoutMs: 1000 } }));
    const ep = c.pick('', undefined, undefined);
    if (!ep) throw new Error('no endpoint');
    ep.inflight = 4;
    expect(c.queued).toBe(2);
    expect(c.admit(ep)).toBe('refused');
    ep.inflight = 2;
    expect(c.queued).toBe(0);
    expect(c.admit(ep)).toBe('queued');
    ep.inflight = 3;
    expect(c.admit(ep)).toBe('queued');
    ep.inflight = 4;
    expect(c.admit(ep)).toBe('refused');
  });

  describe('liveness probes after a connection-level failure', () => {
    /** Lets the probe promises settle between fake-clock steps. */
    const settle = () => new Promise((r) => setImmediate(r));
    const reset = () => new MeshError('upstream-reset', 'upstream reset the request: other side closed');

    /** A cluster whose probes are answered by `alive(ep)`; records each probe's fake time. */
    function probed(ports: number[], alive: (ep: Endpoint) => boolean, patch: Partial<ServiceConfig['policy']> = {}) {
      const probes: { ep: string; at: number }[] = [];
      const ref: { clock?: FakeClock } = {};
      const made = make(config(ports, patch), {
        probe: (ep) => {
          probes.push({ ep: ep.id, at: ref.clock!.now() });
          return alive(ep) ? Promise.resolve() : Promise.reject(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }));
        },
      });
      ref.clock = made.clock;
      /** Steps fake time in probe intervals until `ms` have passed. */
      const run = async (ms: number) => {
        for (let t = 0; t <= ms; t += PROBE_INTERVAL_MS) {
          await settle();
          made.clock.advance(PROBE_INTERVAL_MS);
        }
        await settle();
      };
      return { ...made, probes, run };
    }

    it('a reset on an endpoint that refuses connections ejects it within 1 s, with defaults (5 failures), on the fake clock', async () => {
      const { c, clock, probes, run, telemetry } = probed([1001, 1002, 1003], (ep) => ep.port !== 1003);
      const ep = findEndpoint(c, '127.0.0.1:1003');
      c.report(ep, false, reset());
      await run(1_000);
      expect(ep.ejected).toBe(true);
      // 1 failed try + 4 refused probes = the default 5 connect errors; nothing probed after the ejection.
      expect(probes.map((p) => p.ep)).toEqual(Array(4).fill('127.0.0.1:1003'));
      expect(probes[probes.length - 1].at).toBeLessThan(1_000);
      expect(ep.ejectedUntil - clock.now()).toBeGreaterThan(28_000);
      expect((await telemetry.ejections.get()).values[0]?.value).toBe(1);
      expect(picks(c).has(ep.id)).toBe(false);
    });

    it('a probe that connects ends probing and ejects nothing (an app that reset one request is alive)', async () => {
      const { c, probes, run } = probed([1001, 1002, 1003], () => true);
      const ep = findEndpoint(c, '127.0.0.1:1001');
      c.report(ep, false, reset());
      await run(2_000);
      expect(probes).toHaveLength(1);
      expect(ep.ejected).toBe(false);
      expect(ep.consecutiveFailures).toBe(1);
    });

    it('a 5xx answer or a failure without a connection-level error starts no probe', async () => {
      const { c, probes, run } = probed([1001, 1002, 1003], () => false);
      const ep = findEndpoint(c, '127.0.0.1:1001');
      c.report(ep, false);
      c.report(ep, false, new MeshError('circuit-open', 'too many pending requests'));
      await run(1_000);
      expect(probes).toHaveLength(0);
    });

    it('one probe run at a time per endpoint, at most consecutiveFailures probes when the percentage cap keeps it in', async () => {
      const { c, probes, run } = probed([1001, 1002, 1003], (ep) => ep.port === 1001);
      const [b, d] = [findEndpoint(c, '127.0.0.1:1002'), findEndpoint(c, '127.0.0.1:1003')];
      c.report(b, false, reset());
      c.report(b, false, reset());
      c.report(d, false, reset());
      await run(3_000);
      // maxEjectionPercent 50 of 3 endpoints: one ejection at most.
      expect([b, d].filter((e) => e.ejected)).toHaveLength(1);
      const kept = b.ejected ? d : b;
      expect(probes.filter((p) => p.ep === kept.id).length).toBeLessThanOrEqual(5);
      expect(kept.consecutiveFailures).toBeGreaterThanOrEqual(5);
    });

    it('no probes with outlier detection off, or once the cluster is closed', async () => {
      const off = probed([1001, 1002], () => false, { outlierDetection: { consecutiveFailures: 0, intervalMs: 1000, baseEjectionTimeMs: 1000, maxEjectionPercent: 50 } });
      off.c.report(findEndpoint(off.c, '127.0.0.1:1001'), false, reset());
      await off.run(500);
      expect(off.probes).toHaveLength(0);

      const closing = probed([1001, 1002], () => false);
      const ep = findEndpoint(closing.c, '127.0.0.1:1001');
      closing.c.report(ep, false, reset());
      await closing.c.close();
      await closing.run(1_000);
      expect(closing.probes.length).toBeLessThanOrEqual(1);
      expect(ep.ejected).toBe(false);
    });
  });
});

function findEndpoint(c: Cluster, id: string): Endpoint {
  for (let i = 0; i < 1_000; i++) {
    const ep = c.pick('', undefined, undefined);
    if (ep?.id === id) return ep;
  }
  throw new Error(`endpoint ${id} never picked`);
}
