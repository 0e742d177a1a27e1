// The most recent finished spans in a bounded ring, for the admin endpoint GET /debug/traces.
import { SpanKind, SpanStatusCode, type Context } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-node';

export interface SpanRecord {
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  readonly kind: string;
  readonly startTime: string;
  readonly durationMs: number;
  readonly status: 'unset' | 'ok' | 'error';
  readonly statusMessage?: string;
  readonly attributes: Readonly<Record<string, unknown>>;
}

const KINDS: Record<number, string> = {
  [SpanKind.INTERNAL]: 'internal', [SpanKind.SERVER]: 'server', [SpanKind.CLIENT]: 'client',
  [SpanKind.PRODUCER]: 'producer', [SpanKind.CONSUMER]: 'consumer',
};

const hrToMs = ([s, ns]: [number, number]): number => s * 1e3 + ns / 1e6;

/** Converts a finished span to the compact record kept in the ring (only sampled spans ever reach a processor). */
export function toRecord(span: ReadableSpan): SpanRecord {
  const code = span.status.code;
  return {
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? '',
    name: span.name,
    kind: KINDS[span.kind] ?? 'internal',
    startTime: new Date(hrToMs(span.startTime)).toISOString(),
    durationMs: Math.round(hrToMs(span.duration) * 1000) / 1000,
    status: code === SpanStatusCode.ERROR ? 'error' : code === SpanStatusCode.OK ? 'ok' : 'unset',
    ...(span.status.message ? { statusMessage: span.status.message } : {}),
    attributes: { ...span.attributes },
  };
}

/** A span processor that keeps the last `capacity` spans; memory is bounded whatever the traffic. */
export class SpanRing implements SpanProcessor {
  private readonly spans: (SpanRecord | undefined)[];
  private next = 0;
  private total = 0;

  constructor(readonly capacity = 256) {
    this.spans = new Array<SpanRecord | undefined>(capacity);
  }

  onStart(_span: Span, _parent: Context): void {
    // Nothing to do until the span ends.
  }

  onEnd(span: ReadableSpan): void {
    this.spans[this.next] = toRecord(span);
    this.next = (this.next + 1) % this.capacity;
    this.total++;
  }

  /** Oldest first; optionally only one trace's spans. */
  recent(traceId?: string): SpanRecord[] {
    const out: SpanRecord[] = [];
    for (let i = 0; i < this.capacity; i++) {
      const s = this.spans[(this.next + i) % this.capacity];
      if (s && (traceId === undefined || s.traceId === traceId)) out.push(s);
    }
    return out;
  }

  /** Spans recorded since start, including those the ring no longer holds. */
  get recorded(): number {
    return this.total;
  }

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
