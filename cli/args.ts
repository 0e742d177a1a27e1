// Parsing of the command-line values shared by several commands: addresses, label lists, durations.
import { parseDuration } from '../api/schema.js';

export class UsageError extends Error {}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** `HOST:PORT` or `[V6]:PORT`; port 0 asks the OS for a free port. */
export function parseHostPort(flag: string, value: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--${flag}: expected HOST:PORT, got "${value}"`);
  return { host: m[1] ?? m[2], port };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `k=v,k2=v2` → record; keys and values must be non-empty. */
export function parseLabels(value: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!value) return out;
  for (const pair of value.split(',')) {
    const eq = pair.indexOf('=');
    if (eq <= 0 || eq === pair.length - 1) throw new UsageError(`--labels: expected k=v[,k=v…], got "${pair}"`);
    out[pair.slice(0, eq).trim()] = pair.slice(eq + 1).trim();
  }
  return out;
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };

/** A byte size: `1048576`, `512Ki`, `16Mi`, `1Gi` (binary units, as Kubernetes quantities spell them). */
export function parseSizeFlag(flag: string, value: string): number {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(value.trim());
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2] ?? ''] : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw new UsageError(`--${flag}: expected a size like 1048576, 512Ki, 16Mi or 1Gi, got "${value}"`);
  return bytes;
}

export function parseDurationFlag(flag: string, value: string): number {
  const ms = parseDuration(value);
  if (ms === undefined) throw new UsageError(`--${flag}: expected a duration like 250ms, 2s, 1m, got "${value}"`);
  return ms;
}
