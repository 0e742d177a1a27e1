// Distributed tracing: trace context in and out (W3C traceparent/tracestate, B3 single and multi), one span per sidecar hop, sampling and export.
import { randomFillSync } from 'node:crypto';
import {
  ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Span, type SpanContext, type TextMapGetter, type TextMapPropagator,
  type TextMapSetter, type Tracer,
} from '@opentelemetry/api';
import { parseTraceParent, setGlobalErrorHandler, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOnSampler, BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import type { IncomingHttpHeaders } from 'node:http';
import type { Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { MeshConfigSpec } from '../api/resources.js';
import type { Exchange } from './exchange.js';
import type { HeaderRecord } from './headers.js';
import type { Handler, Layer } from './pipeline-types.js';
import type { SpanRing } from './trace-ring.js';

/** The trace header formats a sidecar understands; a request leaves in the format it came in. */
export type TraceFormat = 'w3c' | 'b3-single' | 'b3-multi';

/** Every header that carries trace context: removed from the forwarded request and written anew with this hop's span. */
export const TRACE_HEADERS = Object.freeze(['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags']);

const PROPAGATORS: Readonly<Record<TraceFormat, TextMapPropagator>> = Object.freeze({
  'w3c': new W3CTraceContextPropagator(),
  'b3-single': new B3Propagator({ injectEncoding: B3InjectEncoding.SINGLE_HEADER }),
  'b3-multi': new B3Propagator({ injectEncoding: B3InjectEncoding.MULTI_HEADER }),
});

const getter: TextMapGetter<IncomingHttpHeaders> = {
  keys: (h) => Object.keys(h),
  get: (h, key) => h[key],
};

const setter: TextMapSetter<HeaderRecord> = {
  set: (h, key, value) => { h[key] = value; },
};

/** Which format the caller used: W3C wins when both are present (it is the standard; B3 is the legacy Zipkin one). */
export function detectFormat(h: IncomingHttpHeaders): TraceFormat | undefined {
  if (h.traceparent !== undefined) return 'w3c';
  if (h.b3 !== undefined) return 'b3-single';
  if (h['x-b3-traceid'] !== undefined) return 'b3-multi';
  return undefined;
}

/** What MeshConfig says about tracing. */
export interface TracerConfig {
  readonly sampling: number;
  readonly otlpEndpoint: string;
}

/** OTLP/HTTP's traces path is appended to a bare collector address, as OTEL_EXPORTER_OTLP_ENDPOINT does; a full URL is kept. */
export function otlpTracesUrl(endpoint: string): string {
  const u = new URL(endpoint);
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/v1/traces';
  return u.toString();
}

/** The tracer of the current snapshot and the ratio new traces are sampled at. */
export interface ActiveTracer {
  readonly tracer: Tracer;
  readonly sampling: number;
  readonly random: Random;
}

export interface TracingIdentity {
  readonly service: string;
  readonly namespace: string;
  readonly instance: string;
}

/**
 * Owns the tracer provider. The provider is rebuilt only when MeshConfig's tracing block changes (once per snapshot at
 * most), and the old one is shut down so spans it still holds are exported rather than lost.
 */
export class Tracing {
  private provider: BasicTracerProvider | undefined;
  private config: TracerConfig | undefined;
  private current: ActiveTracer | undefined;
  private lastExportError = 0;

  constructor(
    private readonly me: TracingIdentity,
    private readonly ring: SpanRing,
    private readonly log: Logger,
    private readonly random: Random = Math.random,
  ) {
    // The exporter reports failures through OpenTelemetry's global handler: log them, at most once a minute.
    setGlobalErrorHandler((err) => {
      const now = Date.now();
      if (now - this.lastExportError < 60_000) return;
      this.lastExportError = now;
      this.log.warn('trace_export_failed', { error: err instanceof Error ? err.message : String(err) });
    });
  }

  /** The tracer for the current snapshot (undefined before the first). */
  get active(): ActiveTracer | undefined {
    return this.current;
  }

  /** Applies a snapshot's MeshConfig; a no-op unless its tracing block changed. */
  configure(mesh: MeshConfigSpec): void {
    const next: TracerConfig = { sampling: mesh.tracing.sampling, otlpEndpoint: mesh.tracing.otlpEndpoint };
    if (this.config && this.config.sampling === next.sampling && this.config.otlpEndpoint === next.otlpEndpoint) return;
    const processors: SpanProcessor[] = [this.ring];
    if (next.otlpEndpoint) {
      processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: otlpTracesUrl(next.otlpEndpoint), timeoutMillis: 10_000 }), {
        scheduledDelayMillis: 2_000, maxQueueSize: 4_096, maxExportBatchSize: 512,
      }));
    }
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({
        'service.name': this.me.service, 'service.namespace': this.me.namespace, 'service.instance.id': this.me.instance,
        'mesh.component': 'sidecar',
      }),
      // startHop has already decided (parent's flag, else the ratio): the SDK only ever sees spans to record.
      sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
      spanProcessors: processors,
    });
    const old = this.provider;
    this.provider = provider;
    this.config = next;
    this.current = { tracer: provider.getTracer('trellis-sidecar'), sampling: next.sampling, random: this.random };
    if (old) void old.shutdown().catch(() => undefined);
    this.log.info('tracing_configured', { sampling: next.sampling, otlp: next.otlpEndpoint || 'off' });
  }

  /** Exports what is buffered; called on shutdown. */
  async close(): Promise<void> {
    const p = this.provider;
    this.provider = this.current = undefined;
    await p?.shutdown().catch(() => undefined);
  }
}

