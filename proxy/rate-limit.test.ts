// Token buckets on fake time: a full burst first, then the steady refill rate; per-client buckets, their LRU bound, and
// how a limiter survives a snapshot from YAML through the wire to the sidecar's runtime.
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { loadResources } from '../api/load.js';
import { formatIssue, type RateLimitSpec } from '../api/resources.js';
import { compileSnapshot } from '../control-plane/compiler.js';
import { parseSnapshot } from './config-client.js';
import type { Exchange, Peer } from './exchange.js';
import { clientKey, compileRateLimiter, KeyedTokenBuckets, MAX_KEYS, TokenBucket, type RateLimiter } from './rate-limit.js';
import { compileRuntime, type Identity, type Runtime } from './runtime.js';
import { Telemetry } from './telemetry.js';

const drain = (b: TokenBucket): number => {
  let n = 0;
  while (b.take()) n++;
  return n;
};

/** Just what the limiter reads from an exchange: the request headers and the mTLS peer. */
const exchange = (headers: Record<string, string | string[]> = {}, peer?: Peer): Exchange =>
  ({ req: { headers }, peer }) as unknown as Exchange;
const peer = (service: string): Peer => ({ uri: `spiffe://mesh.local/ns/default/sa/${service}`, namespace: 'default', service });

/** Takes until refused (bounded, so a broken limiter fails the test instead of hanging it). */
const drainEx = (l: RateLimiter, ex: Exchange): number => {
  let n = 0;
  while (n < 1_000 && l.take(ex)) n++;
  return n;
};

describe('TokenBucket', () => {
  it('starts full: a burst passes at once, the next request does not', () => {
    const b = new TokenBucket({ requestsPerSecond: 10, burst: 5 }, new FakeClock());
    expect(drain(b)).toBe(5);
    expect(b.take()).toBe(false);
  });

  it.each([
    { wait: 50, want: 0 },
    { wait: 100, want: 1 },
    { wait: 250, want: 2 },
    { wait: 400, want: 4 },
    { wait: 1_000, want: 5 }, // capped at burst, not 10
    { wait: 60_000, want: 5 },
  ])('after draining, $wait ms refills $want tokens at 10 rps (burst 5)', ({ wait, want }) => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 10, burst: 5 }, clock);
    drain(b);
    clock.advance(wait);
    expect(drain(b)).toBe(want);
  });

  it('holds the steady rate under constant pressure', () => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 100, burst: 20 }, clock);
    let passed = 0;
    // A request every millisecond for 10 s: the burst, plus 100 per second over the 9.999 s after it.
    for (let t = 0; t < 10_000; t++) {
      if (b.take()) passed++;
      clock.advance(1);
    }
    expect(passed).toBe(20 + 1_000 - 1);
  });

  it('keeps fractional refills: 3 rps yields 3 tokens per second exactly', () => {
    const clock = new FakeClock();
    // burst 3, not 1: with room for only one token, polling at whole milliseconds would overflow the fractions away.
    const b = new TokenBucket({ requestsPerSecond: 3, burst: 3 }, clock);
    drain(b);
    let passed = 0;
    for (let t = 0; t < 3_000; t++) {
      clock.advance(1);
      if (b.take()) passed++;
    }
    expect(passed).toBe(9);
  });

  it('treats burst 0 as 1 so something can pass', () => {
    const clock = new FakeClock();
    const b = new TokenBucket({ requestsPerSecond: 1, burst: 0 }, clock);
    expect(drain(b)).toBe(1);
    clock.advance(1_000);
    expect(drain(b)).toBe(1);
  });
});

describe('clientKey', () => {
  const header = { header: 'x-shop-client' } as const;
  it.each<{ name: string; headers: Record<string, string | string[]>; want: string | undefined }>([
    { name: 'a plain value', headers: { 'x-shop-client': 'acme' }, want: 'acme' },
    { name: 'the first of repeated lines (node joins them)', headers: { 'x-shop-client': 'acme, globex' }, want: 'acme' },
    { name: 'the first of an array', headers: { 'x-shop-client': ['acme', 'globex'] }, want: 'acme' },
    { name: 'no header', headers: {}, want: undefined },
    { name: 'an empty value', headers: { 'x-shop-client': '' }, want: undefined },
    { name: 'an empty first element', headers: { 'x-shop-client': ' , acme' }, want: undefined },
    { name: 'a long value, cut to 256 bytes', headers: { 'x-shop-client': 'a'.repeat(300) }, want: 'a'.repeat(256) },
  ])('header key: $name', ({ headers, want }) => {
    expect(clientKey(header, exchange(headers))).toBe(want);
  });

  it('source key: the caller\'s service, or undefined for a plaintext caller', () => {
    expect(clientKey('source', exchange({}, peer('gateway')))).toBe('gateway');
    expect(clientKey('source', exchange({ 'x-shop-client': 'acme' }))).toBeUndefined();
  });
});

