// Distributed tracing: trace context in and out (W3C traceparent/tracestate, B3 single and multi), one span per sidecar hop, sampling and export.
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span, type TextMapGetter, type TextMapPropagator, type TextMapSetter, type Tracer } from '@opentelemetry/api';
import { setGlobalErrorHandler, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { B3InjectEncoding, B3Propagator } from '@opentelemetry/propagator-b3';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import type { IncomingHttpHeaders } from 'node:http';
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

/** A tracer with the mesh's sampling (parent-based: a caller's sampled flag is honoured) and exporters. */
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
  private current: Tracer | undefined;
  private lastExportError = 0;

  constructor(private readonly me: TracingIdentity, private readonly ring: SpanRing, private readonly log: Logger) {
    // The exporter reports failures through OpenTelemetry's global handler: log them, at most once a minute.
    setGlobalErrorHandler((err) => {
      const now = Date.now();
      if (now - this.lastExportError < 60_000) return;
      this.lastExportError = now;
      this.log.warn('trace_export_failed', { error: err instanceof Error ? err.message : String(err) });
    });
  }

  /** The tracer for the current snapshot (undefined before the first). */
  get tracer(): Tracer | undefined {
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
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(next.sampling) }),
      spanProcessors: processors,
    });
    const old = this.provider;
    this.provider = provider;
    this.config = next;
    this.current = provider.getTracer('trellis-sidecar');
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

/**
 * Starts this hop's span as a child of the caller's context and rewrites the outgoing trace headers in the caller's
 * format, so every hop gets a new parent span id while the trace id is kept. Unsampled requests get a non-recording span:
 * its ids are still propagated, and nothing else is done for it.
 */
export function startHop(tracer: Tracer, ex: Exchange, kind: SpanKind): Span {
  const h = ex.req.headers;
  const format = detectFormat(h);
  const parent = format === undefined ? ROOT_CONTEXT : PROPAGATORS[format].extract(ROOT_CONTEXT, h, getter);
  const span = tracer.startSpan(ex.method, { kind }, parent);
  const out = ex.headers;
  if (format !== undefined) for (const name of TRACE_HEADERS) delete out[name];
  PROPAGATORS[format ?? 'w3c'].inject(trace.setSpan(ROOT_CONTEXT, span), out, setter);
  return span;
}

/** Attributes per OpenTelemetry's HTTP semantic conventions, plus the mesh's own; set only on recording spans. */
export function endHop(span: Span, ex: Exchange, kind: SpanKind): void {
  if (!span.isRecording()) return span.end();
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
 * inbound hops server spans.
 */
export function traceLayer(tracer: () => Tracer | undefined, direction: 'inbound' | 'outbound'): Layer {
  const kind = direction === 'inbound' ? SpanKind.SERVER : SpanKind.CLIENT;
  return (next: Handler): Handler => async (ex: Exchange) => {
    const t = tracer();
    if (!t) return next(ex);
    const span = startHop(t, ex, kind);
    ex.span = span;
    try {
      await next(ex);
    } finally {
      endHop(span, ex, kind);
    }
  };
}
