// Consistent-hash (ketama-style) picker: requests with the same hash key keep landing on the same endpoint as the set changes.
import type { Random } from '../api/clock.js';
import type { Endpoint, Picker } from './endpoint.js';
import { randomPick } from './balancer-random.js';

/**
 * Virtual nodes per endpoint. Each endpoint's share of the ring varies by about 1/sqrt(vnodes),
 * so 100 keeps shares within a few points of even while a 1,000-endpoint ring still fits in 800 KB.
 */
export const RING_VNODES_PER_ENDPOINT = 100;

/**
 * 32-bit FNV-1a over UTF-16 code units, finished with murmur3's fmix32. Only self-consistency matters,
 * since every sidecar runs this same function, so code units need no UTF-8 encoding (and no allocation).
 */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // FNV-1a alone leaves strings that differ only at the end ("a#17", "a#18") close together,
  // which clumps one endpoint's vnodes on the ring; the finalizer spreads them.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

interface VirtualNode {
  hash: number;
  id: string;
  owner: number;
}

function byPosition(x: VirtualNode, y: VirtualNode): number {
  if (x.hash !== y.hash) return x.hash - y.hash;
  // Colliding vnodes are ordered by endpoint id, not array position, so every sidecar builds
  // the same ring from the same set whatever order it arrived in.
  return x.id < y.id ? -1 : x.id > y.id ? 1 : 0;
}

class RingHashPicker implements Picker {
  private readonly endpoints: readonly Endpoint[];
  /** Vnode positions, ascending; the vnode at hashes[i] belongs to endpoints[owners[i]]. */
  private readonly hashes: Uint32Array;
  private readonly owners: Uint32Array;

  constructor(
    endpoints: readonly Endpoint[],
    private readonly random: Random,
  ) {
    // A private copy: the caller's array may be reused for the next endpoint set while this picker is still published.
    this.endpoints = endpoints.slice();
    const vnodes: VirtualNode[] = [];
    this.endpoints.forEach((ep, owner) => {
      // Positions depend only on the endpoint's own id, so adding or removing another endpoint never moves them:
      // only keys whose nearest vnode appears or disappears change owner.
      for (let i = 0; i < RING_VNODES_PER_ENDPOINT; i++) vnodes.push({ hash: hash32(`${ep.id}#${i}`), id: ep.id, owner });
    });
    vnodes.sort(byPosition);
    this.hashes = Uint32Array.from(vnodes, (v) => v.hash);
    this.owners = Uint32Array.from(vnodes, (v) => v.owner);
  }

  pick(hashKey: string | undefined, exclude: ReadonlySet<Endpoint> | undefined): Endpoint | undefined {
    if (this.endpoints.length === 0) return undefined;
    // Without the hash header there is no affinity to keep, so spread the request like the random policy.
    if (hashKey === undefined) return randomPick(this.endpoints, exclude, this.random);
    const start = this.firstAtOrAfter(hash32(hashKey));
    if (exclude === undefined || exclude.size === 0) return this.endpoints[this.owners[start]];
    // Walking clockwise sends a retry of a key to the endpoint that would own it if its first choice were gone,
    // the same one every other sidecar would choose.
    const len = this.hashes.length;
    for (let step = 0, i = start; step < len; step++, i = i + 1 === len ? 0 : i + 1) {
      const ep = this.endpoints[this.owners[i]];
      if (!exclude.has(ep)) return ep;
    }
    // Every endpoint has been tried already: retry the key's own endpoint rather than fail the request here.
    return this.endpoints[this.owners[start]];
  }

  /** Index of the first vnode at or clockwise after `hash`, wrapping past the top of the ring to 0. */
  private firstAtOrAfter(hash: number): number {
    let lo = 0;
    let hi = this.hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.hashes[mid] < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.hashes.length ? 0 : lo;
  }
}

export function createRingHashPicker(endpoints: readonly Endpoint[], random: Random): Picker {
  return new RingHashPicker(endpoints, random);
}