describe('KeyedTokenBuckets', () => {
  const cfg = { requestsPerSecond: 10, burst: 5 } as const;

  it('gives each header value its own bucket', () => {
    const clock = new FakeClock();
    const l = new KeyedTokenBuckets({ ...cfg, key: { header: 'x-shop-client' } }, clock);
    expect(drainEx(l, exchange({ 'x-shop-client': 'acme' }))).toBe(5);
    expect(drainEx(l, exchange({ 'x-shop-client': 'globex' }))).toBe(5);
    expect(l.take(exchange({ 'x-shop-client': 'acme' }))).toBe(false);
    clock.advance(100);
    expect(drainEx(l, exchange({ 'x-shop-client': 'acme' }))).toBe(1);
    expect(l.size).toBe(2);
  });

  it('with total, every request also takes from one service-wide bucket: rotating the key buys no fresh burst', () => {
    const clock = new FakeClock();
    const l = new KeyedTokenBuckets({ ...cfg, key: { header: 'x-shop-client' }, total: { requestsPerSecond: 20, burst: 8 } }, clock);
    expect(drainEx(l, exchange({ 'x-shop-client': 'acme' }))).toBe(5);
    // acme is over its own share: refused without spending the total's tokens, so globex still gets the 3 left.
    expect(l.take(exchange({ 'x-shop-client': 'acme' }))).toBe(false);
    expect(drainEx(l, exchange({ 'x-shop-client': 'globex' }))).toBe(3);
    expect(l.take(exchange({ 'x-shop-client': 'initech' }))).toBe(false);
    expect(l.take(exchange())).toBe(false);
    clock.advance(100);
    // 100 ms refills 2 service-wide tokens (20/s), and 1 per client (10/s).
    expect(drainEx(l, exchange({ 'x-shop-client': 'initech' }))).toBe(2);
  });

  it('shares one bucket among requests without the header or with an empty one', () => {
    const l = new KeyedTokenBuckets({ ...cfg, key: { header: 'x-shop-client' } }, new FakeClock());
    expect(drainEx(l, exchange())).toBe(5);
    expect(l.take(exchange({ 'x-shop-client': '' }))).toBe(false);
    // The shared bucket is not a map entry, so no value a client sends can land in it.
    expect(l.size).toBe(0);
    expect(drainEx(l, exchange({ 'x-shop-client': 'acme' }))).toBe(5);
  });

  it('source key: one bucket per calling service, plaintext callers share one', () => {
    const l = new KeyedTokenBuckets({ ...cfg, key: 'source' }, new FakeClock());
    expect(drainEx(l, exchange({}, peer('gateway')))).toBe(5);
    expect(drainEx(l, exchange({}, peer('orders')))).toBe(5);
    // A header never picks the bucket under `source`.
    expect(l.take(exchange({ 'x-shop-client': 'other' }, peer('gateway')))).toBe(false);
    expect(drainEx(l, exchange())).toBe(5);
    expect(l.take(exchange())).toBe(false);
  });

  it(`holds at most ${MAX_KEYS} keys, evicting the least recently used; an evicted key starts full`, () => {
    const l = new KeyedTokenBuckets({ ...cfg, key: { header: 'x-shop-client' } }, new FakeClock());
    for (let i = 0; i < 5; i++) l.takeFor('first');
    for (let i = 0; i < 5; i++) l.takeFor('kept');
    expect(l.takeFor('first')).toBe(false);
    for (let i = 0; i < 20_000; i++) {
      l.takeFor(`client-${i}`);
      // Used now and then, so it never becomes the least recently used: were it evicted, it would come back full.
      if (i % 1_000 === 999) expect(l.takeFor('kept')).toBe(false);
      expect(l.size).toBeLessThanOrEqual(MAX_KEYS);
    }
    expect(l.size).toBe(MAX_KEYS);
    let passed = 0;
    while (passed < 100 && l.takeFor('first')) passed++;
    expect(passed).toBe(5);
  });
});

