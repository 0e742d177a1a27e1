// End-to-end: trace context through two sidecars (W3C, B3 multi, B3 single), spans in /debug/traces with parent/child links, OTLP export to a receiver, the access log, and --tracing off.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from './harness/client.js';
import { meshService } from './harness/mtls.js';
import { meshConfig, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor } from './harness/wait.js';

interface SpanRecord { traceId: string; spanId: string; parentSpanId: string; name: string; kind: string; status: string; attributes: Record<string, unknown> }

/** OTLP/HTTP JSON as the exporter posts it (only the fields the test reads). */
interface OtlpPayload {
  resourceSpans: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeSpans: { spans: { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number }[] }[];
  }[];
}

let app: Upstream;
let billing: Sidecar;
let gateway: Sidecar;
let untraced: Sidecar;
let receiver: http.Server;
const otlp: { contentType: string; payload: OtlpPayload }[] = [];

beforeAll(async () => {
  receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces') otlp.push({ contentType: String(req.headers['content-type']), payload: JSON.parse(Buffer.concat(chunks).toString('utf8')) as OtlpPayload });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
  const otlpEndpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  // Sampling 0 at the root: only a caller's sampled flag makes spans, so each test decides what is recorded.
  const mesh = meshConfig({ tracing: { sampling: 0, otlpEndpoint }, accessLog: true });
  app = await startUpstream({ name: 'billing-app' });
  billing = await startSidecar({ service: 'billing', app: app.address, resources: toYaml([mesh, ...meshService({ name: 'billing' })]) });
  const callers = toYaml([mesh, ...meshService({ name: 'gateway' }), ...meshService({ name: 'billing', endpoints: [billing.inbound] })]);
  gateway = await startSidecar({ service: 'gateway', resources: callers });
  untraced = await startSidecar({ service: 'gateway', resources: callers, extraArgs: ['--tracing', 'off'] });
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
  await new Promise((r) => receiver?.close(r));
});

/** Polls `get` until it yields a value (waitFor with the value kept). */
async function eventually<T>(get: () => T | undefined | Promise<T | undefined>, what: string): Promise<T> {
  let v: T | undefined;
  await waitFor(async () => (v = await get()) !== undefined, { timeoutMs: 5_000, what });
  return v!;
}

const hex = (n: number) => Array.from({ length: n }, () => Math.floor(Math.random() * 16).toString(16)).join('');
const newTraceId = () => `4bf92f35${hex(24)}`;
const CALLER_SPAN = '00f067aa0ba902b7';

async function spansOf(sc: Sidecar, traceId: string): Promise<SpanRecord[]> {
  const r = await sc.adminGet(`/debug/traces?trace_id=${traceId}`);
  expect(r.status).toBe(200);
  return (JSON.parse(r.body) as { spans: SpanRecord[] }).spans;
}

/** Sends through the gateway sidecar to billing and returns the headers the app received. */
async function traced(via: Sidecar, headers: Record<string, string>, path = '/invoices/7'): Promise<Record<string, string | string[] | undefined>> {
  app.clearRequests();
  const r = await request(via.outbound, { host: 'billing', path, headers });
  expect(r.status, r.body).toBe(200);
  expect(app.requests).toHaveLength(1);
  return app.requests[0].headers;
}

/** Both hops' spans for `traceId`, once each sidecar has recorded its one span. */
async function hopSpans(traceId: string): Promise<{ client: SpanRecord; server: SpanRecord }> {
  let client: SpanRecord[] = [];
  let server: SpanRecord[] = [];
  await waitFor(async () => {
    client = await spansOf(gateway, traceId);
    server = await spansOf(billing, traceId);
    return client.length === 1 && server.length === 1;
  }, { timeoutMs: 5_000, what: `one span per sidecar for trace ${traceId}` });
  return { client: client[0], server: server[0] };
}

