// End-to-end: pipelined answers of more than the socket buffers hold all reach a client that pauses reading, then reads
// (defect 25: a 'drain' that Node emits from inside another upstream's parser callback left one answer paused for good).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service, toYaml } from '../harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from '../harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from '../harness/upstream.js';
import { waitFor } from '../harness/wait.js';

let app: Upstream;
let sc: Sidecar;
let answered = 0;

beforeAll(async () => {
  app = await startUpstream({
    name: 'app',
    behaviour: (req, res) => {
      const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size'));
      res.end(Buffer.alloc(size, 'a'), () => answered++);
    },
  });
  sc = await startSidecar({ service: 'web', resources: toYaml([...service({ name: 'web' }), ...service({ name: 'app', endpoints: [{ address: app.address }] })]) });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

/** Splits a byte stream of HTTP/1.1 responses with Content-Length bodies: [status, body length] each. */
function responses(bytes: Buffer): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  for (;;) {
    const end = bytes.indexOf('\r\n\r\n', at);
    if (end < 0) return out;
    const head = bytes.subarray(at, end).toString('latin1');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (end + 4 + length > bytes.length) return out;
    out.push([Number(head.slice(9, 12)), length]);
    at = end + 4 + length;
  }
}

describe('pipelined answers and a paused reader', () => {
  it.each([
    [100, 64 * 1024],
    [50, 128 * 1024],
  ])('%i pipelined answers of %i bytes all arrive, in order, once the client reads', async (n, size) => {
    answered = 0;
    app.requests.length = 0;
    const [host, port] = sc.outbound.split(':');
    const socket = net.connect(Number(port), host);
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.pause();
    socket.write(Array.from({ length: n }, (_, i) => `GET /p/${i}?size=${size} HTTP/1.1\r\nhost: app\r\n\r\n`).join(''));
    // Every answer has left the app: the sidecar holds what the paused client's socket cannot take.
    await waitFor(() => answered === n, { timeoutMs: 15_000, what: `${n} answers sent by the app` });
    expect(app.requests.map((r) => r.url)).toEqual(Array.from({ length: n }, (_, i) => `/p/${i}?size=${size}`));
    const chunks: Buffer[] = [];
    let got = 0;
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      got += c.length;
    });
    socket.resume();
    // Before the fix about 4 MB arrived, then nothing until the 15 s route timeout.
    await waitFor(() => got >= n * size, { timeoutMs: 10_000, what: `all ${n * size} body bytes` });
    await waitFor(() => responses(Buffer.concat(chunks)).length === n, { timeoutMs: 5_000, what: `${n} whole responses` });
    expect(responses(Buffer.concat(chunks))).toEqual(Array.from({ length: n }, () => [200, size]));
    socket.destroy();
  }, 60_000);
});
