// Sidecar-made responses: HTTP callers get status + x-mesh-error; gRPC callers get a gRPC status from the catalogue (Trailers-Only over HTTP/2).
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { CATALOGUE, MeshError, type ErrorCode } from '../api/errors.js';
import type { Exchange } from './exchange.js';
import { respondError } from './respond.js';

/** The few response members respondError touches, recording what it wrote. */
function fakeResponse() {
  const out = { status: 0, headers: {} as Record<string, unknown>, body: '', trailers: undefined as Record<string, string> | undefined, destroyed: false };
  const res = {
    headersSent: false, destroyed: false, writableEnded: false, statusCode: 200,
    writeHead(status: number, headers: Record<string, unknown>) { out.status = status; out.headers = headers; this.headersSent = true; },
    end(body?: string) { out.body = body ?? ''; this.writableEnded = true; },
    addTrailers(t: Record<string, string>) { out.trailers = t; },
    destroy() { out.destroyed = true; },
  };
  return { res, out };
}

function exchange(res: unknown, grpc: boolean): Exchange {
  return { res, grpc, committed: false, clientGone: false, requestId: 'rid', meshError: '', grpcStatus: '', bytesSent: 0 } as unknown as Exchange;
}

const GRPC_EXPECTED: Record<string, number> = {
  'no-route': 12, 'no-healthy-upstream': 14, 'upstream-connect-failed': 14, 'upstream-reset': 14, 'upstream-timeout': 4,
  'access-denied': 7, 'rate-limited': 8, 'circuit-open': 14, 'bad-request': 3, 'internal': 13,
};

describe('respondError', () => {
  it('HTTP callers: catalogue status, x-mesh-error, text body', () => {
    const { res, out } = fakeResponse();
    respondError(exchange(res, false), new MeshError('no-route', 'no route for host "x" path "/"'));
    expect(out.status).toBe(404);
    expect(out.headers['x-mesh-error']).toBe('no-route');
    expect(out.body).toBe('no route for host "x" path "/"\n');
  });

  it.each(Object.entries(GRPC_EXPECTED))('gRPC callers: %s → HTTP 200, grpc-status %d', (code, grpcStatus) => {
    expect(CATALOGUE[code as ErrorCode].grpcStatus).toBe(grpcStatus);
    const { res, out } = fakeResponse();
    const ex = exchange(res, true);
    respondError(ex, new MeshError(code as ErrorCode, `${code} 100%`));
    expect(out.status).toBe(200);
    expect(out.headers).toMatchObject({
      'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': `${code} 100%25`, 'x-mesh-error': code,
    });
    expect(ex.grpcStatus).toBe(String(grpcStatus));
  });

  it('gRPC mid-stream: the status goes in trailers instead of a reset', () => {
    const { res, out } = fakeResponse();
    res.headersSent = true;
    const ex = exchange(res, true);
    ex.committed = true;
    respondError(ex, new MeshError('upstream-timeout', 'deadline'));
    expect(out.trailers).toMatchObject({ 'grpc-status': '4', 'x-mesh-error': 'upstream-timeout' });
    expect(out.destroyed).toBe(false);
  });

  it('HTTP mid-response: the client is aborted', () => {
    const { res, out } = fakeResponse();
    res.headersSent = true;
    const ex = exchange(res, false);
    ex.committed = true;
    respondError(ex, new MeshError('upstream-reset', 'gone'));
    expect(out.destroyed).toBe(true);
  });

  it('over HTTP/2 the gRPC error is Trailers-Only: one HEADERS frame that ends the stream', async () => {
    const server = http2.createServer((_req, res) => respondError(exchange(res, true), new MeshError('no-healthy-upstream', 'no healthy endpoint')));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    const got = await new Promise<{ headers: http2.IncomingHttpHeaders; flags: number }>((resolve, reject) => {
      const s = client.request({ ':path': '/x', 'content-type': 'application/grpc' }, { endStream: true });
      s.on('response', (headers, flags) => resolve({ headers, flags }));
      s.on('error', reject);
    });
    client.close();
    server.close();
    expect(got.flags & http2.constants.NGHTTP2_FLAG_END_STREAM).toBeTruthy();
    expect(got.headers).toMatchObject({ ':status': 200, 'grpc-status': '14', 'grpc-message': 'no healthy endpoint', 'x-mesh-error': 'no-healthy-upstream' });
  });
});