describe('trace propagation through gateway → billing', () => {
  it('W3C: the app sees the same trace id with a new parent at each hop; the spans link caller → client span → server span', async () => {
    const traceId = newTraceId();
    const got = await traced(gateway, { traceparent: `00-${traceId}-${CALLER_SPAN}-01`, tracestate: 'vendor=abc' });
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(got.traceparent));
    expect(m, String(got.traceparent)).not.toBeNull();
    expect(m![1]).toBe(traceId);
    expect(got.tracestate).toBe('vendor=abc');
    expect(got['x-b3-traceid']).toBeUndefined();
    const { client, server } = await hopSpans(traceId);
    expect(client).toMatchObject({ kind: 'client', parentSpanId: CALLER_SPAN, name: 'GET billing' });
    expect(server).toMatchObject({ kind: 'server', parentSpanId: client.spanId });
    expect(m![2]).toBe(server.spanId);
    expect(new Set([CALLER_SPAN, client.spanId, server.spanId]).size).toBe(3);
    expect(client.attributes).toMatchObject({
      'http.request.method': 'GET', 'url.path': '/invoices/7', 'http.response.status_code': 200, 'mesh.route': 'default',
      'mesh.destination_service': 'billing', 'mesh.retry_count': 0, 'mesh.upstream': billing.inbound,
    });
    expect(server.attributes).toMatchObject({ 'mesh.direction': 'inbound', 'mesh.source_service': 'gateway', 'http.response.status_code': 200 });
  }, 20_000);

  it('B3 multi-header in, B3 multi-header out (no traceparent added), linked the same way', async () => {
    const traceId = newTraceId();
    const got = await traced(gateway, { 'x-b3-traceid': traceId, 'x-b3-spanid': CALLER_SPAN, 'x-b3-sampled': '1' });
    expect(got.traceparent).toBeUndefined();
    expect(got['x-b3-traceid']).toBe(traceId);
    expect(got['x-b3-sampled']).toBe('1');
    const { client, server } = await hopSpans(traceId);
    expect(client.parentSpanId).toBe(CALLER_SPAN);
    expect(server.parentSpanId).toBe(client.spanId);
    expect(got['x-b3-spanid']).toBe(server.spanId);
  }, 20_000);

  it('B3 single header in, B3 single header out', async () => {
    const traceId = newTraceId();
    const got = await traced(gateway, { b3: `${traceId}-${CALLER_SPAN}-1` });
    expect(got.traceparent).toBeUndefined();
    expect(got['x-b3-traceid']).toBeUndefined();
    const { server } = await hopSpans(traceId);
    expect(got.b3).toBe(`${traceId}-${server.spanId}-1`);
  }, 20_000);

  it('an unsampled caller: ids still propagate (new parent per hop), nothing is recorded', async () => {
    const traceId = newTraceId();
    const got = await traced(gateway, { traceparent: `00-${traceId}-${CALLER_SPAN}-00` });
    expect(String(got.traceparent)).toMatch(new RegExp(`^00-${traceId}-(?!${CALLER_SPAN})[0-9a-f]{16}-00$`));
    expect(await spansOf(gateway, traceId)).toEqual([]);
    expect(await spansOf(billing, traceId)).toEqual([]);
  }, 20_000);

  it('no trace context and sampling 0: a new W3C trace starts at the first sidecar, unsampled', async () => {
    const got = await traced(gateway, {});
    expect(String(got.traceparent)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  }, 20_000);

  it('--tracing off: the caller\'s headers pass the first sidecar untouched; the next sidecar still makes its hop', async () => {
    const traceId = newTraceId();
    const got = await traced(untraced, { traceparent: `00-${traceId}-${CALLER_SPAN}-01` });
    const server = await eventually(async () => (await spansOf(billing, traceId))[0], 'the billing span');
    expect(server.parentSpanId).toBe(CALLER_SPAN);
    expect(got.traceparent).toBe(`00-${traceId}-${server.spanId}-01`);
    expect(JSON.parse((await untraced.adminGet('/debug/traces')).body)).toMatchObject({ tracing: 'off', spans: [] });
  }, 20_000);
});

describe('OTLP/HTTP export', () => {
  it('delivers both hops to the receiver, with the service names as resources and the parent links intact', async () => {
    const traceId = newTraceId();
    await traced(gateway, { traceparent: `00-${traceId}-${CALLER_SPAN}-01` });
    const { client, server } = await hopSpans(traceId);
    type Exported = { service: string; traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number };
    const exported = (): Exported[] => otlp.flatMap(({ payload }) => payload.resourceSpans.flatMap((rs) => {
      const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
      return rs.scopeSpans.flatMap((ss) => ss.spans.map((s) => ({ service, ...s })));
    })).filter((s) => s.traceId === traceId);
    await waitFor(() => exported().length === 2, { timeoutMs: 15_000, what: 'both spans of the trace exported over OTLP' });
    expect(otlp.every((o) => o.contentType.startsWith('application/json'))).toBe(true);
    const byService = Object.fromEntries(exported().map((s) => [s.service, s]));
    // OTLP span kinds: 2 = server, 3 = client.
    expect(byService.gateway).toMatchObject({ spanId: client.spanId, parentSpanId: CALLER_SPAN, kind: 3 });
    expect(byService.billing).toMatchObject({ spanId: server.spanId, parentSpanId: client.spanId, kind: 2 });
  }, 30_000);
});

describe('access log (MeshConfig accessLog: true)', () => {
  interface Line { trace_id: string; request_id: string; direction: string; method: string; authority: string; path: string; status: number; mesh_error: string; upstream: string; attempts: number; duration_ms: number; bytes_sent: number; route: string }
  const lines = (sc: Sidecar): Line[] => sc.stdout().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Line);

  it('one JSON line per request on each side, joined by trace id; a failure says why', async () => {
    const traceId = newTraceId();
    await traced(gateway, { traceparent: `00-${traceId}-${CALLER_SPAN}-01`, 'x-request-id': `log-${traceId}` }, '/invoices/../invoices/9?secret=1');
    const out = await eventually(() => lines(gateway).find((l) => l.trace_id === traceId), 'the gateway access log line');
    const inn = await eventually(() => lines(billing).find((l) => l.trace_id === traceId), 'the billing access log line');
    expect(out).toMatchObject({
      direction: 'outbound', method: 'GET', authority: 'billing', path: '/invoices/9', status: 200, mesh_error: '', upstream: billing.inbound,
      attempts: 1, request_id: `log-${traceId}`, route: 'default',
    });
    expect(out.bytes_sent).toBeGreaterThan(0);
    expect(out.duration_ms).toBeGreaterThan(0);
    expect(inn).toMatchObject({ direction: 'inbound', path: '/invoices/9', status: 200, request_id: `log-${traceId}` });
    expect(gateway.stdout()).not.toContain('secret=1');

    const denied = await request(gateway.outbound, { host: 'nowhere', path: '/x', headers: { 'x-request-id': `miss-${traceId}` } });
    expect(denied.status).toBeGreaterThanOrEqual(400);
    const miss = await eventually(() => lines(gateway).find((l) => l.request_id === `miss-${traceId}`), 'the refused request logged');
    expect(miss).toMatchObject({ status: denied.status, mesh_error: denied.headers['x-mesh-error'], attempts: 0, upstream: '' });
    expect(miss.mesh_error).not.toBe('');
  }, 20_000);
});
