// Free loopback ports for programs that cannot listen on port 0 and report back (etcd, nginx, prometheus, mesh up's children).
import net from 'node:net';

/**
 * `n` free loopback ports, held together until all are chosen so they differ. The kernel may hand one out again before
 * the program binds it; that race is as small as the window between here and the program's listen().
 */
export async function reservePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** One port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return (await reservePorts(1))[0];
}
