// A full garbage collection at least every 2 minutes in a long-running mesh process, as Go's runtime forces one (forcegcperiod).
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { systemClock, type Clock, type Timer } from '../api/clock.js';

/**
 * Why: V8 runs its next full collection when the old generation has grown by at least 8 MB plus the young generation
 * over what the last one left. The control plane promotes about 0.5 MB a minute of superseded snapshots, certificates and
 * stream buffers, so its first full collection after start-up came only after 17 to 30 minutes, and its RSS climbed all
 * that time (the soak's RSS slope). Go's runtime, which istiod and most of the ecosystem run on, forces a collection when
 * none ran for 2 minutes; this does the same. Sidecars under load collect far more often than that, so for them it
 * rarely fires. A collection of the control plane's ~25 MB heap takes a few milliseconds.
 */
export const FORCED_GC_PERIOD_MS = 120_000;

/** When the next forced collection is due: `periodMs` after the last full collection (or start). Pure, for tests. */
export function nextForcedGcAt(lastFullAt: number, periodMs = FORCED_GC_PERIOD_MS): number {
  return lastFullAt + periodMs;
}

/** The `gc` function V8 installs with --expose-gc, obtained at run time (as jest-leak-detector does) so no node flag is needed. */
export function exposeGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  // Only the new context got `gc`; later contexts (vm, workers) do not, as if the flag had never been set.
  setFlagsFromString('--no-expose-gc');
  return gc;
}

export interface PeriodicGcOptions {
  periodMs?: number;
  clock?: Clock;
  /** Runs a full collection; default: V8's own (exposeGc). */
  collect?: () => void;
  /** Subscribes to full collections V8 runs by itself; returns the unsubscribe. Default: a PerformanceObserver on 'gc'. */
  onFullGc?: (fn: () => void) => () => void;
}

export interface PeriodicGc {
  /** Forced collections so far. */
  readonly forced: number;
  stop(): void;
}

/** Starts the timer; every full collection (V8's or ours) pushes the next forced one `periodMs` later. */
export function startPeriodicGc(opts: PeriodicGcOptions = {}): PeriodicGc {
  const clock = opts.clock ?? systemClock;
  const periodMs = opts.periodMs ?? FORCED_GC_PERIOD_MS;
  const collect = opts.collect ?? exposeGc();
  let lastFullAt = clock.now();
  let forced = 0;
  let timer: Timer | undefined;
  const arm = (): void => {
    timer?.cancel();
    timer = clock.setTimeout(fire, Math.max(0, nextForcedGcAt(lastFullAt, periodMs) - clock.now()));
  };
  const fire = (): void => {
    if (clock.now() < nextForcedGcAt(lastFullAt, periodMs)) return arm();
    forced++;
    collect();
    lastFullAt = clock.now();
    arm();
  };
  // V8's own full collections only move the deadline; re-arming on each would allocate a timer per collection.
  const unsubscribe = (opts.onFullGc ?? observeFullGc)(() => { lastFullAt = clock.now(); });
  arm();
  return {
    get forced() { return forced; },
    stop() {
      timer?.cancel();
      unsubscribe();
    },
  };
}

function observeFullGc(fn: () => void): () => void {
  const obs = new PerformanceObserver((list) => {
    if (list.getEntries().some(isMajor)) fn();
  });
  obs.observe({ entryTypes: ['gc'] });
  return () => obs.disconnect();
}

function isMajor(e: PerformanceEntry): boolean {
  return (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
}
