// Least-request picker, built on the power-of-two-choices draw that the peak-EWMA picker also uses with its own cost.
import type { Random } from '../api/clock.js';
import type { Endpoint, Picker } from './endpoint.js';
import { randomIndex } from './balancer-random.js';

/** An endpoint's load estimate at `now`; lower is better. Costs are plain functions so that a pick allocates nothing. */
export type Cost = (ep: Endpoint, now: number) => number;

/**
 * Power of two choices (Mitzenmacher): compare two random endpoints instead of scanning for the best one.
 * It needs no sort or scan, and many sidecars acting on slightly stale load don't all pile onto the same endpoint.
 * Avoids `exclude` unless it covers the whole set; undefined only for an empty set.
 */
export function pickOfTwo(
  endpoints: readonly Endpoint[],
  exclude: ReadonlySet<Endpoint> | undefined,
  random: Random,
  cost: Cost,
  now: number,
): Endpoint | undefined {
  if (endpoints.length === 0) return undefined;
  let avoid = exclude;
  let a = randomIndex(endpoints, avoid, -1, random);
  if (a < 0) {
    // Every endpoint has been tried already: compare among all of them rather than fail the request here.
    avoid = undefined;
    a = randomIndex(endpoints, avoid, -1, random);
  }
  const b = randomIndex(endpoints, avoid, a, random);
  if (b < 0) return endpoints[a];
  // a and b are drawn symmetrically, so keeping a on a tie is already a fair coin toss.
  return cost(endpoints[b], now) < cost(endpoints[a], now) ? endpoints[b] : endpoints[a];
}

const inflightCost: Cost = (ep) => ep.inflight;

export function createLeastRequestPicker(endpoints: readonly Endpoint[], random: Random): Picker {
  // A private copy: the caller's array may be reused for the next endpoint set while this picker is still published.
  const eps = endpoints.slice();
  return { pick: (_hashKey, exclude) => pickOfTwo(eps, exclude, random, inflightCost, 0) };
}
