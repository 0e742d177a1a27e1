// Balancer pickers: what every policy promises (empty set, exclusion, even spread), then each policy's own behaviour, on seeded chance and fake time.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FakeClock, seededRandom } from '../api/clock.js';
import type { LoadBalancerPolicy } from '../api/resources.js';
import { createPicker, type PickerDeps } from './balancer.js';
import { Endpoint, type Picker } from './endpoint.js';

const POLICIES: readonly LoadBalancerPolicy[] = ['ewma', 'least-request', 'round-robin', 'random', 'ring-hash'];

function makeEndpoints(n: number, first = 1): Endpoint[] {
  return Array.from({ length: n }, (_, i) => {
    const host = `10.0.0.${first + i}`;
    return new Endpoint({ address: `${host}:8080`, host, port: 8080, labels: {} });
  });
}

function makeDeps(seed = 1): PickerDeps & { clock: FakeClock } {
  return { clock: new FakeClock(), random: seededRandom(seed) };
}

/** Share of `times` picks that went to each endpoint. */
function shares(
  picker: Picker,
  times: number,
  key: (i: number) => string | undefined = () => undefined,
  exclude?: ReadonlySet<Endpoint>,
): Map<Endpoint, number> {
  const counts = new Map<Endpoint, number>();
  for (let i = 0; i < times; i++) {
    const ep = picker.pick(key(i), exclude);
    if (ep === undefined) throw new Error(`pick ${i} returned undefined`);
    counts.set(ep, (counts.get(ep) ?? 0) + 1);
  }
  return new Map([...counts].map(([ep, c]) => [ep, c / times]));
}

describe.each(POLICIES)('%s picker', (policy) => {
  it('returns undefined for an empty set, with or without a key or exclusions', () => {
    const picker = createPicker(policy, [], makeDeps());
    expect(picker.pick(undefined, undefined)).toBeUndefined();
    expect(picker.pick('user-1', new Set(makeEndpoints(1)))).toBeUndefined();
  });

  it('always returns the only endpoint, even when it is excluded', () => {
    const [only] = makeEndpoints(1);
    const picker = createPicker(policy, [only], makeDeps());
    for (let i = 0; i < 10; i++) {
      expect(picker.pick(`user-${i}`, undefined)).toBe(only);
      expect(picker.pick(undefined, new Set([only]))).toBe(only);
    }
  });

  it('spreads 10,000 picks evenly over 4 equal endpoints', () => {
    const eps = makeEndpoints(4);
    // Ring-hash without a key falls back to random; its keyed spread is checked below with the ring's own tolerance.
    const got = shares(createPicker(policy, eps, makeDeps(7)), 10_000);
    for (const ep of eps) {
      if (policy === 'round-robin') expect(got.get(ep)).toBe(0.25);
      else expect(Math.abs((got.get(ep) ?? 0) - 0.25)).toBeLessThanOrEqual(0.03);
    }
  });

  it('avoids excluded endpoints while others remain', () => {
    const eps = makeEndpoints(4);
    const picker = createPicker(policy, eps, makeDeps(3));
    const key = (i: number) => `user-${i}`;
    const withoutFirst = shares(picker, 1_000, key, new Set([eps[0]]));
    expect(withoutFirst.has(eps[0])).toBe(false);
    expect(withoutFirst.size).toBe(3);
    expect(shares(picker, 200, key, new Set(eps.slice(0, 3)))).toEqual(new Map([[eps[3], 1]]));
  });

  it('falls back to an excluded endpoint when every one has been tried', () => {
    const eps = makeEndpoints(4);
    const picker = createPicker(policy, eps, makeDeps(5));
    const all = new Set(eps);
    for (let i = 0; i < 50; i++) {
      expect(eps).toContain(picker.pick(`user-${i}`, all));
      expect(eps).toContain(picker.pick(undefined, all));
    }
  });
});

