// H2Pool: one session per endpoint, reused; a new one after GOAWAY or close; connect failures reported, not thrown later.
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Endpoint } from './endpoint.js';
import { H2Pool } from './h2-pool.js';

const servers: http2.Http2Server[] = [];

afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** An h2c server answering 200; `onSession` may act on each new session. */
async function server(onSession: (s: http2.ServerHttp2Session) => void = () => undefined): Promise<Endpoint> {
  const srv = http2.createServer((_req, res) => res.end('ok'));
  srv.on('session', onSession);
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return new Endpoint({ address: '', host: '127.0.0.1', port: (srv.address() as AddressInfo).port, labels: {} });
}

function call(session: http2.ClientHttp2Session): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': '/' }, { endStream: true });
    s.on('response', (h) => resolve(Number(h[':status'])));
    s.on('error', reject);
    s.resume();
  });
}

const settings = { connectTimeoutMs: 1_000, idleTimeoutMs: 60_000 };

describe('H2Pool', () => {
  it('reuses one session for every call', async () => {
    const pool = new H2Pool(await server(), settings);
    const a = await pool.acquire();
    expect(await call(a)).toBe(200);
    const b = await pool.acquire();
    expect(b).toBe(a);
    expect(await call(b)).toBe(200);
    await pool.close();
  });

  it('opens a new session after the server sends GOAWAY', async () => {
    const pool = new H2Pool(await server((s) => s.on('stream', () => setImmediate(() => s.goaway()))), settings);
    const a = await pool.acquire();
    const away = new Promise((r) => a.once('goaway', r));
    expect(await call(a)).toBe(200);
    await away;
    const b = await pool.acquire();
    expect(b).not.toBe(a);
    expect(await call(b)).toBe(200);
    // Bounded even though node:http2 may never call back for a session closing after GOAWAY.
    await pool.close();
  });

  it('opens a new session after the connection closes', async () => {
    let first: http2.ServerHttp2Session | undefined;
    const pool = new H2Pool(await server((s) => { first ??= s; }), settings);
    const a = await pool.acquire();
    expect(await call(a)).toBe(200);
    const closed = new Promise((r) => a.once('close', r));
    first?.destroy();
    await closed;
    const b = await pool.acquire();
    expect(b).not.toBe(a);
    expect(await call(b)).toBe(200);
    await pool.close();
  });

  it('a refused connect rejects acquire() with the socket error', async () => {
    const ep = await server();
    servers.pop()?.close();
    await new Promise((r) => setImmediate(r));
    const pool = new H2Pool(ep, settings);
    await expect(Promise.resolve(pool.acquire())).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
