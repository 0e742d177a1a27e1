// The control plane's plain HTTP API on --http: /live, /ready (store health), /status (the whole mesh, JSON) and /metrics
// (Prometheus text from control-plane/telemetry.ts).
import http from 'node:http';
import type { StatusResponse } from '../api/protocol.js';
import type { MeshState } from './state.js';
import type { ControlPlaneTelemetry } from './telemetry.js';

export interface HttpApiDeps {
  readonly state: MeshState;
  readonly status: () => Promise<StatusResponse>;
  readonly telemetry: ControlPlaneTelemetry;
}

function fail(res: http.ServerResponse, err: unknown): void {
  res.statusCode = 500;
  res.end(`${(err as Error).message}\n`);
}

export function createHttpApi(d: HttpApiDeps): http.Server {
  return http.createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const { state } = d;
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/live') return void res.end('live\n');
    if (path === '/ready') {
      const ok = state.healthy;
      res.statusCode = ok ? 200 : 503;
      return void res.end(ok ? 'ready\n' : `store unavailable; serving revision ${state.revision}\n`);
    }
    if (path === '/status') {
      res.setHeader('content-type', 'application/json');
      return void d.status().then((r) => res.end(JSON.stringify({ revision: state.revision, ...r }, null, 2)), (err: unknown) => fail(res, err));
    }
    if (path === '/metrics') {
      const { registry } = d.telemetry;
      return void registry.metrics().then((text) => {
        res.setHeader('content-type', registry.contentType);
        res.setHeader('cache-control', 'no-store');
        res.end(text);
      }, (err: unknown) => fail(res, err));
    }
    res.statusCode = 404;
    res.end('try /ready /live /status /metrics\n');
  });
}