/** Span and trace ids from a pooled block of CSPRNG bytes: one fill per 256 ids, none per request. */
const idPool = Buffer.alloc(4096);
let idPos = idPool.length;
function randomHex(bytes: number): string {
  for (;;) {
    if (idPos + bytes > idPool.length) {
      randomFillSync(idPool);
      idPos = 0;
    }
    const hex = idPool.toString('hex', idPos, (idPos += bytes));
    // All-zero ids are invalid in both W3C and B3.
    if (hex !== '0'.repeat(bytes * 2)) return hex;
  }
}

/** The caller's span context in `format`; undefined when absent or malformed (then this hop starts a new trace). */
function callerContext(format: TraceFormat, h: IncomingHttpHeaders): SpanContext | undefined {
  if (format === 'w3c') {
    const tp = h.traceparent;
    return parseTraceParent(Array.isArray(tp) ? tp[0] : tp ?? '') ?? undefined;
  }
  return trace.getSpanContext(PROPAGATORS[format].extract(ROOT_CONTEXT, h, getter));
}

/**
 * Continues the caller's trace on this hop and rewrites the outgoing trace headers in the caller's format, so every hop
 * gets a new parent span id while the trace id is kept. Sampling is parent-based: the caller's flag decides; a new trace
 * is sampled at the MeshConfig ratio. A sampled hop gets an OpenTelemetry span (ex.span). An unsampled hop — nearly all
 * of them — only gets a fresh span id written into the headers: no span, context or sampler objects, because this runs
 * on every request and must cost nothing measurable.
 */
