// Self-test of the fault proxy against local TCP servers: each fault does what it says, counters count, close is clean.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { seededRandom } from '../../api/clock.js';
import { connectRefused, splitAddr } from './client.js';
import { startFaultProxy, type FaultProxy, type FaultProxyOptions } from './fault-proxy.js';
import { startTcpEcho, tcpExchange, type TcpEcho } from './tcp-echo.js';
import { waitFor } from './wait.js';

const proxies: FaultProxy[] = [];
const closers: (() => Promise<void>)[] = [];

afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await Promise.all(closers.splice(0).map((c) => c()));
});

async function proxy(target: string, opts: Partial<FaultProxyOptions> = {}): Promise<FaultProxy> {
  const p = await startFaultProxy({ target, ...opts });
  proxies.push(p);
  return p;
}

async function echo(): Promise<TcpEcho> {
  const e = await startTcpEcho();
  closers.push(() => e.close());
  return e;
}

interface Sender {
  readonly address: string;
  /** What each accepted connection received, and how it ended. */
  readonly seen: { bytes: number; error: string | undefined; closed: boolean }[];
}

/** A server that writes `bytes` bytes to every connection (then keeps it open) and records what it receives. */
async function sender(bytes: number): Promise<Sender> {
  const seen: Sender['seen'] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    const rec = { bytes: 0, error: undefined as string | undefined, closed: false };
    seen.push(rec);
    sockets.add(s);
    s.on('data', (d: Buffer) => (rec.bytes += d.length));
    s.on('error', (e: NodeJS.ErrnoException) => (rec.error ??= e.code));
    s.on('close', () => {
      rec.closed = true;
      sockets.delete(s);
    });
    if (bytes > 0) s.write(Buffer.alloc(bytes, 0x61));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, seen };
}

interface Received {
  data: Buffer;
  error: string | undefined;
  /** A clean end (FIN) from the peer. */
  ended: boolean;
  ms: number;
}

/** Connects, writes `payload` (if any), collects until close, error, `expect` bytes or `timeoutMs`. */
function receive(addr: string, opts: { payload?: Buffer; expect?: number; timeoutMs?: number } = {}): Promise<Received> {
  const [host, port] = splitAddr(addr);
  const t0 = performance.now();
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    let ended = false;
    let error: string | undefined;
    const s = net.connect({ host, port });
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(got), error, ended, ms: performance.now() - t0 });
    };
    const timer = setTimeout(done, opts.timeoutMs ?? 5_000);
    s.on('connect', () => opts.payload && s.write(opts.payload));
    s.on('data', (d: Buffer) => {
      got.push(d);
      if (opts.expect !== undefined && Buffer.concat(got).length >= opts.expect) done();
    });
    s.on('end', () => (ended = true));
    s.on('error', (e: NodeJS.ErrnoException) => (error ??= e.code));
    s.on('close', done);
  });
}

