// Turns a subset's load-balancing policy into a picker; cluster.ts calls this whenever the subset's endpoint set changes.
import type { Clock, Random } from '../api/clock.js';
import type { LoadBalancerPolicy } from '../api/resources.js';
import type { Endpoint, Picker } from './endpoint.js';
import { createEwmaPicker } from './balancer-ewma.js';
import { createLeastRequestPicker } from './balancer-least-request.js';
import { createRandomPicker } from './balancer-random.js';
import { createRingHashPicker } from './balancer-ring-hash.js';
import { createRoundRobinPicker } from './balancer-round-robin.js';

export interface PickerDeps {
  clock: Clock;
  random: Random;
}

/**
 * A picker over `endpoints`, which the caller has already narrowed to the healthy, non-ejected members of one subset.
 * The picker keeps its own copy, so the caller may reuse the array.
 */
export function createPicker(policy: LoadBalancerPolicy, endpoints: readonly Endpoint[], deps: PickerDeps): Picker {
  switch (policy) {
    case 'ewma':
      return createEwmaPicker(endpoints, deps.clock, deps.random);
    case 'least-request':
      return createLeastRequestPicker(endpoints, deps.random);
    case 'round-robin':
      return createRoundRobinPicker(endpoints, deps.random);
    case 'random':
      return createRandomPicker(endpoints, deps.random);
    case 'ring-hash':
      return createRingHashPicker(endpoints, deps.random);
    default: {
      // Validation rejects unknown policies, so reaching here means the validator and this switch disagree.
      const unknown: never = policy;
      throw new Error(`unknown load balancer policy "${String(unknown)}"`);
    }
  }
}