export function startHop(active: ActiveTracer, ex: Exchange, kind: SpanKind): void {
  const h = ex.req.headers;
  const format = detectFormat(h);
  const parent = format === undefined ? undefined : callerContext(format, h);
  const sampled = parent ? (parent.traceFlags & TraceFlags.SAMPLED) !== 0 : active.random() < active.sampling;
  const out = ex.headers;
  const keepTraceState = format === 'w3c' && parent !== undefined;
  if (format !== undefined) for (const name of TRACE_HEADERS) if (!(keepTraceState && name === 'tracestate')) delete out[name];
  if (sampled) {
    // The library makes the span and writes the headers (tracestate and B3's debug flag included).
    const ctx = parent === undefined ? ROOT_CONTEXT : PROPAGATORS[format!].extract(ROOT_CONTEXT, h, getter);
    const span = active.tracer.startSpan(ex.method, { kind }, ctx);
    PROPAGATORS[format ?? 'w3c'].inject(trace.setSpan(ROOT_CONTEXT, span), out, setter);
    ex.span = span;
    ex.traceId = span.spanContext().traceId;
    return;
  }
  const traceId = parent?.traceId ?? randomHex(16);
  const spanId = randomHex(8);
  ex.traceId = traceId;
  switch (format ?? 'w3c') {
    case 'w3c': {
      const flags = (parent?.traceFlags ?? 0) & 0xff;
      out.traceparent = `00-${traceId}-${spanId}-${flags < 16 ? '0' : ''}${flags.toString(16)}`;
      return;
    }
    case 'b3-single':
      out.b3 = `${traceId}-${spanId}-0`;
      return;
    case 'b3-multi':
      out['x-b3-traceid'] = traceId;
      out['x-b3-spanid'] = spanId;
      out['x-b3-sampled'] = '0';
      return;
  }
}

/** Attributes per OpenTelemetry's HTTP semantic conventions, plus the mesh's own; set only on recording spans. */
export function endHop(span: Span, ex: Exchange, kind: SpanKind): void {
  const status = ex.res.statusCode;
  const meshError = ex.meshError;
  const route = ex.rule?.routeName;
  const destination = ex.backend?.service ?? ex.authority;
  // Named by destination, not route: "GET billing" reads well in a trace view, and the route is an attribute.
  span.updateName(`${ex.method} ${destination}`);
  span.setAttributes({
    'http.request.method': ex.method,
    'url.path': ex.path,
    'url.scheme': 'http',
    'server.address': ex.authority,
    'network.protocol.version': ex.req.httpVersion,
    'http.response.status_code': status,
    'mesh.direction': ex.direction,
    'mesh.source_service': ex.sourceService,
    'mesh.destination_service': destination,
    'mesh.route': route ?? 'none',
    'mesh.retry_count': Math.max(0, ex.attempts - 1),
    'mesh.request_id': ex.requestId,
  });
  if (ex.attempts > 1) span.setAttribute('http.request.resend_count', ex.attempts - 1);
  if (ex.upstream) span.setAttribute('mesh.upstream', ex.upstream);
  const ua = ex.req.headers['user-agent'];
  if (ua) span.setAttribute('user_agent.original', ua);
  if (meshError) span.setAttribute('mesh.error', meshError);
  // Server spans fail on 5xx only; client spans on any 4xx/5xx (OpenTelemetry HTTP span status rules).
  const failed = ex.clientGone || status >= 500 || (kind === SpanKind.CLIENT && status >= 400);
  if (failed) {
    const errorType = meshError || (ex.clientGone ? 'client-gone' : String(status));
    span.setAttribute('error.type', errorType);
    span.setStatus({ code: SpanStatusCode.ERROR, message: errorType });
  }
  span.end();
}

/**
 * The tracing stage: outermost after the listener, so refusals by later stages (authz, rate limit, no route) still end a
 * span with their status. Outbound hops are client spans (this sidecar calls the destination on the app's behalf),
 * inbound hops server spans. An unsampled request passes straight through: no extra promise either.
 */
export function traceLayer(active: () => ActiveTracer | undefined, direction: 'inbound' | 'outbound'): Layer {
  const kind = direction === 'inbound' ? SpanKind.SERVER : SpanKind.CLIENT;
  return (next: Handler): Handler => (ex: Exchange) => {
    const t = active();
    if (!t) return next(ex);
    startHop(t, ex, kind);
    const span = ex.span;
    if (!span) return next(ex);
    // Handlers never reject (pipeline-types.ts), so this always ends the span.
    return next(ex).then(() => endHop(span, ex, kind));
  };
}