describe('fault proxy', () => {
  it('forwards both ways and counts connections and bytes; close() leaves nothing open', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    const payload = Buffer.alloc(100_000, 0x62);
    const r = await tcpExchange(p.endpoint, [payload], payload.length);
    expect(r.error).toBeUndefined();
    expect(r.data.equals(payload)).toBe(true);
    await waitFor(() => p.stats.bytesDown === payload.length, { what: 'the echo counted down' });
    expect(p.stats).toMatchObject({ connections: 1, bytesUp: payload.length, bytesDown: payload.length, resets: 0, refused: 0 });
    await waitFor(() => p.stats.open === 0, { what: 'the connection to be forgotten' });
    await p.close();
    expect(await connectRefused(p.endpoint)).toBe(true);
  });

  it('passes a clean end (FIN) from the target on as a clean end', async () => {
    const srv = net.createServer((s) => {
      s.on('error', () => undefined);
      s.end('bye');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => srv.close(() => r())));
    const p = await proxy(`127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
    const r = await receive(p.endpoint);
    expect(r).toMatchObject({ error: undefined, ended: true });
    expect(r.data.toString()).toBe('bye');
  });

  it('adds latency per chunk, in both directions or one', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    p.latency(200);
    const both = await receive(p.endpoint, { payload: Buffer.from('ping'), expect: 4 });
    expect(both.data.toString()).toBe('ping');
    // A lower bound only: on a loaded machine it can take longer, never shorter.
    expect(both.ms).toBeGreaterThanOrEqual(390);
    p.latency(0, 'up');
    const down = await receive(p.endpoint, { payload: Buffer.from('pong'), expect: 4 });
    expect(down.data.toString()).toBe('pong');
    expect(down.ms).toBeGreaterThanOrEqual(190);
    p.latency(0);
    const none = await receive(p.endpoint, { payload: Buffer.from('x'), expect: 1 });
    expect(none.ms).toBeLessThan(190 * 5); // generous: only "not delayed by the removed latency" on a busy 2-core box
  });

  it('caps bandwidth in bytes per second and pushes back on the sender', async () => {
    const s = await sender(60_000);
    const p = await proxy(s.address);
    p.bandwidth(40_000, 'down');
    const r = await receive(p.endpoint, { expect: 60_000, timeoutMs: 15_000 });
    expect(r.data.length).toBe(60_000);
    // 60 kB at 40 kB/s: at least 1.5 s (lower bound only).
    expect(r.ms).toBeGreaterThanOrEqual(1_400);
  });

  it('resets (RST) after exactly N bytes of the response: the client sees N bytes then ECONNRESET, the target a reset too', async () => {
    const s = await sender(10_000);
    const p = await proxy(s.address);
    p.resetAt({ at: 1_234 });
    const r = await receive(p.endpoint);
    expect(r.data.length).toBe(1_234);
    expect(r.error).toBe('ECONNRESET');
    expect(r.ended).toBe(false);
    expect(p.stats.resets).toBe(1);
    await waitFor(() => s.seen[0]?.closed === true, { what: 'the target side closed' });
    expect(s.seen[0].error).toBe('ECONNRESET');
  });

  it('resets after N bytes of the request (direction up): the target sees exactly N bytes', async () => {
    const s = await sender(0);
    const p = await proxy(s.address);
    p.resetAt({ at: 3_000, direction: 'up' });
    const r = await receive(p.endpoint, { payload: Buffer.alloc(8_000, 0x63) });
    expect(r.error).toBe('ECONNRESET');
    await waitFor(() => s.seen[0]?.closed === true, { what: 'the target side closed' });
    expect(s.seen[0]).toMatchObject({ bytes: 3_000, error: 'ECONNRESET' });
  });

  it('a random offset comes from the injected PRNG: the same seed resets at the same byte, within the range', async () => {
    const s = await sender(20_000);
    const offsets: number[] = [];
    for (const seed of [7, 7, 8]) {
      const p = await proxy(s.address, { random: seededRandom(seed) });
      p.resetAt({ at: 'random', within: [100, 10_000] });
      const r = await receive(p.endpoint);
      expect(r.error).toBe('ECONNRESET');
      offsets.push(r.data.length);
    }
    expect(offsets[0]).toBe(offsets[1]);
    expect(offsets[2]).not.toBe(offsets[0]);
    for (const o of offsets) expect(o).toBeGreaterThanOrEqual(100);
    for (const o of offsets) expect(o).toBeLessThan(10_000);
  });

  it('how: fin closes cleanly after N bytes (a process that exits mid-response)', async () => {
    const s = await sender(10_000);
    const p = await proxy(s.address);
    p.resetAt({ at: 500, how: 'fin' });
    const r = await receive(p.endpoint);
    expect(r).toMatchObject({ error: undefined, ended: true });
    expect(r.data.length).toBe(500);
    expect(p.stats.resets).toBe(0);
  });

  it('black hole: accepts and reads, never forwards or answers', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    p.blackhole();
    const r = await receive(p.endpoint, { payload: Buffer.alloc(5_000), timeoutMs: 500 });
    expect(r.data.length).toBe(0);
    expect(r.error).toBeUndefined();
    expect(r.ended).toBe(false);
    expect(e.bytes()).toBe(0);
    expect(p.stats.droppedUp).toBe(5_000);
    expect(p.stats.connections).toBe(1);
  });

  it('black hole mid-stream: forwards the first N bytes of the response, then nothing, and keeps the connection open', async () => {
    const s = await sender(10_000);
    const p = await proxy(s.address);
    p.blackhole({ direction: 'down', afterBytes: 700 });
    const r = await receive(p.endpoint, { timeoutMs: 500 });
    expect(r.data.length).toBe(700);
    expect(r.ended).toBe(false);
    expect(r.error).toBeUndefined();
    expect(p.stats.droppedDown).toBe(10_000 - 700);
  });

  it('refuses new connections (listener closed, destroyed, reset) and accepts again on the same port after heal', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    const endpoint = p.endpoint;
    await p.refuse('close');
    expect(await connectRefused(endpoint)).toBe(true);
    await p.heal();
    expect(p.endpoint).toBe(endpoint);
    expect((await receive(endpoint, { payload: Buffer.from('a'), expect: 1 })).data.toString()).toBe('a');

    await p.refuse('destroy');
    const destroyed = await receive(endpoint, { payload: Buffer.from('b'), timeoutMs: 2_000 });
    expect(destroyed.data.length).toBe(0);
    expect(destroyed.ended || destroyed.error !== undefined).toBe(true);
    await p.refuse('reset');
    const reset = await receive(endpoint, { payload: Buffer.from('c'), timeoutMs: 2_000 });
    expect(reset.error).toBe('ECONNRESET');
    expect(p.stats.refused).toBe(2);
    await p.heal();
    expect((await receive(endpoint, { payload: Buffer.from('d'), expect: 1 })).data.toString()).toBe('d');
  });

  it('faults per connection: only the connection told is delayed, and onConnection sets faults before any byte', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    let n = 0;
    p.onConnection((c) => {
      if (++n === 2) c.resetAt({ at: 0 });
    });
    const first = await receive(p.endpoint, { payload: Buffer.from('one'), expect: 3 });
    expect(first.data.toString()).toBe('one');
    const second = await receive(p.endpoint, { payload: Buffer.from('two'), timeoutMs: 2_000 });
    expect(second.data.length).toBe(0);
    expect(second.error).toBe('ECONNRESET');
    p.onConnection(undefined);

    // Two live connections; latency on one of them only.
    const [host, port] = splitAddr(p.endpoint);
    const a = net.connect({ host, port });
    const b = net.connect({ host, port });
    closers.push(async () => void (a.destroy(), b.destroy()));
    await waitFor(() => p.connections().length === 2, { what: 'two open connections' });
    const [ca] = p.connections();
    ca.latency(400);
    const rtt = (s: net.Socket) => new Promise<number>((resolve) => {
      const t0 = performance.now();
      s.once('data', () => resolve(performance.now() - t0));
      s.write('x');
    });
    const [slow, fast] = await Promise.all([rtt(a), rtt(b)]);
    expect(slow).toBeGreaterThanOrEqual(790);
    expect(fast).toBeLessThan(slow);
    ca.heal();
    expect(await rtt(a)).toBeLessThan(790);
  });

  it('heal clears latency, caps and black holes on live connections; resetAll resets every open connection', async () => {
    const e = await echo();
    const p = await proxy(e.address);
    const [host, port] = splitAddr(p.endpoint);
    const s = net.connect({ host, port });
    const errors: string[] = [];
    s.on('error', (err: NodeJS.ErrnoException) => errors.push(err.code ?? err.message));
    await new Promise((r) => s.once('connect', r));
    p.blackhole();
    s.write('lost');
    await waitFor(() => p.stats.droppedUp === 4, { what: 'the write dropped' });
    await p.heal();
    const back = new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));
    s.write('back');
    expect(await back).toBe('back');
    p.resetAll();
    await new Promise((r) => s.once('close', r));
    expect(errors).toEqual(['ECONNRESET']);
    expect(p.stats.resets).toBe(1);
  });

  it('closes the client connection when the target refuses', async () => {
    const e = await echo();
    const dead = e.address;
    await e.close();
    const p = await proxy(dead);
    const r = await receive(p.endpoint, { payload: Buffer.from('x'), timeoutMs: 2_000 });
    expect(r.data.length).toBe(0);
    expect(r.ended || r.error !== undefined).toBe(true);
    await waitFor(() => p.stats.open === 0, { what: 'the connection forgotten' });
  });
});
