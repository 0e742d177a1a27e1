// gRPC over HTTP/2, the parts the sidecar must understand (pure): recognising a call, grpc-timeout, statuses, trailers-only.
import type { IncomingHttpHeaders } from 'node:http';

/** The gRPC status codes the mesh names (retry conditions, catalogue); the rest pass through as numbers. */
export const GRPC_STATUS = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
});

/** application/grpc, application/grpc+proto, application/grpc+json… (not grpc-web, which is HTTP/1-framed). */
export function isGrpcContentType(contentType: string | string[] | undefined): boolean {
  const v = Array.isArray(contentType) ? contentType[0] : contentType;
  if (v === undefined || v.length < 16) return false;
  const lower = v.toLowerCase();
  return lower.startsWith('application/grpc') && (lower.length === 16 || lower[16] === '+' || lower[16] === ';');
}

const UNIT_MS: Readonly<Record<string, number>> = Object.freeze({ H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 });

/**
 * `grpc-timeout` (gRPC over HTTP/2: 1 to 8 digits and one of H M S m u n) in milliseconds; undefined when absent or
 * malformed. A malformed value is ignored rather than refused, as grpc-go does: the call still has the route timeout.
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(v);
  if (!m) return undefined;
  return Number(m[1]) * UNIT_MS[m[2]];
}

/**
 * Milliseconds as a `grpc-timeout` value: the finest unit whose value fits in 8 digits, rounded down so the next hop
 * never gets more time than is left. At least 1n: a call with no time left is answered here, not forwarded.
 */
export function formatGrpcTimeout(ms: number): string {
  const left = Math.max(0, ms);
  for (const [unit, perMs] of [['n', 1_000_000], ['u', 1_000], ['m', 1], ['S', 0.001], ['M', 1 / 60_000], ['H', 1 / 3_600_000]] as const) {
    const value = Math.floor(left * perMs);
    if (value < 100_000_000) return `${Math.max(1, value)}${unit}`;
  }
  return '99999999H';
}

/** The numeric grpc-status of a header block, or undefined when it has none (or a non-number). */
export function grpcStatusOf(headers: IncomingHttpHeaders | Record<string, unknown>): number | undefined {
  const raw = headers['grpc-status'];
  const v = Array.isArray(raw) ? raw[0] : raw;
  if (typeof v !== 'string' && typeof v !== 'number') return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
}

/** The grpc_status metric label: codes.proto's 0..16 as themselves, anything else an app invents as "other" (bounded). */
export function grpcStatusLabel(code: number): string {
  return code <= 16 ? String(code) : 'other';
}

/**
 * grpc-message is percent-encoded (gRPC over HTTP/2 §Responses): printable ASCII except `%` passes, everything else is
 * %XX of its UTF-8 bytes, so a sidecar error text survives any header encoding.
 */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}
