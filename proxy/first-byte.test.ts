// Unit tests of the front doors' first-byte wait: which sockets a drain closes.
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FirstByteWait } from './first-byte.js';

const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A listener handing each accepted socket to `onSocket`, and one client connection per call of `dial`. */
async function pair(onSocket: (s: net.Socket) => void): Promise<() => Promise<net.Socket>> {
  const server = net.createServer(onSocket);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return () => new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', () => resolve(c));
    c.on('error', () => undefined);
  });
}

const closed = (s: net.Socket): Promise<void> => new Promise((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));

describe('FirstByteWait', () => {
  it('closeAll closes the sockets still waiting for a byte, not those that spoke', async () => {
    const wait = new FirstByteWait();
    const accepted: net.Socket[] = [];
    const dial = await pair((s) => {
      accepted.push(s);
      const heard = wait.hold(s, 60_000);
      s.once('data', () => heard());
    });
    const quiet = await dial();
    const spoke = await dial();
    spoke.write('x');
    await new Promise<void>((resolve) => {
      const check = (): void => void (accepted.length === 2 && accepted[1].bytesRead > 0 ? resolve() : setTimeout(check, 5));
      check();
    });
    wait.closeAll();
    await closed(quiet);
    expect(accepted[0].destroyed).toBe(true);
    expect(accepted[1].destroyed, 'a socket that sent a byte is no longer held').toBe(false);
    spoke.destroy();
    quiet.destroy();
  });

  it('closes a socket silent past its time', async () => {
    const wait = new FirstByteWait();
    const accepted: net.Socket[] = [];
    const dial = await pair((s) => {
      accepted.push(s);
      wait.hold(s, 100);
    });
    const c = await dial();
    await closed(c);
    expect(accepted[0].destroyed).toBe(true);
  });
});
