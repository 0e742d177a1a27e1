// Uniform random picker, and the exclusion-aware random draw that the two-choice and ring-hash pickers build on.
import type { Random } from '../api/clock.js';
import type { Endpoint, Picker } from './endpoint.js';

// A retry excludes one or two endpoints of many, so a blind draw almost always lands on an allowed one.
// The counting scan after them keeps the draw exact and bounded when most of the set is excluded.
const BLIND_DRAWS = 4;

/**
 * Index of an endpoint drawn uniformly from those neither at index `skip` nor in `exclude`, or -1 when none is.
 * Pass `skip` -1 to skip nothing.
 */
export function randomIndex(
  endpoints: readonly Endpoint[],
  exclude: ReadonlySet<Endpoint> | undefined,
  skip: number,
  random: Random,
): number {
  const n = endpoints.length;
  const skipping = skip >= 0 && skip < n;
  if (exclude === undefined || exclude.size === 0) {
    const choices = skipping ? n - 1 : n;
    if (choices <= 0) return -1;
    const i = Math.floor(random() * choices);
    return skipping && i >= skip ? i + 1 : i;
  }
  // Rejection sampling is exactly uniform over the allowed endpoints whenever it succeeds, and so is the
  // scan, so the mixture of the two is too.
  for (let t = 0; t < BLIND_DRAWS; t++) {
    const i = Math.floor(random() * n);
    if (i !== skip && !exclude.has(endpoints[i])) return i;
  }
  let allowed = 0;
  for (let i = 0; i < n; i++) {
    if (i !== skip && !exclude.has(endpoints[i])) allowed++;
  }
  if (allowed === 0) return -1;
  let k = Math.floor(random() * allowed);
  for (let i = 0; i < n; i++) {
    if (i !== skip && !exclude.has(endpoints[i]) && k-- === 0) return i;
  }
  return -1;
}

/** A uniformly random endpoint, avoiding `exclude` unless it covers the whole set; undefined only for an empty set. */
export function randomPick(
  endpoints: readonly Endpoint[],
  exclude: ReadonlySet<Endpoint> | undefined,
  random: Random,
): Endpoint | undefined {
  if (endpoints.length === 0) return undefined;
  const i = randomIndex(endpoints, exclude, -1, random);
  // Every endpoint has been tried already: one more try on any of them beats failing the request here.
  return endpoints[i >= 0 ? i : Math.floor(random() * endpoints.length)];
}

export function createRandomPicker(endpoints: readonly Endpoint[], random: Random): Picker {
  // A private copy: the caller's array may be reused for the next endpoint set while this picker is still published.
  const eps = endpoints.slice();
  return { pick: (_hashKey, exclude) => randomPick(eps, exclude, random) };
}
