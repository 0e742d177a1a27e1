import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../api/clock.js';
import { createLogger } from '../api/log.js';
import { createH2Listener, createOutboundFront, rfcCodeOf } from './h2-listener.js';
import type { Exchange } from './exchange.js';
import { InFlight, type ListenerDeps } from './listener.js';
import { withDeadline } from '../test/harness/wait.js';

const { NGHTTP2_PROTOCOL_ERROR, NGHTTP2_FLOW_CONTROL_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;

/** What node:http2 hands session.destroy() when nghttp2 fails a session (lib/internal/http2/util.js NghttpError). */
const nghttpError = (errno: number, code = 'ERR_HTTP2_ERROR') => Object.assign(new Error('x'), { code, errno });

describe('rfcCodeOf', () => {
  it.each([
    ['NGHTTP2_ERR_PROTO', nghttpError(-505), NGHTTP2_PROTOCOL_ERROR],
    ['NGHTTP2_ERR_FLOW_CONTROL', nghttpError(-524), NGHTTP2_FLOW_CONTROL_ERROR],
    ['NGHTTP2_ERR_FLOODED', nghttpError(-904), NGHTTP2_ENHANCE_YOUR_CALM],
    ['NGHTTP2_ERR_TOO_MANY_CONTINUATIONS', nghttpError(-905), NGHTTP2_ENHANCE_YOUR_CALM],
    ['NGHTTP2_ERR_CALLBACK_FAILURE (rejected streams)', nghttpError(-902), NGHTTP2_ENHANCE_YOUR_CALM],
    ['too many invalid frames', nghttpError(-902, 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES'), NGHTTP2_ENHANCE_YOUR_CALM],
    ['an unknown library error', nghttpError(-599), undefined],
    ['a socket error', Object.assign(new Error('reset'), { code: 'ECONNRESET', errno: -104 }), undefined],
    ['no error', undefined, undefined],
  ])('%s', (_name, err, code) => {
    expect(rfcCodeOf(err)).toBe(code);
  });
});

describe('createH2Listener', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
  });

  /** A listener on 127.0.0.1:0 whose handler answers with `body` (nothing at all when undefined). */
  async function listen(body: Buffer | undefined, opts: { streamStallMs?: number } = {}): Promise<number> {
    const deps = {
      direction: 'outbound', clock: systemClock, log: createLogger('error', {}), refused: { record: () => undefined },
      handler: (ex: Exchange) => new Promise<void>((resolve) => {
        ex.res.once('close', () => resolve());
        if (body) ex.res.writeHead(200).end(body);
      }),
    } as unknown as ListenerDeps;
    const h2 = createH2Listener(deps, new InFlight(), opts);
    await new Promise<void>((resolve) => h2.server.listen(0, '127.0.0.1', resolve));
    close = async () => {
      await h2.closeAll();
      await new Promise((resolve) => h2.server.close(resolve));
    };
    return (h2.server.address() as AddressInfo).port;
  }

  /** One GET; `read` decides when to consume each chunk (never, at once, or slowly). */
  function get(port: number, settings: http2.Settings, read: 'never' | 'now' | number) {
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings });
    session.on('error', () => undefined);
    const stream = session.request({ ':path': '/', ':authority': 'x' });
    stream.on('error', () => undefined);
    let bytes = 0;
    if (read === 'now') stream.on('data', (d: Buffer) => { bytes += d.length; });
    if (typeof read === 'number') {
      stream.on('data', (d: Buffer) => {
        bytes += d.length;
        stream.pause();
        setTimeout(() => stream.resume(), read);
      });
    }
    const done = new Promise<{ rstCode: number | undefined; bytes: number }>((resolve) => {
      stream.on('close', () => { resolve({ rstCode: stream.rstCode, bytes }); session.close(); });
    });
    return { stream, session, done };
  }

  it('resets a stream whose response the client never lets through (zero window) once it has stalled', async () => {
    const port = await listen(Buffer.alloc(1 << 20), { streamStallMs: 300 });
    const { done } = get(port, { initialWindowSize: 0 }, 'never');
    const r = await withDeadline(done, 10_000, 'the stalled stream to be reset');
    expect(r.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
  });

  it('leaves a slow reader alone while the response makes progress, and a quiet stream with nothing to send', async () => {
    const port = await listen(Buffer.alloc(512 * 1024), { streamStallMs: 2_000 });
    const slow = get(port, { initialWindowSize: 16_384 }, 100);
    const r = await withDeadline(slow.done, 30_000, 'the slow read to finish');
    expect(r).toEqual({ rstCode: http2.constants.NGHTTP2_NO_ERROR, bytes: 512 * 1024 });

    await close?.();
    const quietPort = await listen(undefined, { streamStallMs: 100 });
    const quiet = get(quietPort, {}, 'now');
    let closed = false;
    void quiet.done.then(() => { closed = true; });
    // Long past the stall timeout: a stream with nothing to send is not a stalled one.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(closed).toBe(false);
    quiet.stream.close(http2.constants.NGHTTP2_CANCEL);
  }, 40_000);

  const frame = (type: number, flags: number, streamId: number, payload = Buffer.alloc(0)): Buffer => {
    const h = Buffer.alloc(9);
    h.writeUIntBE(payload.length, 0, 3);
    h[3] = type;
    h[4] = flags;
    h.writeUInt32BE(streamId, 5);
    return Buffer.concat([h, payload]);
  };

  it('answers a protocol violation with GOAWAY PROTOCOL_ERROR, not the INTERNAL_ERROR node:http2 would send', async () => {
    const socket = net.connect(await listen(undefined), '127.0.0.1');
    socket.on('error', () => undefined);
    let got = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => { got = Buffer.concat([got, d]); });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    // The preface, our SETTINGS, then a SETTINGS frame on stream 1 (RFC 9113 §6.5: a connection error PROTOCOL_ERROR).
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(4, 0, 0), frame(4, 0, 1)]));
    await closed;
    let goaway: number | undefined;
    for (let i = 0; i + 9 <= got.length; i += 9 + got.readUIntBE(i, 3)) if (got[i + 3] === 7) goaway = got.readUInt32BE(i + 13);
    expect(goaway).toBe(NGHTTP2_PROTOCOL_ERROR);
  });
});

