// The one place that turns any error into a sidecar-generated response: status, `x-mesh-error`, short text body, or a gRPC status for gRPC callers.
import { toMeshError, type MeshError } from '../api/errors.js';
import { isH2Response, type Exchange } from './exchange.js';
import { encodeGrpcMessage } from './grpc.js';

/**
 * Answers the request with the error's catalogue status and code. If the response already started, the only
 * honest signal left is to abort the connection, so the client never mistakes a truncated body for a whole one.
 */
export function respondError(ex: Exchange, err: unknown): void {
  const e = toMeshError(err);
  const res = ex.res;
  if (ex.committed || res.headersSent) {
    if (ex.grpc && res.headersSent && !res.writableEnded && !ex.clientGone && !res.destroyed) {
      // A gRPC call that fails mid-stream still ends with a status the client cannot take for success.
      ex.grpcStatus = String(e.kind.grpcStatus);
      ex.meshError = e.code;
      res.addTrailers({ 'grpc-status': ex.grpcStatus, 'grpc-message': encodeGrpcMessage(e.message), 'x-mesh-error': e.code });
      res.end();
      return;
    }
    res.destroy(e);
    return;
  }
  if (res.destroyed || ex.clientGone) return;
  ex.committed = true;
  ex.meshError = e.code;
  if (ex.grpc) {
    respondGrpc(ex, e);
    return;
  }
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

/**
 * A gRPC caller gets a gRPC error, never an HTTP page: 200, the catalogue's gRPC status and the message, sent
 * Trailers-Only over HTTP/2 (one HEADERS frame ending the stream), so an outbound sidecar can tell it came before any
 * response message and retry it.
 */
function respondGrpc(ex: Exchange, e: MeshError): void {
  const status = String(e.kind.grpcStatus);
  ex.grpcStatus = status;
  const headers = {
    'content-type': 'application/grpc',
    'grpc-status': status,
    'grpc-message': encodeGrpcMessage(e.message),
    'x-mesh-error': e.code,
    'x-request-id': ex.requestId,
  };
  const res = ex.res;
  res.statusCode = 200;
  if (isH2Response(res)) {
    res.stream.respond({ ':status': 200, ...headers }, { endStream: true });
  } else {
    res.writeHead(200, headers);
    res.end();
  }
}
