// The admin server (loopback only): readiness, liveness, Prometheus metrics, config dump, cluster state, recent spans, drain.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Telemetry } from './telemetry.js';

export interface AdminDeps {
  readonly telemetry: Telemetry;
  /** Ready once config (and, with mTLS, a certificate) is loaded, and until draining starts. */
  readonly ready: () => boolean;
  readonly configDump: () => object;
  readonly clusters: () => object;
  /** The workload certificate in force: SPIFFE id, serial, validity, rotations. */
  readonly certs: () => object;
  /** The most recent sampled spans (optionally one trace's), from the bounded ring. */
  readonly traces: (traceId: string | undefined) => object;
  /** Starts a drain; resolves when in-flight requests are done. */
  readonly drain: () => Promise<void>;
}

function send(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  res.end(body);
}

function json(res: ServerResponse, value: unknown): void {
  send(res, 200, JSON.stringify(value, null, 2) + '\n', 'application/json');
}

export function createAdminServer(deps: AdminDeps): http.Server {
  return http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req: IncomingMessage, res: ServerResponse) => {
    const [path, query = ''] = (req.url ?? '/').split('?', 2);
    const method = req.method ?? 'GET';
    const read = method === 'GET' || method === 'HEAD';
    if (path === '/drain') {
      if (method !== 'POST') return send(res, 405, 'use POST /drain\n');
      // Answer at once: the caller polls /ready (503 while draining) rather than holding this request open.
      void deps.drain();
      return send(res, 202, 'draining\n');
    }
    if (!read) return send(res, 405, `method ${method} not allowed on ${path}\n`);
    switch (path) {
      case '/ready':
        return deps.ready() ? send(res, 200, 'ready\n') : send(res, 503, 'not ready\n');
      case '/live':
        return send(res, 200, 'live\n');
      case '/metrics':
        deps.telemetry.registry.metrics().then(
          (text) => send(res, 200, text, deps.telemetry.registry.contentType),
          (err: Error) => send(res, 500, `metrics failed: ${err.message}\n`),
        );
        return;
      case '/config_dump':
        return json(res, deps.configDump());
      case '/clusters':
        return json(res, deps.clusters());
      case '/certs':
        return json(res, deps.certs());
      case '/debug/traces':
        return json(res, deps.traces(new URLSearchParams(query).get('trace_id') ?? undefined));
      default:
        return send(res, 404, 'not found: try /ready /live /metrics /config_dump /clusters /certs /debug/traces[?trace_id=], POST /drain\n');
    }
  });
}
