// Unit tests: trace format detection, context in → new hop span → context out in the same format, parent-based sampling, span attributes, the ring.
import { SpanKind } from '@opentelemetry/api';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../api/resources.js';
import type { Logger } from '../api/log.js';
import type { Exchange } from './exchange.js';
import { SpanRing } from './trace-ring.js';
import { detectFormat, endHop, otlpTracesUrl, startHop, Tracing, type ActiveTracer } from './tracing.js';

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;
const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';

function tracer(sampling: number, ring = new SpanRing(16)): { tracer: ActiveTracer; ring: SpanRing } {
  const t = new Tracing({ service: 'gateway', namespace: 'default', instance: 'g-1' }, ring, quiet);
  t.configure({ ...DEFAULTS.meshConfig, tracing: { sampling, otlpEndpoint: '' } });
  return { tracer: t.active!, ring };
}

/** One whole hop: start, then (sampled only) end; returns this hop's span id as sent downstream ('' if none recorded). */
function hop(t: ActiveTracer, ex: Exchange, kind: SpanKind): string {
  startHop(t, ex, kind);
  const id = ex.span?.spanContext().spanId ?? '';
  if (ex.span) endHop(ex.span, ex, kind);
  return id;
}

function exchange(headers: IncomingHttpHeaders, o: { status?: number; meshError?: string; attempts?: number } = {}): Exchange {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined) out[k] = v;
  return {
    req: { headers, httpVersion: '1.1' }, res: { statusCode: o.status ?? 200 }, meshError: o.meshError ?? '',
    direction: 'outbound', method: 'GET', authority: 'billing', path: '/invoices/1', query: '', headers: out, requestId: 'rid',
    rule: { routeName: 'billing' }, backend: { service: 'billing' }, sourceService: 'gateway', attempts: o.attempts ?? 1, upstream: '127.0.0.1:1',
    clientGone: false,
  } as unknown as Exchange;
}

const traceparent = (sampled: boolean) => `00-${TRACE}-${PARENT}-${sampled ? '01' : '00'}`;

describe('detectFormat', () => {
  it.each([
    [{ traceparent: traceparent(true) }, 'w3c'],
    [{ traceparent: traceparent(true), b3: `${TRACE}-${PARENT}-1` }, 'w3c'],
    [{ b3: `${TRACE}-${PARENT}-1` }, 'b3-single'],
    [{ 'x-b3-traceid': TRACE, 'x-b3-spanid': PARENT }, 'b3-multi'],
    [{}, undefined],
  ] as const)('%j → %s', (h, f) => expect(detectFormat(h)).toBe(f));
});