describe('createOutboundFront', () => {
  /** The front with a plain HTTP/1 server behind it that answers every request with 200 "ok". */
  async function front(idleMs: number): Promise<{ port: number; close(): Promise<void> }> {
    const { default: http } = await import('node:http');
    const http1 = http.createServer((_req, res) => res.end('ok'));
    const f = createOutboundFront(http1, http2.createServer(), undefined, idleMs);
    await new Promise<void>((resolve) => f.listen(0, '127.0.0.1', resolve));
    return { port: (f.address() as AddressInfo).port, close: () => new Promise<void>((resolve) => { http1.closeAllConnections(); f.close(() => resolve()); }) };
  }

  it('keeps a connection that has sent nothing for the idle time, like an idle keep-alive one, then closes it', async () => {
    const f = await front(600);
    try {
      // Silent for a third of the idle time, then a request: served (a client's pool opens connections it uses later).
      const late = net.connect(f.port, '127.0.0.1');
      let answer = '';
      late.setEncoding('latin1').on('data', (d: string) => (answer += d));
      await new Promise((resolve) => late.once('connect', resolve));
      await new Promise((resolve) => setTimeout(resolve, 200));
      late.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
      await withDeadline(new Promise<void>((resolve) => late.on('data', () => answer.endsWith('ok') && resolve())), 2_000, 'the late request answered');
      expect(answer).toMatch(/^HTTP\/1\.1 200/);
      late.destroy();

      // Silent throughout: closed, and not before the idle time.
      const silent = net.connect(f.port, '127.0.0.1');
      silent.on('error', () => undefined);
      await new Promise((resolve) => silent.once('connect', resolve));
      const opened = Date.now();
      await withDeadline(new Promise((resolve) => silent.once('close', resolve)), 5_000, 'the silent connection closed');
      expect(Date.now() - opened).toBeGreaterThanOrEqual(550);
    } finally {
      await f.close();
    }
  });
});