describe('every policy (property)', () => {
  it('picks a member of the set, and a non-excluded one whenever one exists', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...POLICIES),
        fc.array(fc.record({ inflight: fc.nat(20), rtt: fc.integer({ min: 1, max: 2_000 }), excluded: fc.boolean() }), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.array(fc.option(fc.string(), { nil: undefined }), { minLength: 1, maxLength: 5 }),
        fc.integer(),
        (policy, states, keys, seed) => {
          const eps = makeEndpoints(states.length);
          eps.forEach((ep, i) => {
            ep.inflight = states[i].inflight;
            ep.observe(states[i].rtt, 0);
          });
          const exclude = new Set(eps.filter((_, i) => states[i].excluded));
          const picker = createPicker(policy, eps, makeDeps(seed));
          for (const key of keys) {
            const ep = picker.pick(key, exclude);
            expect(eps).toContain(ep);
            if (exclude.size < eps.length) expect(exclude.has(ep as Endpoint)).toBe(false);
          }
        },
      ),
      { seed: 42, numRuns: 500 },
    );
  });
});

describe('ewma picker', () => {
  /** One request per ms; each finishes after its endpoint's latency, updating inflight and the estimate as pool.ts will. */
  function drive(picker: Picker, clock: FakeClock, latencyMs: (ep: Endpoint) => number, requests: number): Map<Endpoint, number> {
    const counts = new Map<Endpoint, number>();
    for (let i = 0; i < requests; i++) {
      const ep = picker.pick(undefined, undefined) as Endpoint;
      counts.set(ep, (counts.get(ep) ?? 0) + 1);
      ep.inflight++;
      const started = clock.now();
      clock.setTimeout(() => {
        ep.inflight--;
        ep.observe(clock.now() - started, clock.now());
      }, latencyMs(ep));
      clock.advance(1);
    }
    return new Map([...counts].map(([ep, c]) => [ep, c / requests]));
  }

  // Every position, because a draw that lets both choices be the same endpoint shows up only where the bias lands.
  it.each([0, 1, 2])('starves an endpoint with much higher latency and load (at index %i)', (slowAt) => {
    const eps = makeEndpoints(3);
    const slow = eps[slowAt];
    for (const ep of eps) ep.observe(10, 0);
    slow.observe(800, 0);
    slow.inflight = 20;
    const picker = createPicker('ewma', eps, makeDeps(11));
    expect(shares(picker, 10_000).get(slow) ?? 0).toBeLessThan(0.05);
    // A retry that already tried one fast endpoint should still get the other, not the slow one.
    const tried = eps[(slowAt + 1) % 3];
    expect(shares(picker, 10_000, undefined, new Set([tried])).get(slow) ?? 0).toBeLessThan(0.05);
  });

  it('sends traffic back to a slow endpoint once its estimate decays and it answers quickly', () => {
    const deps = makeDeps(13);
    const eps = makeEndpoints(3);
    const [, , slow] = eps;
    const picker = createPicker('ewma', eps, deps);
    let slowMs = 500;
    const latency = (ep: Endpoint) => (ep === slow ? slowMs : 10);

    expect(drive(picker, deps.clock, latency, 5_000).get(slow) ?? 0).toBeLessThan(0.05);

    slowMs = 10;
    deps.clock.advance(30_000);
    expect(slow.inflight).toBe(0);
    expect(slow.rttAt(deps.clock.now())).toBeLessThan(100);
    const recovered = drive(picker, deps.clock, latency, 5_000).get(slow) ?? 0;
    expect(recovered).toBeGreaterThan(0.2);
  });
});

describe('least-request picker', () => {
  it.each([0, 1, 2])('gives few picks to an endpoint with many requests outstanding, and splits the rest evenly (busy at index %i)', (busyAt) => {
    const eps = makeEndpoints(3);
    const [busy] = eps.splice(busyAt, 1);
    const [a, b] = eps;
    eps.splice(busyAt, 0, busy);
    busy.inflight = 50;
    a.inflight = b.inflight = 1;
    const got = shares(createPicker('least-request', eps, makeDeps(17)), 10_000);
    expect(got.get(busy) ?? 0).toBeLessThan(0.05);
    // a and b tie on every comparison between them, so the tie-break alone decides their split.
    expect(Math.abs((got.get(a) ?? 0) - (got.get(b) ?? 0))).toBeLessThan(0.03);
  });
});

