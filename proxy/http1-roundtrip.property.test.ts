// Property test: a request the sidecar forwards over HTTP/1.1 (pool.ts forward() through a real undici pool) parses back,
// with Node's parser and the listener's limits, to the same method, path and headers (HARDENING.md: "re-serialize HTTP/1
// requests from a validated header map").
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { Pool } from 'undici';
import { FakeClock } from '../api/clock.js';
import { Endpoint } from './endpoint.js';
import type { Exchange } from './exchange.js';
import { requestHeadersForUpstream, type HeaderRecord } from './headers.js';
import { LIMITS } from './listener.js';
import { normalizePath } from './path.js';
import { createEndpointPool, forward, type AttemptResult } from './pool.js';

const RUNS = 50;

/** What Node's parser made of one request. */
interface Received {
  readonly method: string;
  readonly url: string;
  readonly rawHeaders: string[];
  readonly body: Buffer;
}

/**
 * The upstream: a raw socket server that records each request's bytes and answers 200, so the bytes are exactly what
 * undici wrote. It knows where a request ends from its head (content-length; undici never chunks a Buffer body).
 */
function startCapture(): Promise<{ server: net.Server; port: number; next: () => Promise<Buffer>; drop: () => void }> {
  const waiting: ((b: Buffer) => void)[] = [];
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'))?.[1] ?? 0);
        if (buf.length < end + 4 + length) return;
        waiting.shift()?.(buf.subarray(0, end + 4 + length));
        buf = buf.subarray(end + 4 + length);
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
      }
    });
    s.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    server, port: (server.address() as AddressInfo).port, next: () => new Promise((r) => waiting.push(r)), drop: () => waiting.pop(),
  })));
}

/** Node's parser with the listener's settings (the upstream is usually the next sidecar): what it makes of the bytes. */
function startParser(): Promise<{ server: http.Server; parse: (bytes: Buffer) => Promise<Received | string> }> {
  const server = http.createServer({ maxHeaderSize: LIMITS.maxHeaderBytes, insecureHTTPParser: false, requireHostHeader: true });
  /** By the client's local port: each parse has its own connection. */
  const waiting = new Map<number, (r: Received) => void>();
  server.on('request', (req: IncomingMessage, res: http.ServerResponse) => {
    const body: Buffer[] = [];
    req.on('data', (c: Buffer) => body.push(c));
    req.on('end', () => {
      waiting.get(req.socket.remotePort ?? 0)?.({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body: Buffer.concat(body) });
      res.writeHead(200, { 'content-length': '0', connection: 'close' }).end();
    });
  });
  const parse = (bytes: Buffer) => new Promise<Received | string>((resolve) => {
    const s = net.connect((server.address() as AddressInfo).port, '127.0.0.1', () => {
      waiting.set(s.localPort ?? 0, resolve);
      s.end(bytes);
    });
    let reply = '';
    s.on('data', (c: Buffer) => { reply += c.toString('latin1'); });
    // A parse error answers 400 and never reaches 'request': then the reply's status line is the result.
    s.on('close', () => { waiting.delete(s.localPort ?? 0); resolve(reply.split('\r\n')[0] || 'closed'); });
    s.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, parse })));
}

/** The few Exchange members forward() touches: method, and a response it writes the upstream's answer to. */
function exchange(method: string): Exchange {
  const res = { statusCode: 0, writeHead(s: number) { this.statusCode = s; }, write: () => true, end: () => undefined, once: () => undefined, off: () => undefined, destroy: () => undefined };
  return { method, res, committed: false, meshError: '', bytesSent: 0 } as unknown as Exchange;
}

// --- Generators: what the listener could hand to forward() ---

/** Methods Node's parser accepts (the sidecar never sees others); CONNECT is refused by the listener. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'PATCH', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'PURGE', 'REPORT', 'SEARCH', 'QUERY']
  .filter((m) => http.METHODS.includes(m));

/** Characters of a request target as Node's parser hands them over: latin1, no controls, no space. */
const targetChar = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...'abcXYZ019-._~/;=&+!$\'()*,:@%'.split(''), '%2e', '%41', '%c3%a9', '%20', '..', '/.') },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
);
/** Normalized paths plus the query as sent: exactly what the listener stores in ex.path and ex.query. */
const pathAndQuery = fc.tuple(fc.array(targetChar, { maxLength: 16 }), fc.option(fc.array(fc.oneof(targetChar, fc.constantFrom('?', '%2F', '%00')), { maxLength: 8 }), { nil: undefined }))
  .map(([p, q]) => normalizePath(`/${p.join('')}${q === undefined ? '' : `?${q.join('')}`}`))
  .filter((n): n is { ok: true; path: string; query: string } => n.ok);

const TCHAR = '!#$%&\'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz';
const name = fc.oneof(
  fc.string({ unit: fc.constantFrom(...TCHAR), minLength: 1, maxLength: 16 }),
  fc.constantFrom('accept', 'content-type', 'cookie', 'set-cookie', 'authorization', 'user-agent', 'x-request-id', 'traceparent', 'content-length', 'host'),
);
/** Field values as Node's parser delivers them: HTAB, SP, visible ASCII and obs-text, no leading or trailing whitespace. */
const valueChar = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.constantFrom('\t', ' ', ',', ';', '"') },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
);
const value = fc.array(valueChar, { maxLength: 24 }).map((cs) => cs.join('').replace(/^[ \t]+|[ \t]+$/g, ''));

