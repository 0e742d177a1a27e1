// The compiled, frozen per-snapshot route types the hot path reads; built by route.ts, carried on the exchange.
import type { RetryPolicy } from './retry-policy.js';
import type { RouteStats } from './telemetry.js';

export type HeaderTest = (value: string | undefined) => boolean;

export interface CompiledMatch {
  readonly path?: string;
  readonly pathPrefix?: string;
  readonly pathRegex?: RegExp;
  readonly method?: string;
  readonly headers: readonly (readonly [string, HeaderTest])[];
}

export interface CompiledBackend {
  readonly service: string;
  /** '' for the whole service. */
  readonly subset: string;
  /** Upper bound of this backend's slice of [0, totalWeight). */
  readonly cumulative: number;
  readonly stats: RouteStats;
}

export interface CompiledRule {
  /** The `route` metric label: Route name, or "default" for the implicit per-service route. */
  readonly routeName: string;
  readonly matches: readonly CompiledMatch[];
  readonly backends: readonly CompiledBackend[];
  readonly totalWeight: number;
  readonly timeoutMs: number;
  readonly retry: RetryPolicy;
  readonly fault?: {
    readonly delayFraction: number;
    readonly delayMs: number;
    readonly abortFraction: number;
    readonly abortStatus: number;
  };
  readonly mirror?: { readonly service: string; readonly fraction: number };
  readonly rewrite?: { readonly pathPrefix?: string; readonly host?: string };
}

export interface RouteTable {
  readonly byHost: ReadonlyMap<string, readonly CompiledRule[]>;
}
