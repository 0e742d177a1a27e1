import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../api/errors.js';
import type { DownstreamRequest } from './exchange.js';
import { bufferUpTo, capBody, sendContinue } from './body.js';

/** A request body source that has `chunks` of `size` bytes each, then ends. */
function body(chunks: number, size: number): PassThrough {
  const p = new PassThrough();
  for (let i = 0; i < chunks; i++) p.write(Buffer.alloc(size, 0x61 + (i % 26)));
  p.end();
  return p;
}

async function drain(it: AsyncIterable<Buffer>): Promise<{ bytes: number; error: unknown }> {
  let bytes = 0;
  try {
    for await (const c of it) bytes += c.length;
  } catch (error) {
    return { bytes, error };
  }
  return { bytes, error: undefined };
}

describe('capBody (HARDENING.md row 12)', () => {
  it('passes a body within the limit through whole', async () => {
    const r = await drain(capBody(body(4, 100) as unknown as DownstreamRequest, 400));
    expect(r).toEqual({ bytes: 400, error: undefined });
  });

  it('fails with payload-too-large before the chunk that crosses the limit, and lets go of the request', async () => {
    const src = body(10, 64 * 1024);
    const r = await drain(capBody(src as unknown as DownstreamRequest, 200 * 1024));
    // Chunks still buffered when the limit is crossed are dropped with the stream: fewer bytes, never more.
    expect(r.bytes).toBeGreaterThan(0);
    expect(r.bytes).toBeLessThanOrEqual(200 * 1024);
    expect(r.error).toBeInstanceOf(MeshError);
    expect((r.error as MeshError).code).toBe('payload-too-large');
    // Unpiped: whoever reads the request next (Node draining it after the 413) gets the rest.
    expect(src.listenerCount('data')).toBe(0);
  });

  it('keeps the payload-too-large error when the body was being buffered for retries', async () => {
    const src = body(10, 100);
    const err = await bufferUpTo({ headers: {} } as DownstreamRequest, 10_000, capBody(src as unknown as DownstreamRequest, 450)).catch((e: unknown) => e);
    expect((err as MeshError).code).toBe('payload-too-large');
  });
});

describe('sendContinue (HARDENING.md row 10)', () => {
  it('never puts a 100 Continue inside the answer to a pipelined request', async () => {
    let secondDone: () => void = () => undefined;
    const second = new Promise<void>((r) => (secondDone = r));
    const server = http.createServer((req, res) => {
      // The first answer waits until the second has written its whole response (queued behind this one).
      void second.then(() => res.end('first'));
    });
    server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
      sendContinue(res);
      req.resume();
      req.on('end', () => {
        // Buffer chunks then end(), as the pool relays an upstream body: the case where Node put the head before the 100.
        res.writeHead(200, { 'content-length': 2 });
        res.write(Buffer.from('ok'));
        res.end();
        secondDone();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const got = await new Promise<string>((resolve, reject) => {
        const sock = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
        let text = '';
        const timer = setTimeout(() => reject(new Error(`no close; got ${JSON.stringify(text)}`)), 5_000);
        sock.setEncoding('latin1');
        sock.on('data', (d: string) => (text += d));
        sock.on('close', () => {
          clearTimeout(timer);
          resolve(text);
        });
        sock.write('GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx');
      });
      // After the first answer: perhaps a 100, then the 200 whose body is exactly "ok" (not a 100 and then "ok").
      const second = got.slice(got.indexOf('first') + 'first'.length).replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, '');
      expect(second).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(second.slice(second.indexOf('\r\n\r\n') + 4)).toBe('ok');
    } finally {
      server.close();
    }
  });
});
