// The shape of bench/results/latest.json, shared by the load generator, the runner and the report.

export type ScenarioName = 'direct' | 'trellis' | 'trellis-notrace' | 'nginx-pair' | 'http-proxy-pair';
export const SCENARIOS: readonly ScenarioName[] = ['direct', 'trellis', 'trellis-notrace', 'nginx-pair', 'http-proxy-pair'];

/** Milliseconds. */
export interface LatencySummary {
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly p9999: number;
  readonly max: number;
  readonly mean: number;
}

/** What bench/load-open.ts prints for one fixed-rate run. */
export interface OpenLoopRun {
  readonly rate: number;
  readonly seconds: number;
  readonly warmupSeconds: number;
  readonly connections: number;
  /** Requests sent and answered 2xx in the measured phase (warm-up excluded). */
  readonly sent: number;
  readonly completed: number;
  readonly errors: number;
  /** Still unanswered when the drain deadline passed; recorded in the histogram at that age. */
  readonly unfinished: number;
  readonly firstError?: string;
  readonly achievedRps: number;
  /** From the intended send time: coordinated omission corrected. The figure the report uses. */
  readonly latencyMs: LatencySummary;
  /** From the actual send time, for comparison only. */
  readonly serviceTimeMs: LatencySummary;
  /** How late the generator itself sent requests. */
  readonly scheduleLagMs: LatencySummary;
  /** [percentile, ms] points for the plot. */
  readonly percentiles: [number, number][];
  readonly generator: { readonly cpuSeconds: number; readonly cpuPer1k: number; readonly peakRssMb: number };
}

export interface SaturationRun {
  readonly tool: 'wrk';
  readonly connections: number;
  readonly threads: number;
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly socketErrors: number;
  readonly non2xx: number;
}

/** One proxy process of a scenario (a sidecar, an nginx worker, an http-proxy half). */
export interface ProcessFigures {
  readonly role: string;
  readonly pid: number;
  /** VmHWM at the end of the scenario. */
  readonly peakRssMb: number | null;
  /** CPU seconds per 1,000 requests, by phase: "saturation", "open-1000", … */
  readonly cpuPer1k: Record<string, number | null>;
}

export interface ScenarioResult {
  readonly name: ScenarioName;
  readonly description: string;
  readonly status: 'ok' | 'skipped' | 'failed';
  /** Why it was skipped or how it failed. */
  readonly reason?: string;
  readonly saturation?: SaturationRun | { readonly skipped: string };
  readonly openLoop: OpenLoopRun[];
  /** Scenario minus direct at the same rate and percentile, by rate; null without a direct run. */
  readonly addedMs: Record<string, LatencySummary | null>;
  readonly processes: ProcessFigures[];
  readonly seconds: number;
  /** Share of all cores that programs other than the bench used while this scenario ran: its noise. */
  readonly otherCpuShare?: number;
}

export interface TargetCheck {
  readonly target: string;
  readonly value: number | null;
  readonly threshold: string;
  readonly met: boolean | null;
  readonly note?: string;
}

export interface BenchSettings {
  readonly mode: 'quick' | 'full';
  readonly saturation: { readonly connections: number; readonly threads: number; readonly seconds: number; readonly warmupSeconds: number };
  readonly openLoop: {
    readonly rates: number[];
    readonly seconds: number;
    readonly warmupSeconds: number;
    readonly connections: number;
    /** When set (--requests), each rate's measured phase lasts requests / rate seconds instead of `seconds`. */
    readonly requests?: number;
  };
}

/** trellis against trellis-notrace in the same run: what tracing at the default sampling costs. */
export interface TracingCost {
  /** trellis saturation throughput / trellis-notrace's: below 1, tracing costs throughput. */
  readonly throughputRatio: number | null;
  /** The open-loop rate the latency and CPU figures are read at (headline rate). */
  readonly rate: number;
  /** p99 at `rate`, ms, coordinated omission corrected. */
  readonly p99Ms: { readonly trellis: number | null; readonly notrace: number | null };
  /** CPU seconds per 1,000 requests at `rate`, the larger of each pair's two sidecars. */
  readonly cpuPer1k: { readonly trellis: number | null; readonly notrace: number | null };
}

export interface BenchResults {
  readonly schema: 1;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationSeconds: number;
  readonly settings: BenchSettings;
  readonly machine: Record<string, string | number>;
  readonly scenarios: ScenarioResult[];
  readonly ratios: Record<string, number | null>;
  readonly targets: TargetCheck[];
  readonly tracingCost: TracingCost;
  readonly notMeasured: { readonly figure: string; readonly reason: string }[];
}