describe('compileRateLimiter', () => {
  const clock = new FakeClock();
  const base: RateLimitSpec = { requestsPerSecond: 10, burst: 5 };
  const keyed: RateLimitSpec = { ...base, key: { header: 'x-shop-client' } };

  it('builds no limiter without a spec, one bucket without a key, per-client buckets with one', () => {
    expect(compileRateLimiter(undefined, clock)).toBeUndefined();
    expect(compileRateLimiter(base, clock)).toBeInstanceOf(TokenBucket);
    expect(compileRateLimiter(keyed, clock)).toBeInstanceOf(KeyedTokenBuckets);
    expect(compileRateLimiter({ ...base, key: 'source' }, clock)).toBeInstanceOf(KeyedTokenBuckets);
  });

  it.each<[string, RateLimitSpec, RateLimitSpec, boolean]>([
    ['unchanged, no key', base, { ...base }, true],
    ['unchanged header key (a new object)', keyed, { ...base, key: { header: 'x-shop-client' } }, true],
    ['unchanged source key', { ...base, key: 'source' }, { ...base, key: 'source' }, true],
    ['another rate', base, { ...base, requestsPerSecond: 11 }, false],
    ['another burst', keyed, { ...keyed, burst: 6 }, false],
    ['a key added', base, keyed, false],
    ['a key removed', keyed, base, false],
    ['another header', keyed, { ...base, key: { header: 'x-tenant' } }, false],
    ['header to source', keyed, { ...base, key: 'source' }, false],
    ['a total added', keyed, { ...keyed, total: { requestsPerSecond: 100, burst: 10 } }, false],
    ['unchanged total', { ...keyed, total: { requestsPerSecond: 100, burst: 10 } }, { ...keyed, total: { requestsPerSecond: 100, burst: 10 } }, true],
    ['another total burst', { ...keyed, total: { requestsPerSecond: 100, burst: 10 } }, { ...keyed, total: { requestsPerSecond: 100, burst: 11 } }, false],
  ])('keeps the previous limiter only when the limit is the same: %s', (_name, before, after, kept) => {
    const limiter = compileRateLimiter(before, clock);
    expect(compileRateLimiter(after, clock, { spec: before, limiter }) === limiter).toBe(kept);
  });
});

describe('rate limit key from YAML to the sidecar runtime', () => {
  const yaml = (rateLimit: string): string => `apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
---
apiVersion: mesh/v1
kind: TrafficPolicy
metadata: { name: billing }
spec: { service: billing, rateLimit: ${rateLimit} }
`;
  const me: Identity = { service: 'billing', namespace: 'default', app: { host: '127.0.0.1', port: 9001 }, labels: {}, instance: 'b-1' };
  const telemetry = new Telemetry({ processMetrics: false });
  const clock = new FakeClock();
  /** Validate and compile as the control plane does, then cross the wire as JSON as the sidecar receives it. */
  const push = (rateLimit: string, version: string, previous?: Runtime): Runtime => {
    const loaded = loadResources(yaml(rateLimit), 'shop.yaml');
    expect(loaded.issues.map(formatIssue)).toEqual([]);
    const snap = compileSnapshot(loaded.resources, version);
    const received = parseSnapshot({ version, nonce: 'n', snapshotJson: JSON.stringify(snap), hash: '' });
    return compileRuntime(received, me, telemetry, clock, previous);
  };

  it('arrives with the key and keeps its buckets across a push that leaves the limit unchanged', () => {
    const v1 = push('{ requestsPerSecond: 10, burst: 2, key: { header: X-Shop-Client } }', 'v1');
    expect(v1.snapshot.services[0].policy.rateLimit).toEqual({ requestsPerSecond: 10, burst: 2, key: { header: 'x-shop-client' } });
    const limiter = v1.rateLimiter as KeyedTokenBuckets;
    expect(limiter).toBeInstanceOf(KeyedTokenBuckets);
    expect(drainEx(limiter, exchange({ 'x-shop-client': 'acme' }))).toBe(2);

    const v2 = push('{ requestsPerSecond: 10, burst: 2, key: { header: x-shop-client } }', 'v2', v1);
    expect(v2.rateLimiter).toBe(limiter);
    expect(v2.rateLimiter?.take(exchange({ 'x-shop-client': 'acme' }))).toBe(false);

    const v3 = push('{ requestsPerSecond: 10, burst: 2, key: source }', 'v3', v2);
    expect(v3.rateLimiter).not.toBe(limiter);
    expect(v3.snapshot.services[0].policy.rateLimit?.key).toBe('source');
  });

  it('total arrives with the key; total without a key is refused at validation', () => {
    const v1 = push('{ requestsPerSecond: 10, burst: 2, key: source, total: { requestsPerSecond: 100, burst: 3 } }', 'v1');
    expect(v1.snapshot.services[0].policy.rateLimit?.total).toEqual({ requestsPerSecond: 100, burst: 3 });
    const l = v1.rateLimiter!;
    expect(drainEx(l, exchange({}, peer('gateway')))).toBe(2);
    expect(drainEx(l, exchange({}, peer('users')))).toBe(1);
    const bad = loadResources(yaml('{ requestsPerSecond: 10, burst: 2, total: { requestsPerSecond: 100, burst: 3 } }'), 'shop.yaml');
    expect(bad.issues.map(formatIssue)).toEqual([
      'shop.yaml:8 TrafficPolicy/billing spec.rateLimit.total: needs key: without key the limit is already one bucket for the whole service',
    ]);
  });
});
