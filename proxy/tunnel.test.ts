import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { TunnelSet, type TunnelSummary } from './tunnel.js';

/** A connected socket pair over loopback: [the side the test holds, the side the tunnel gets]. */
async function pair(): Promise<[net.Socket, net.Socket, () => void]> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [inner] = await accepted;
  await once(client, 'connect').catch(() => undefined);
  return [client, inner, () => server.close()];
}

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** app ↔ [down | tunnel | up] ↔ server: returns the two outer ends and the tunnel's summary promise. */
async function tunnelled(idleTimeoutMs = 60_000) {
  const [app, down, close1] = await pair();
  const [server, up, close2] = await pair();
  cleanups.push(close1, close2, () => app.destroy(), () => server.destroy());
  const set = new TunnelSet();
  const counted = { sent: 0, received: 0 };
  const summary = new Promise<TunnelSummary>((resolve) => {
    set.start(down, up, { idleTimeoutMs, onSent: (n) => (counted.sent += n), onReceived: (n) => (counted.received += n), onClose: resolve });
  });
  return { app, server, set, summary, counted };
}

function read(s: net.Socket, n: number): Promise<Buffer> {
  const got: Buffer[] = [];
  let len = 0;
  return new Promise((resolve) => {
    const on = (d: Buffer) => {
      got.push(d);
      len += d.length;
      if (len >= n) {
        s.off('data', on);
        resolve(Buffer.concat(got));
      }
    };
    s.on('data', on);
  });
}

describe('tunnel', () => {
  it('carries bytes both ways and counts them; a clean close on one side closes the other', async () => {
    const t = await tunnelled();
    const toServer = read(t.server, 5);
    t.app.write('hello');
    expect((await toServer).toString()).toBe('hello');
    const toApp = read(t.app, 3);
    t.server.write('hey');
    expect((await toApp).toString()).toBe('hey');
    expect(t.counted).toEqual({ sent: 5, received: 3 });
    expect(t.set.size).toBe(1);
    t.app.end();
    const s = await t.summary;
    expect(s).toEqual({ sent: 5, received: 3, end: 'closed' });
    await t.set.idle();
    expect(t.set.size).toBe(0);
  });

  it('closes both sides after the idle timeout with no bytes either way', async () => {
    const t = await tunnelled(150);
    const closed = once(t.server, 'close');
    expect((await t.summary).end).toBe('idle-timeout');
    await closed;
  });

  it('a reset on one side destroys the other', async () => {
    const t = await tunnelled();
    const closed = once(t.app, 'close');
    t.server.resetAndDestroy();
    expect((await t.summary).end).toBe('error');
    await closed;
  });

  it('closeAll ends every tunnel (drain deadline)', async () => {
    const t = await tunnelled();
    t.set.closeAll();
    expect((await t.summary).end).toBe('shutdown');
    await t.set.idle();
  });
});
