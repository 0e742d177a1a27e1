// The one place that turns any error into a sidecar-generated response: status, `x-mesh-error`, short text body.
import { toMeshError } from '../api/errors.js';
import type { Exchange } from './exchange.js';

/**
 * Answers the request with the error's catalogue status and code. If the response already started, the only
 * honest signal left is to abort the connection, so the client never mistakes a truncated body for a whole one.
 */
export function respondError(ex: Exchange, err: unknown): void {
  const e = toMeshError(err);
  const res = ex.res;
  if (ex.committed || res.headersSent) {
    res.destroy(e);
    return;
  }
  if (res.destroyed || ex.clientGone) return;
  ex.committed = true;
  ex.meshError = e.code;
  const body = `${e.message}\n`;
  res.writeHead(e.status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-mesh-error': e.code,
    'x-request-id': ex.requestId,
  });
  res.end(body);
  ex.bytesSent = Buffer.byteLength(body);
}
