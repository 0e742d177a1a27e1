// Fault injection (route rule `fault`): delay and abort a percentage of requests, before any upstream work.
import { MeshError } from '../api/errors.js';
import type { Clock, Random } from '../api/clock.js';
import type { Exchange } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';

export function faultLayer(clock: Clock, random: Random): Layer {
  return (next: Handler): Handler => async (ex: Exchange) => {
    const fault = ex.rule?.fault;
    if (!fault) return next(ex);
    if (fault.delayFraction > 0 && random() < fault.delayFraction) {
      await new Promise<void>((resolve) => clock.setTimeout(resolve, fault.delayMs));
      if (ex.res.destroyed) return;
    }
    if (fault.abortFraction > 0 && random() < fault.abortFraction) {
      respondError(ex, new MeshError('fault-injected', `fault injected by route "${ex.rule?.routeName}"`, { status: fault.abortStatus }));
      return;
    }
    return next(ex);
  };
}
