// The error catalogue: every error the mesh turns into a response, with a stable code, HTTP status and gRPC status.

export type ErrorCode =
  | 'no-route'
  | 'no-healthy-upstream'
  | 'upstream-connect-failed'
  | 'upstream-reset'
  | 'upstream-timeout'
  | 'access-denied'
  | 'rate-limited'
  | 'circuit-open'
  | 'bad-request'
  | 'payload-too-large'
  | 'headers-too-large'
  | 'method-not-allowed'
  | 'version-not-supported'
  | 'fault-injected'
  | 'draining'
  | 'overloaded'
  | 'internal';

export interface ErrorKind {
  readonly code: ErrorCode;
  readonly status: number;
  /** gRPC status code used when the caller speaks gRPC. */
  readonly grpcStatus: number;
  /** Whether a retry on another endpoint could succeed. */
  readonly retryable: boolean;
}

const kind = (code: ErrorCode, status: number, grpcStatus: number, retryable: boolean): ErrorKind =>
  Object.freeze({ code, status, grpcStatus, retryable });

export const CATALOGUE: Readonly<Record<ErrorCode, ErrorKind>> = Object.freeze({
  'no-route': kind('no-route', 404, 12, false),
  'no-healthy-upstream': kind('no-healthy-upstream', 503, 14, false),
  'upstream-connect-failed': kind('upstream-connect-failed', 503, 14, true),
  'upstream-reset': kind('upstream-reset', 502, 14, true),
  'upstream-timeout': kind('upstream-timeout', 504, 4, true),
  'access-denied': kind('access-denied', 403, 7, false),
  'rate-limited': kind('rate-limited', 429, 8, false),
  'circuit-open': kind('circuit-open', 503, 14, false),
  'bad-request': kind('bad-request', 400, 3, false),
  'payload-too-large': kind('payload-too-large', 413, 8, false),
  'headers-too-large': kind('headers-too-large', 431, 8, false),
  'method-not-allowed': kind('method-not-allowed', 405, 12, false),
  'version-not-supported': kind('version-not-supported', 505, 12, false),
  'fault-injected': kind('fault-injected', 503, 14, false),
  'draining': kind('draining', 503, 14, true),
  'overloaded': kind('overloaded', 503, 14, true),
  'internal': kind('internal', 500, 13, false),
});

/** An error with a catalogue code. `status` may be overridden (fault injection aborts with a configured status). */
export class MeshError extends Error {
  readonly kind: ErrorKind;
  readonly status: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MeshError';
    this.kind = CATALOGUE[code];
    this.status = options?.status ?? this.kind.status;
  }
  get code(): ErrorCode {
    return this.kind.code;
  }
}

/** Any thrown value as a MeshError; unknown failures become `internal` so nothing escapes uncatalogued. */
export function toMeshError(err: unknown): MeshError {
  if (err instanceof MeshError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new MeshError('internal', `internal error: ${message}`, { cause: err });
}
