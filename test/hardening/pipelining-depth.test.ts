// End-to-end: HARDENING.md row 11, a client that pipelines thousands of requests and never reads. The sidecar works on at
// most MAX_PIPELINED of one connection's requests at once: the next is answered 503 `overloaded` with Connection: close,
// and nothing after it is forwarded (RFC 9112 §9.3.2: the client retries requests a closed connection left unanswered).
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PIPELINED } from '../../proxy/pipelining.js';
import { service, toYaml } from '../harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from '../harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from '../harness/upstream.js';
import { waitFor } from '../harness/wait.js';

const rssKb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

let app: Upstream;
let sc: Sidecar;

beforeAll(async () => {
  // 16 KiB answers: each forwarded request holds one until the client reads (pipelining-paused-reader.test.ts reads
  // answers of more than the socket buffers hold).
  app = await startUpstream({ name: 'app', behaviour: (_req, res) => res.end(Buffer.alloc(16 * 1024, 'a')) });
  sc = await startSidecar({ service: 'web', resources: toYaml([...service({ name: 'web' }), ...service({ name: 'app', endpoints: [{ address: app.address }] })]) });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

describe('pipelining depth', () => {
  it(`${5_000} pipelined GETs, never read: at most ${MAX_PIPELINED} forwarded, the connection closed after the 503, memory bounded`, async () => {
    const [host, port] = sc.outbound.split(':');
    const socket = net.connect(Number(port), host);
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    const rssBefore = rssKb(sc.pid);
    const one = (i: number) => `GET /p/${i} HTTP/1.1\r\nhost: app\r\n\r\n`;
    for (let i = 0; i < 5_000; i += 500) socket.write(Array.from({ length: 500 }, (_, k) => one(i + k)).join(''));
    await waitFor(() => app.requests.length >= MAX_PIPELINED, { timeoutMs: 15_000, what: `${MAX_PIPELINED} requests at the app` });
    // Give the sidecar time to forward more, if it were going to.
    await waitFor(async () => {
      const before = app.requests.length;
      await new Promise((r) => setTimeout(r, 300));
      return app.requests.length === before;
    }, { timeoutMs: 10_000, what: 'the app to stop getting requests' });
    expect(app.requests.length).toBe(MAX_PIPELINED);
    expect(app.requests.map((r) => r.url)).toEqual(Array.from({ length: MAX_PIPELINED }, (_, i) => `/p/${i}`));
    // Without the limit, 1,268 requests reached the app within 10 s and RSS grew 72 MB; with it, 28 MB (2026-11-30).
    expect((rssKb(sc.pid) - rssBefore) / 1024, 'RSS growth, MB').toBeLessThan(60);

    // Now read: MAX_PIPELINED answers of 16 KiB, then the 503 with Connection: close, then the end of the stream.
    socket.resume();
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((resolve) => socket.once('close', resolve));
    const text = Buffer.concat(chunks).toString('latin1');
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses.slice(0, MAX_PIPELINED).every((s) => s === '200')).toBe(true);
    expect(statuses.slice(MAX_PIPELINED)).toEqual(['503']);
    expect(text.slice(text.lastIndexOf('HTTP/1.1 503'))).toMatch(/x-mesh-error: overloaded\r\n[\s\S]*connection: close\r\n/i);
  }, 60_000);
});