describe('round-robin picker', () => {
  it('visits every endpoint once per cycle', () => {
    const eps = makeEndpoints(5);
    const picker = createPicker('round-robin', eps, makeDeps(19));
    const first = picker.pick(undefined, undefined) as Endpoint;
    const start = eps.indexOf(first);
    for (let i = 1; i < 15; i++) expect(picker.pick(undefined, undefined)).toBe(eps[(start + i) % 5]);
  });

  it('starts at a random offset so sidecars rebuilt together do not move in step', () => {
    const eps = makeEndpoints(5);
    const firsts = new Set(Array.from({ length: 20 }, (_, seed) => createPicker('round-robin', eps, makeDeps(seed)).pick(undefined, undefined)));
    expect(firsts.size).toBeGreaterThan(1);
  });

  it('resumes after the endpoint it chose when it skipped an excluded one', () => {
    const eps = makeEndpoints(4);
    const picker = createPicker('round-robin', eps, makeDeps(23));
    const first = eps.indexOf(picker.pick(undefined, undefined) as Endpoint);
    const skipped = eps[(first + 1) % 4];
    expect(picker.pick(undefined, new Set([skipped]))).toBe(eps[(first + 2) % 4]);
    expect(picker.pick(undefined, undefined)).toBe(eps[(first + 3) % 4]);
  });
});

describe('ring-hash picker', () => {
  const keys = (n: number) => Array.from({ length: n }, (_, i) => `session-${i}`);
  const owners = (picker: Picker, ks: readonly string[]) => ks.map((k) => picker.pick(k, undefined) as Endpoint);

  it('sends the same key to the same endpoint, across rebuilds, orderings and seeds', () => {
    const eps = makeEndpoints(5);
    const picker = createPicker('ring-hash', eps, makeDeps(1));
    const rebuilt = createPicker('ring-hash', [...eps].reverse(), makeDeps(99));
    for (const key of keys(200)) {
      const owner = picker.pick(key, undefined);
      for (let i = 0; i < 5; i++) expect(picker.pick(key, undefined)).toBe(owner);
      expect(rebuilt.pick(key, undefined)).toBe(owner);
    }
  });

  it('moves a retried key to one fixed next endpoint clockwise', () => {
    const eps = makeEndpoints(5);
    const picker = createPicker('ring-hash', eps, makeDeps(2));
    for (const key of keys(100)) {
      const owner = picker.pick(key, undefined) as Endpoint;
      const retry = picker.pick(key, new Set([owner]));
      expect(retry).not.toBe(owner);
      expect(picker.pick(key, new Set([owner]))).toBe(retry);
      // Where the key goes if its owner disappears is where a retry should go, so the retry warms the right cache.
      expect(createPicker('ring-hash', eps.filter((ep) => ep !== owner), makeDeps(3)).pick(key, undefined)).toBe(retry);
    }
  });

  it('keeps keys in place when an endpoint is removed, except those it owned', () => {
    const eps = makeEndpoints(5);
    const ks = keys(2_000);
    const before = owners(createPicker('ring-hash', eps, makeDeps(4)), ks);
    const after = owners(createPicker('ring-hash', eps.slice(0, 4), makeDeps(5)), ks);
    const survivors = ks.map((_, i) => i).filter((i) => before[i] !== eps[4]);
    const kept = survivors.filter((i) => after[i] === before[i]).length;
    expect(kept / survivors.length).toBeGreaterThanOrEqual(0.95);
  });

  it('moves only about 1/(N+1) of keys when an endpoint is added', () => {
    const eps = makeEndpoints(6);
    const ks = keys(2_000);
    const before = owners(createPicker('ring-hash', eps.slice(0, 5), makeDeps(6)), ks);
    const after = owners(createPicker('ring-hash', eps, makeDeps(7)), ks);
    const moved = ks.filter((_, i) => after[i] !== before[i]).length;
    expect(moved / ks.length).toBeLessThanOrEqual(0.3);
    // Every key that moved went to the newcomer; none shuffled between the old endpoints.
    expect(ks.every((_, i) => after[i] === before[i] || after[i] === eps[5])).toBe(true);
  });

  it('spreads keys roughly evenly', () => {
    const eps = makeEndpoints(4);
    const got = shares(createPicker('ring-hash', eps, makeDeps(8)), 4_000, (i) => `session-${i}`);
    for (const ep of eps) {
      expect(got.get(ep) ?? 0).toBeGreaterThanOrEqual(0.15);
      expect(got.get(ep) ?? 0).toBeLessThanOrEqual(0.35);
    }
  });
});
