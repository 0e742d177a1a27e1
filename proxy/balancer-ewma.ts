// Peak-EWMA picker (as in Finagle and Linkerd): power of two choices over latency-weighted load, the default policy.
import type { Clock, Random } from '../api/clock.js';
import type { Endpoint, Picker } from './endpoint.js';
import { pickOfTwo, type Cost } from './balancer-least-request.js';

// Latency times load estimates how long a new request would wait here. The +1 counts the request being placed,
// so an idle but slow endpoint still costs its latency rather than zero.
const peakEwmaCost: Cost = (ep, now) => ep.rttAt(now) * (ep.inflight + 1);

class EwmaPicker implements Picker {
  private readonly endpoints: readonly Endpoint[];

  constructor(
    endpoints: readonly Endpoint[],
    private readonly clock: Clock,
    private readonly random: Random,
  ) {
    // A private copy: the caller's array may be reused for the next endpoint set while this picker is still published.
    this.endpoints = endpoints.slice();
  }

  pick(_hashKey: string | undefined, exclude: ReadonlySet<Endpoint> | undefined): Endpoint | undefined {
    return pickOfTwo(this.endpoints, exclude, this.random, peakEwmaCost, this.clock.now());
  }
}

export function createEwmaPicker(endpoints: readonly Endpoint[], clock: Clock, random: Random): Picker {
  return new EwmaPicker(endpoints, clock, random);
}
