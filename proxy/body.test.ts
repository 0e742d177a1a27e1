import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MeshError } from '../api/errors.js';
import type { DownstreamRequest } from './exchange.js';
import { bufferUpTo, capBody } from './body.js';

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
