// How the gateway tells the outside world what went wrong downstream: mesh refusals keep their status and
// `x-mesh-error` code, gRPC statuses become HTTP statuses, and a missing answer becomes 503 or 504.
import { CATALOGUE, type ErrorCode } from '../../api/errors.js';
import { grpc } from './billing-client.js';
import { HttpError } from './http-json.js';
import { errorText, type Answer, type CallFailed } from './outbound-http.js';

const GRPC_TO_HTTP: Partial<Record<grpc.status, number>> = {
  [grpc.status.NOT_FOUND]: 404,
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.PERMISSION_DENIED]: 403,
  [grpc.status.RESOURCE_EXHAUSTED]: 429,
  [grpc.status.UNAVAILABLE]: 503,
  [grpc.status.DEADLINE_EXCEEDED]: 504,
};

/** The answer for a refusal the mesh made: its status, its code in `x-mesh-error` and in the body's `mesh_error`. */
export function meshRefusal(status: number, code: string, message: string): HttpError {
  return new HttpError(status, message, { 'x-mesh-error': code }, { mesh_error: code });
}

/** A users answer the gateway does not pass through as it is (mesh refusals, failures, surprises). */
export function fromUsersAnswer(answer: Answer, what: string): HttpError {
  const text = errorText(answer.body, `users answered ${answer.status}`);
  if (answer.meshError) return meshRefusal(answer.status, answer.meshError, `${what}: ${text}`);
  if (answer.status >= 500) return new HttpError(502, `${what}: users answered ${answer.status}: ${text}`);
  return new HttpError(502, `${what}: unexpected answer from users: ${answer.status}: ${text}`);
}

/** No answer at all: the deadline passed (504) or the sidecar could not be reached (503). */
export function fromCallFailed(err: CallFailed): HttpError {
  return new HttpError(err.timeout ? 504 : 503, err.message);
}

/**
 * A failed billing call. When the sidecar made the error it says so in `x-mesh-error` (in the trailers, or the
 * Trailers-Only headers, both of which grpc-js hands over as the error's metadata); then the mesh's own HTTP status
 * for that code is the most faithful answer, as for HTTP calls.
 */
export function fromGrpcError(err: grpc.ServiceError, what: string): HttpError {
  const code = err.metadata?.get('x-mesh-error')[0];
  const message = `${what}: ${err.details || grpc.status[err.code]}`;
  if (typeof code === 'string' && code !== '') {
    const known = CATALOGUE[code as ErrorCode];
    return meshRefusal(known?.status ?? GRPC_TO_HTTP[err.code] ?? 502, code, message);
  }
  return new HttpError(GRPC_TO_HTTP[err.code] ?? 502, message, {}, { grpc_status: grpc.status[err.code] });
}
