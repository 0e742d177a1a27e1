// The session half of the HTTP/2 field check against a real node:http2 server: which requests it marks, the cap on
// flagged streams nghttp2 never opens, and the GOAWAY written past node:http2.
import http2 from 'node:http2';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { bindFieldGuard, connectGuarded, malformedRequest, sendGoaway, type GuardedSession } from './h2-field-guard.js';
import { E, PREFACE, block, getRequest, headers, observe, settings } from '../test/hardening/h2-frames.js';
import { waitFor } from '../test/harness/wait.js';

interface Rig {
  port: number;
  /** Per request path: whether malformedRequest() said the field check flagged it. */
  seen: Map<string, boolean>;
  states: GuardedSession[];
  close(): void;
}

const open: Rig[] = [];
afterEach(() => {
  for (const r of open.splice(0)) r.close();
});

/** A node:http2 server fed through connectGuarded, as the sidecar's listeners do, answering 200 to everything. */
async function rig(): Promise<Rig> {
  const seen = new Map<string, boolean>();
  const states: GuardedSession[] = [];
  const h2 = http2.createServer();
  h2.on('session', (session) => {
    const state = bindFieldGuard(session, { reset: () => undefined, control: () => undefined });
    if (state) states.push(state);
  });
  h2.on('stream', (stream, headersIn) => {
    seen.set(String(headersIn[':path']), malformedRequest(stream));
    stream.respond({ ':status': 200 });
    stream.end();
  });
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    connectGuarded(h2, socket);
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const r: Rig = {
    port: (tcp.address() as net.AddressInfo).port,
    seen,
    states,
    close() {
      for (const s of sockets) s.destroy();
      tcp.close();
      h2.close();
    },
  };
  open.push(r);
  return r;
}

/**
 * HEADERS on streams 1, 3, 5, … each with a malformed field and no :method: nghttp2 resets each itself and never
 * emits it, so no later request prunes its flag.
 */
function refusedStreams(n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const id = 1 + 2 * i;
    return headers(id, block([[':scheme', 'http'], [':path', `/x/${id}`], [':authority', 'svc'], ['x-bad', 'a\rb']]), { endStream: true });
  });
}

async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  return socket;
}

describe('connectGuarded and malformedRequest', () => {
  it('marks exactly the requests whose header block held a malformed field', async () => {
    const r = await rig();
    const socket = await connect(r.port);
    const seen = observe(socket);
    socket.write(Buffer.concat([
      PREFACE, settings(),
      headers(1, getRequest('svc', '/good-1'), { endStream: true }),
      headers(3, getRequest('svc', '/bad-3', [['x-inject', 'a\r\nx-evil: 1']]), { endStream: true }),
      headers(5, getRequest('svc', '/good-5'), { endStream: true }),
      headers(7, getRequest('svc', '/bad-7', [['x-nul', 'a\0b']]), { endStream: true }),
    ]));
    await waitFor(() => r.seen.size === 4 && seen.statuses.size === 4, { timeoutMs: 5_000, what: 'four answers' });
    expect(Object.fromEntries(r.seen)).toEqual({ '/good-1': false, '/bad-3': true, '/good-5': false, '/bad-7': true });
    expect(r.states).toHaveLength(1);
    expect(r.states[0].pending.size).toBe(0);
    socket.destroy();
  });

  it('ends the session with ENHANCE_YOUR_CALM after 128 flagged streams nghttp2 never opened', async () => {
    const r = await rig();
    const socket = await connect(r.port);
    const seen = observe(socket);
    socket.write(Buffer.concat([PREFACE, settings(), ...refusedStreams(129)]));
    await waitFor(() => seen.goaway !== undefined || seen.closed, { timeoutMs: 5_000, what: 'GOAWAY or close' });
    expect(seen.goaway?.code).toBe(E.ENHANCE_YOUR_CALM);
    expect(r.seen.size).toBe(0);
    socket.destroy();
  });

  it('keeps fewer flagged streams than the cap without ending the session', async () => {
    const r = await rig();
    const socket = await connect(r.port);
    const seen = observe(socket);
    // A good request after them: it is served, and every flag below its stream id is dropped.
    socket.write(Buffer.concat([PREFACE, settings(), ...refusedStreams(100), headers(201, getRequest('svc', '/after'), { endStream: true })]));
    await waitFor(() => seen.statuses.has(201), { timeoutMs: 5_000, what: 'the answer to stream 201' });
    expect(seen.goaway).toBeUndefined();
    expect(r.seen.get('/after')).toBe(false);
    expect(r.states[0].pending.size).toBe(0);
    socket.destroy();
  });
});

describe('sendGoaway', () => {
  it('writes GOAWAY with the last stream the guard saw, straight to the peer\'s socket', async () => {
    const r = await rig();
    const socket = await connect(r.port);
    const seen = observe(socket);
    socket.write(Buffer.concat([PREFACE, settings(), headers(1, getRequest('svc', '/one'), { endStream: true }), headers(3, getRequest('svc', '/three'), { endStream: true })]));
    await waitFor(() => seen.statuses.size === 2, { timeoutMs: 5_000, what: 'two answers' });
    sendGoaway(r.states[0], E.INTERNAL_ERROR);
    await waitFor(() => seen.goaway !== undefined, { timeoutMs: 5_000, what: 'GOAWAY' });
    expect(seen.goaway).toMatchObject({ lastStreamId: 3, code: E.INTERNAL_ERROR });
    socket.destroy();
  });

  it('writes nothing once the socket is gone', async () => {
    const r = await rig();
    const socket = await connect(r.port);
    socket.write(Buffer.concat([PREFACE, settings()]));
    await waitFor(() => r.states.length === 1, { timeoutMs: 5_000, what: 'the session' });
    const state = r.states[0];
    state.raw.destroy();
    const write = state.raw.write.bind(state.raw);
    let writes = 0;
    state.raw.write = ((...args: Parameters<typeof write>) => { writes++; return write(...args); }) as typeof state.raw.write;
    sendGoaway(state, E.INTERNAL_ERROR);
    await new Promise((resolve) => process.nextTick(resolve));
    expect(writes).toBe(0);
    socket.destroy();
  });
});