describe('startHop / endHop', () => {
  it('W3C in: same trace id, a new span id as parent, sampled flag and tracestate kept; W3C out only', () => {
    const { tracer: t, ring } = tracer(0);
    const ex = exchange({ traceparent: traceparent(true), tracestate: 'vendor=x' });
    const spanId = hop(t, ex, SpanKind.CLIENT);
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(ex.headers.traceparent as string);
    expect(m, String(ex.headers.traceparent)).not.toBeNull();
    expect(m![1]).toBe(TRACE);
    expect(m![2]).not.toBe(PARENT);
    expect(m![2]).toBe(spanId);
    expect(ex.headers.tracestate).toBe('vendor=x');
    expect(ex.traceId).toBe(TRACE);
    expect(Object.keys(ex.headers).filter((k) => k.startsWith('x-b3') || k === 'b3')).toEqual([]);
    // sampling 0 at the root, but the caller sampled: parent-based honours it.
    const [rec] = ring.recent();
    expect(rec).toMatchObject({ traceId: TRACE, parentSpanId: PARENT, kind: 'client', name: 'GET billing', status: 'unset' });
    expect(rec.attributes).toMatchObject({ 'http.request.method': 'GET', 'url.path': '/invoices/1', 'http.response.status_code': 200, 'mesh.route': 'billing', 'mesh.destination_service': 'billing', 'mesh.retry_count': 0 });
  });

  it('an unsampled caller is not recorded even at sampling 1, but still gets a new span id downstream; tracestate is kept', () => {
    const { tracer: t, ring } = tracer(1);
    const ex = exchange({ traceparent: traceparent(false), tracestate: 'vendor=x' });
    expect(hop(t, ex, SpanKind.SERVER)).toBe('');
    expect(ex.span).toBeUndefined();
    expect(ex.traceId).toBe(TRACE);
    expect(ex.headers.traceparent).toMatch(new RegExp(`^00-${TRACE}-(?!${PARENT})[0-9a-f]{16}-00$`));
    expect(ex.headers.tracestate).toBe('vendor=x');
    expect(ring.recent()).toEqual([]);
  });

  it('unsampled B3, multi and single: the trace id is kept, the span id is new, sampled says 0', () => {
    const { tracer: t } = tracer(1);
    const multi = exchange({ 'x-b3-traceid': TRACE, 'x-b3-spanid': PARENT, 'x-b3-sampled': '0', 'x-b3-parentspanid': '1111111111111111' });
    hop(t, multi, SpanKind.CLIENT);
    expect(multi.headers).toMatchObject({ 'x-b3-traceid': TRACE, 'x-b3-sampled': '0' });
    expect(multi.headers['x-b3-spanid']).toMatch(/^[0-9a-f]{16}$/);
    expect(multi.headers['x-b3-spanid']).not.toBe(PARENT);
    expect(multi.headers['x-b3-parentspanid']).toBeUndefined();
    const single = exchange({ b3: `${TRACE}-${PARENT}-0` });
    hop(t, single, SpanKind.CLIENT);
    expect(single.headers.b3).toMatch(new RegExp(`^${TRACE}-(?!${PARENT})[0-9a-f]{16}-0$`));
    // 64-bit B3 trace ids are widened to 128 bits, as the OpenTelemetry B3 propagator does.
    const short = exchange({ b3: `463ac35c9f6413ad-${PARENT}-0` });
    hop(t, short, SpanKind.CLIENT);
    expect(short.headers.b3).toMatch(/^0000000000000000463ac35c9f6413ad-[0-9a-f]{16}-0$/);
  });

  it('B3 multi in → B3 multi out, same trace id, new span id, sampled kept; no traceparent added', () => {
    const { tracer: t, ring } = tracer(0);
    const ex = exchange({ 'x-b3-traceid': TRACE, 'x-b3-spanid': PARENT, 'x-b3-sampled': '1', 'x-b3-parentspanid': '1111111111111111' });
    const spanId = hop(t, ex, SpanKind.CLIENT);
    expect(ex.headers['x-b3-traceid']).toBe(TRACE);
    expect(ex.headers['x-b3-spanid']).toBe(spanId);
    expect(ex.headers['x-b3-spanid']).not.toBe(PARENT);
    expect(ex.headers['x-b3-sampled']).toBe('1');
    // The caller's own parent id describes the caller's hop, not ours: it must not be forwarded as if it were.
    expect(ex.headers['x-b3-parentspanid']).not.toBe('1111111111111111');
    expect(ex.headers.traceparent).toBeUndefined();
    expect(ring.recent()[0]).toMatchObject({ traceId: TRACE, parentSpanId: PARENT });
  });

  it('B3 single in → B3 single out', () => {
    const { tracer: t } = tracer(0);
    const ex = exchange({ b3: `${TRACE}-${PARENT}-1` });
    const spanId = hop(t, ex, SpanKind.CLIENT);
    expect(ex.headers.b3).toBe(`${TRACE}-${spanId}-1`);
    expect(ex.headers['x-b3-traceid']).toBeUndefined();
    expect(ex.headers.traceparent).toBeUndefined();
  });

  it('no context: a new W3C root, sampled by the ratio (0 → never, 1 → always)', () => {
    for (const [sampling, flag, recorded] of [[0, '00', 0], [1, '01', 1]] as const) {
      const { tracer: t, ring } = tracer(sampling);
      const ex = exchange({});
      const spanId = hop(t, ex, SpanKind.CLIENT);
      expect(ex.headers.traceparent).toMatch(new RegExp(`^00-${ex.traceId}-${recorded ? spanId : '[0-9a-f]{16}'}-${flag}$`));
      expect(ring.recent()).toHaveLength(recorded);
      if (recorded) expect(ring.recent()[0].parentSpanId).toBe('');
    }
  });

  it('a forged or malformed traceparent starts a new trace instead of being trusted', () => {
    const { tracer: t } = tracer(0);
    for (const bad of ['00-00000000000000000000000000000000-b7ad6b7169203331-01', 'ff-xyz', `00-${TRACE}-0000000000000000-01`]) {
      const ex = exchange({ traceparent: bad });
      hop(t, ex, SpanKind.CLIENT);
      expect(ex.headers.traceparent, bad).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
      expect(ex.headers.traceparent).not.toContain('0000000000000000');
    }
  });

  it('errors: a sidecar-made 503 marks the span failed with its x-mesh-error; retries are counted', () => {
    const { tracer: t, ring } = tracer(1);
    const ex = exchange({}, { status: 503, meshError: 'no-healthy-upstream', attempts: 3 });
    hop(t, ex, SpanKind.SERVER);
    expect(ring.recent()[0]).toMatchObject({ status: 'error', statusMessage: 'no-healthy-upstream' });
    expect(ring.recent()[0].attributes).toMatchObject({ 'mesh.error': 'no-healthy-upstream', 'error.type': 'no-healthy-upstream', 'mesh.retry_count': 2, 'http.request.resend_count': 2 });
  });

  it('server spans do not fail on 4xx; client spans do', () => {
    for (const [kind, status] of [[SpanKind.SERVER, 'unset'], [SpanKind.CLIENT, 'error']] as const) {
      const { tracer: t, ring } = tracer(1);
      const ex = exchange({}, { status: 404 });
      hop(t, ex, kind);
      expect(ring.recent()[0].status).toBe(status);
    }
  });
});

describe('otlpTracesUrl', () => {
  it.each([
    ['http://collector:4318', 'http://collector:4318/v1/traces'],
    ['http://collector:4318/', 'http://collector:4318/v1/traces'],
    ['https://c.example/custom/traces', 'https://c.example/custom/traces'],
  ])('%s → %s', (a, b) => expect(otlpTracesUrl(a)).toBe(b));
});

describe('SpanRing', () => {
  it('keeps only the last `capacity` spans, oldest first, and filters by trace id', () => {
    const { tracer: t, ring } = tracer(1, new SpanRing(3));
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const ex = exchange({});
      hop(t, ex, SpanKind.CLIENT);
      ids.push(ex.traceId);
    }
    expect(ring.recent().map((s) => s.traceId)).toEqual(ids.slice(2));
    expect(ring.recent(ids[4]).map((s) => s.traceId)).toEqual([ids[4]]);
    expect(ring.recorded).toBe(5);
  });
});
