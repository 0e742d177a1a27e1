// `mesh stat [SERVICE]`: golden metrics per service and route (requests/s, success rate, p50/p95/p99) from the Stat RPC,
// which the control plane computes from the sidecars' stats reports over --window.
import { parseArgs } from 'node:util';
import type { LatencyMs, RouteStat, ServiceStat, StatResponse } from '../api/protocol.js';
import { parseDurationFlag, UsageError } from './args.js';
import { COMMON_FLAGS_HELP, CONNECT_OPTIONS, formatTable, outputFormat, runCommand, withConnection, type CommandOutput } from './cp-connect.js';

export const STAT_USAGE = `mesh stat [SERVICE] [-o table|json] [--window 1m] [--control-plane HOST:PORT] [--dir .mesh]
  one row per service (ROUTE "(all)": measured at its own sidecars' inbound side, or at its callers' when it has no
  reporting sidecar), then one row per route its callers used:
  SERVICE ROUTE RPS SUCCESS P50 P95 P99   (requests/s, non-5xx share, latency percentiles over the window)
  --window  how far back to look, 1s..5m (default 1m); sidecars report every --stats-interval (10s by default),
            so the window should span at least two reports
  ${COMMON_FLAGS_HELP}`;

/** The stats window the control plane keeps. */
const MAX_WINDOW_MS = 5 * 60_000;

const round = (v: number, digits: number): number | null => (Number.isFinite(v) ? Number(v.toFixed(digits)) : null);

/** "1m", "10s", "1m30s": the window as a user would write it. */
export function formatWindow(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  return s % 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s / 60}m`;
}

function latencyJson(l: LatencyMs | undefined): { p50: number | null; p95: number | null; p99: number | null } {
  return { p50: round(l?.p50 ?? NaN, 3), p95: round(l?.p95 ?? NaN, 3), p99: round(l?.p99 ?? NaN, 3) };
}

function figuresJson(x: Omit<RouteStat, 'route'>): Record<string, unknown> {
  const requests = Math.round(x.requests);
  return {
    requestsPerSecond: round(x.requestsPerSecond, 3) ?? 0,
    successRate: requests > 0 ? round(x.successRate, 4) : null,
    latencyMs: latencyJson(x.latencyMs),
    requests,
  };
}

/** The `-o json` document; field names are stable (README "Golden metrics"). Unknown figures are null. */
export function statJson(r: StatResponse, address: string): Record<string, unknown> {
  return {
    controlPlane: r.controlPlane || address,
    window: formatWindow(r.windowSeconds),
    windowSeconds: r.windowSeconds,
    sidecars: r.sidecars,
    services: (r.services ?? []).map((s) => ({
      service: s.service,
      ...figuresJson(s),
      source: s.source,
      routes: (s.routes ?? []).map((x) => ({ route: x.route, ...figuresJson(x) })),
    })),
    replicas: r.replicas,
  };
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms >= 10_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms >= 100) return `${Math.round(ms)}ms`;
  return `${ms.toFixed(ms < 10 ? 2 : 1)}ms`;
}

function row(service: string, route: string, x: Omit<RouteStat, 'route'>): string[] {
  const requests = Math.round(x.requests);
  const rps = x.requestsPerSecond;
  return [
    service, route, rps.toFixed(rps > 0 && rps < 10 ? 2 : 1), requests > 0 ? `${(x.successRate * 100).toFixed(2)}%` : '-',
    formatMs(x.latencyMs?.p50), formatMs(x.latencyMs?.p95), formatMs(x.latencyMs?.p99),
  ];
}

export function statTable(r: StatResponse, address: string): string[] {
  const sidecars = `${r.sidecars} ${r.sidecars === 1 ? 'sidecar' : 'sidecars'} reporting`;
  const lines = [`control plane ${r.controlPlane || address}: window ${formatWindow(r.windowSeconds)}, ${sidecars}`];
  const services: ServiceStat[] = r.services ?? [];
  if (services.length === 0) {
    lines.push(`no requests in the last ${formatWindow(r.windowSeconds)} (the window must span two stats reports; sidecars send one every --stats-interval, 10s by default)`);
    return lines;
  }
  const rows = services.flatMap((s) => [row(s.service, '(all)', s), ...(s.routes ?? []).map((x) => row(s.service, x.route, x))]);
  lines.push('', ...formatTable(['SERVICE', 'ROUTE', 'RPS', 'SUCCESS', 'P50', 'P95', 'P99'], rows));
  return lines;
}

export function statCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values, positionals } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { ...CONNECT_OPTIONS, output: { type: 'string', short: 'o' }, window: { type: 'string', default: '1m' } },
    });
    const format = outputFormat(values.output, ['table', 'json'] as const);
    if (positionals.length > 1) throw new UsageError(`expected at most one SERVICE, got ${positionals.map((p) => `"${p}"`).join(' ')}`);
    const windowMs = parseDurationFlag('window', values.window);
    if (windowMs < 1_000 || windowMs > MAX_WINDOW_MS) throw new UsageError(`--window: expected 1s..5m, got "${values.window}"`);
    return withConnection(values, env, async (cp) => {
      const r = await cp.call<StatResponse>('Stat', { service: positionals[0] ?? '', windowSeconds: windowMs / 1000, localOnly: false });
      for (const x of (r.replicas ?? []).slice(1)) {
        if (x.error) out.stderr(`mesh: replica ${x.name} at ${x.address} did not answer (${x.error}): its sidecars are missing from these figures`);
      }
      if (format === 'json') out.stdout(JSON.stringify(statJson(r, cp.address), null, 2));
      else for (const line of statTable(r, cp.address)) out.stdout(line);
      return 0;
    });
  });
}
