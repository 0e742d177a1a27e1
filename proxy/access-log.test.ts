// Unit tests: the access log record's fields, and batching (lines of one event-loop turn go out in one write; off writes nothing).
import { describe, expect, it } from 'vitest';
import { FakeClock } from '../api/clock.js';
import { AccessLog, accessRecord } from './access-log.js';
import type { Exchange } from './exchange.js';

function exchange(o: Partial<Record<string, unknown>> = {}): Exchange {
  return {
    req: { headers: { 'content-length': '5' } }, res: { statusCode: 503 }, meshError: 'upstream-reset',
    direction: 'outbound', start: 1_000, method: 'POST', authority: 'billing', path: '/invoices', query: '?token=secret', headers: {},
    requestId: 'rid-1', rule: { routeName: 'billing' }, backend: { service: 'billing' }, body: { kind: 'buffered', data: Buffer.from('hello') },
    sourceService: 'gateway', upstream: '127.0.0.1:9001', attempts: 2, bytesSent: 42, clientGone: false, upstreamHost: 'billing',
    traceId: 'abc',
    ...o,
  } as unknown as Exchange;
}

describe('accessRecord', () => {
  it('names every field the README documents, without the query', () => {
    const r = accessRecord(exchange(), 12.3456, Date.UTC(2026, 10, 29));
    expect(r).toEqual({
      time: '2026-11-29T00:00:00.000Z', direction: 'outbound', trace_id: 'abc', request_id: 'rid-1', method: 'POST', authority: 'billing',
      path: '/invoices', status: 503, mesh_error: 'upstream-reset', source: 'gateway', destination: 'billing', route: 'billing',
      upstream: '127.0.0.1:9001', attempts: 2, duration_ms: 12.346, bytes_received: 5, bytes_sent: 42, client_aborted: false,
    });
    expect(JSON.stringify(r)).not.toContain('secret');
  });

  it('a refused request: no route, no upstream, no trace; a streamed chunked body has unknown size', () => {
    const r = accessRecord(exchange({
      rule: undefined, backend: undefined, upstream: '', attempts: 0, traceId: '',
      req: { headers: { 'transfer-encoding': 'chunked' } }, body: { kind: 'stream', data: [] },
    }), 1, 0);
    expect(r).toMatchObject({ route: 'none', destination: 'billing', upstream: '', attempts: 0, trace_id: '', bytes_received: null });
  });

  it('a client that left before any response header is recorded as 499, not the unsent default 200', () => {
    expect(accessRecord(exchange({ clientGone: true, res: { statusCode: 200, headersSent: false } }), 1, 0)).toMatchObject({ status: 499, client_aborted: true });
    // Gone mid-body: the status it was sent stands.
    expect(accessRecord(exchange({ clientGone: true, res: { statusCode: 200, headersSent: true } }), 1, 0)).toMatchObject({ status: 200, client_aborted: true });
  });
});

describe('AccessLog', () => {
  it('writes nothing while off; batches one turn of lines into one write when on', async () => {
    const writes: string[] = [];
    const clock = new FakeClock();
    clock.advance(1_010);
    const log = new AccessLog(clock, () => 0, (t) => writes.push(t));
    log.record(exchange());
    await new Promise((r) => setImmediate(r));
    expect(writes).toEqual([]);
    log.enabled = true;
    log.record(exchange());
    log.record(exchange({ requestId: 'rid-2' }));
    expect(writes).toEqual([]);
    await new Promise((r) => setImmediate(r));
    expect(writes).toHaveLength(1);
    const lines = writes[0].trimEnd().split('\n').map((l) => JSON.parse(l) as { request_id: string; duration_ms: number });
    expect(lines.map((l) => l.request_id)).toEqual(['rid-1', 'rid-2']);
    expect(lines[0].duration_ms).toBe(10);
  });
});
