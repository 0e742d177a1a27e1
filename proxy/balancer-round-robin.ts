// Round-robin picker: rotates through the set; its position is the only mutable state any picker holds.
import type { Random } from '../api/clock.js';
import type { Endpoint, Picker } from './endpoint.js';

class RoundRobinPicker implements Picker {
  private readonly endpoints: readonly Endpoint[];
  /** Index of the endpoint the next pick starts from. */
  private next: number;

  constructor(endpoints: readonly Endpoint[], random: Random) {
    // A private copy: the caller's array may be reused for the next endpoint set while this picker is still published.
    this.endpoints = endpoints.slice();
    // Every sidecar rebuilds its picker on the same endpoint update; starting all of them at index 0
    // would send the first request of each to the same endpoint.
    this.next = Math.floor(random() * this.endpoints.length);
  }

  pick(_hashKey: string | undefined, exclude: ReadonlySet<Endpoint> | undefined): Endpoint | undefined {
    const n = this.endpoints.length;
    if (n === 0) return undefined;
    let i = this.next;
    if (exclude !== undefined && exclude.size > 0) {
      // After n steps i is back where it started: everything was excluded, so retry that one rather than fail.
      for (let step = 0; step < n && exclude.has(this.endpoints[i]); step++) i = i + 1 === n ? 0 : i + 1;
    }
    // Resume after the endpoint actually chosen, so skipping an excluded one doesn't hand the next request a repeat.
    this.next = i + 1 === n ? 0 : i + 1;
    return this.endpoints[i];
  }
}

export function createRoundRobinPicker(endpoints: readonly Endpoint[], random: Random): Picker {
  return new RoundRobinPicker(endpoints, random);
}