/** A client's header map (as req.headers), run through the real sanitizer, then the headers the sidecar adds. */
const headerMap = fc.tuple(
  fc.uniqueArray(fc.tuple(name, fc.oneof({ weight: 4, arbitrary: value }, { weight: 1, arbitrary: fc.array(value, { minLength: 1, maxLength: 3 }) })), { selector: ([n]) => n, maxLength: 10 }),
  fc.constantFrom('billing', 'billing:8080', 'billing.internal', '127.0.0.1:9001', '[::1]:80'),
  fc.uuid(),
).map(([pairs, host, requestId]) => {
  const incoming: Record<string, string | string[]> = {};
  // Node joins repeated fields except set-cookie; only HTTP/2 callers bring other arrays.
  for (const [n, v] of pairs) if (n !== 'content-length' && n !== 'host') incoming[n] = v;
  const headers = requestHeadersForUpstream(incoming, true);
  headers.host = host;
  headers['x-request-id'] = requestId;
  return headers;
});

/** undici sends `content-length: 0` for these when there is no body, and no length for any other method. */
const EXPECTS_BODY = ['POST', 'PUT', 'PATCH', 'QUERY', 'PROPFIND', 'PROPPATCH'];

const body = fc.option(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), { nil: undefined, freq: 3 });

// --- The comparison ---

/** Header lines grouped by lower-cased name, values in the order they came. */
function grouped(raw: readonly string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < raw.length; i += 2) out.set(raw[i].toLowerCase(), [...(out.get(raw[i].toLowerCase()) ?? []), raw[i + 1]]);
  return out;
}

describe('HTTP/1.1 serialization upstream', () => {
  let capture: Awaited<ReturnType<typeof startCapture>>;
  let parser: Awaited<ReturnType<typeof startParser>>;
  let pool: Pool;
  let endpoint: Endpoint;

  beforeAll(async () => {
    capture = await startCapture();
    parser = await startParser();
    endpoint = new Endpoint({ address: `127.0.0.1:${capture.port}`, host: '127.0.0.1', port: capture.port, labels: {} });
    pool = createEndpointPool(endpoint, { maxConnections: 1, idleTimeoutMs: 30_000, connectTimeoutMs: 2_000 });
  });

  afterAll(async () => {
    await pool.close();
    await new Promise((r) => capture.server.close(r));
    await new Promise((r) => parser.server.close(r));
  });

  /** One try through pool.ts's forward(), as balance.ts makes it; the bytes undici wrote, or the failed result. */
  async function send(method: string, path: string, headers: HeaderRecord, payload: Buffer | null): Promise<Buffer | AttemptResult> {
    const bytes = capture.next();
    const result = await forward({
      ex: exchange(method), endpoint, pool, path, headers, body: payload, perTryTimeoutMs: 5_000, clock: new FakeClock(), accept: () => true,
    }, () => undefined);
    if (result.kind === 'committed') return bytes;
    // Nothing reached the upstream: forget the wait, or the next request's bytes would be taken for this one's.
    capture.drop();
    return result;
  }

  // Guards against the upstream (often the next sidecar, authorizing on what it parses) seeing a different request than we routed.
  it('parses back to the same method, target and headers, with exactly the framing undici adds', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...METHODS), pathAndQuery, headerMap, body, async (method, target, headers, payload) => {
      const sent: HeaderRecord = { ...headers };
      if (payload) sent['content-length'] = String(payload.length);
      const bytes = await send(method, target.path + target.query, sent, payload ?? null);
      if (!Buffer.isBuffer(bytes)) throw new Error(`forward failed: ${JSON.stringify(bytes)}`);
      const r = await parser.parse(bytes);
      if (typeof r === 'string') throw new Error(`Node's parser refused ${JSON.stringify(bytes.toString('latin1'))}: ${r}`);

      expect(r.method).toBe(method);
      expect(r.url).toBe(target.path + target.query);
      // The next sidecar normalizes what it parsed: the same path as ours, so it authorizes what we routed.
      expect(normalizePath(r.url)).toEqual({ ok: true, path: target.path, query: target.query });
      expect(r.body.equals(payload ?? Buffer.alloc(0))).toBe(true);

      const want = new Map(Object.entries(sent).map(([n, v]) => [n, Array.isArray(v) ? v : [v]]));
      const have = grouped(r.rawHeaders);
      // undici's own framing (RFC 9110 §8.6): keep-alive; a zero length is sent exactly for the methods that expect a body.
      expect(have.get('connection')).toEqual(['keep-alive']);
      have.delete('connection');
      if (!payload?.length) {
        expect(have.get('content-length')).toEqual(EXPECTS_BODY.includes(method) ? ['0'] : undefined);
        have.delete('content-length');
        want.delete('content-length');
      }
      expect(have).toEqual(want);
      // One framing we generated: never chunked, one Host.
      expect(bytes.toString('latin1')).not.toMatch(/\r\ntransfer-encoding:/i);
    }), { numRuns: RUNS });
  });

  // Guards against a value Node's parser lets in that undici refuses to send: the try would fail as an upstream reset,
  // count against a healthy endpoint and be retried, all because of what a client wrote.
  it('every header byte the inbound parser accepts can be sent upstream', async () => {
    const candidates = Array.from({ length: 255 }, (_, i) => i + 1).filter((b) => b !== 0x0a && b !== 0x0d);
    const head = (b: number) => Buffer.concat([Buffer.from('GET / HTTP/1.1\r\nhost: x\r\nx-v: a'), Buffer.from([b]), Buffer.from('a\r\n\r\n')]);
    const refused: string[] = [];
    for (const b of candidates) {
      const inbound = await parser.parse(head(b));
      if (typeof inbound === 'string') continue;
      const sent = await send('GET', '/', { host: 'x', 'x-v': String(inbound.rawHeaders[3]) }, null);
      if (!Buffer.isBuffer(sent)) refused.push(`0x${b.toString(16)}`);
    }
    expect(refused).toEqual([]);
  });
});
