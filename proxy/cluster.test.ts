import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock, seededRandom } from '../api/clock.js';
import { createLogger } from '../api/log.js';
import type { ServiceConfig } from '../api/snapshot.js';
import { defaultTrafficPolicy } from '../control-plane/compiler.js';
import { Cluster } from './cluster.js';
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

  function make(cfg: ServiceConfig) {
    const clock = new FakeClock();
    const telemetry = new Telemetry();
    const c = new Cluster(cfg, { clock, random: seededRandom(1), telemetry, log: createLogger('error') });
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
    expect(c.admit(ep)).toBe('refused');
    c.queued--;
    expect(c.admit(ep)).toBe('queued');
  });
});
