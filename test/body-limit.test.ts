// End-to-end: --max-request-body (HARDENING.md row 12, the configured limit): a declared length over it is refused with
// 413 before anything is forwarded, on HTTP/1.1 and HTTP/2 alike; a body without one is cut before the chunk that crosses it.
import http2 from 'node:http2';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { header, request } from './harness/client.js';
import { service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';

const LIMIT = 4 * 1024;
let app: Upstream;
let sc: Sidecar;

beforeAll(async () => {
  app = await startUpstream({ name: 'app' });
  sc = await startSidecar({ service: 'web', extraArgs: ['--max-request-body', '4Ki'], resources: toYaml([...service({ name: 'web' }), ...service({ name: 'app', endpoints: [{ address: app.address }] })]) });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

const seen = (path: string) => app.requests.filter((r) => r.url === path);

/** One HTTP/2 POST (h2c, prior knowledge) of `body`, with or without a content-length; the status, or 0 if reset. */
async function h2Post(path: string, body: Buffer, declare: boolean): Promise<{ status: number; error?: string }> {
  const session = http2.connect(`http://${sc.outbound}`);
  session.on('error', () => undefined);
  try {
    return await new Promise((resolve) => {
      const s = session.request({ ':method': 'POST', ':path': path, ':authority': 'app', ...(declare ? { 'content-length': String(body.length) } : {}) });
      let status = 0;
      let error: string | undefined;
      s.on('response', (h) => { status = Number(h[':status']); error = h['x-mesh-error'] as string | undefined; });
      s.on('error', () => undefined);
      s.resume();
      s.on('close', () => resolve({ status, error }));
      s.end(body);
    });
  } finally {
    session.close();
  }
}

describe('--max-request-body 4Ki', () => {
  it('HTTP/1.1: a body of exactly the limit is forwarded whole; one byte more, declared, is 413 and nothing reaches the app', async () => {
    const ok = await request(sc.outbound, { host: 'app', method: 'POST', path: '/at-limit', body: 'a'.repeat(LIMIT) });
    expect(ok.status).toBe(200);
    expect(seen('/at-limit').map((r) => r.body.length)).toEqual([LIMIT]);
    const over = await request(sc.outbound, { host: 'app', method: 'POST', path: '/over', body: 'a'.repeat(LIMIT + 1) });
    expect(over.status).toBe(413);
    expect(header(over, 'x-mesh-error')).toBe('payload-too-large');
    expect(seen('/over')).toEqual([]);
  });

  it('HTTP/1.1 chunked (no length): cut before the chunk that crosses the limit; the app never gets it whole', async () => {
    async function* chunks() {
      for (let i = 0; i < 8; i++) yield Buffer.alloc(1024, 0x61);
    }
    const r = await request(sc.outbound, { host: 'app', method: 'POST', path: '/chunked', body: Readable.from(chunks()) }).catch((err: Error) => err);
    if (!(r instanceof Error)) {
      expect(r.status).toBe(413);
      expect(header(r, 'x-mesh-error')).toBe('payload-too-large');
    }
    expect(seen('/chunked')).toEqual([]);
  });

  it('HTTP/2: a declared length over the limit is 413 too (the h2 listener did not check it), and an undeclared body is cut', async () => {
    const declared = await h2Post('/h2-declared', Buffer.alloc(2 * LIMIT, 0x61), true);
    expect(declared).toEqual({ status: 413, error: 'payload-too-large' });
    expect(seen('/h2-declared')).toEqual([]);
    const streamed = await h2Post('/h2-streamed', Buffer.alloc(2 * LIMIT, 0x61), false);
    expect(streamed.status === 0 || streamed.status === 413, JSON.stringify(streamed)).toBe(true);
    expect(seen('/h2-streamed')).toEqual([]);
    const fits = await h2Post('/h2-fits', Buffer.alloc(LIMIT, 0x61), true);
    expect(fits.status).toBe(200);
    expect(seen('/h2-fits').map((r) => r.body.length)).toEqual([LIMIT]);
  });
});
