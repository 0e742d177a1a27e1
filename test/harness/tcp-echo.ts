// Test harness: a TCP echo app on 127.0.0.1:0 that counts connections and bytes, and TCP/TLS clients that write with backpressure and collect the reply.
import net from 'node:net';
import tls from 'node:tls';
import { splitAddr } from './client.js';

export interface TcpEcho {
  /** "127.0.0.1:PORT" */
  readonly address: string;
  /** Connections accepted so far. */
  readonly connections: () => number;
  /** Bytes received so far (all connections). */
  readonly bytes: () => number;
  close(): Promise<void>;
}

export async function startTcpEcho(): Promise<TcpEcho> {
  let connections = 0;
  let bytes = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('data', (d: Buffer) => (bytes += d.length));
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    connections: () => connections,
    bytes: () => bytes,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface TcpOutcome {
  /** Everything received before the peer closed, or until `expect` bytes arrived. */
  readonly data: Buffer;
  /** The peer closed the connection (rather than us, after `expect` bytes). */
  readonly closedByPeer: boolean;
  readonly error: string | undefined;
}

/**
 * Connects (plain TCP, or `tlsOptions` for a TLS client), writes `chunks` one by one honouring backpressure, and
 * collects the reply until `expect` bytes arrived, the peer closed, or `timeoutMs` passed.
 */
export function tcpExchange(addr: string, chunks: readonly Buffer[], expect: number, timeoutMs = 15_000, tlsOptions?: tls.ConnectionOptions): Promise<TcpOutcome> {
  const [host, port] = splitAddr(addr);
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    let n = 0;
    let settled = false;
    let error: string | undefined;
    const socket = tlsOptions ? tls.connect({ host, port, ...tlsOptions }) : net.connect({ host, port });
    const finish = (closedByPeer: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ data: Buffer.concat(got), closedByPeer, error });
    };
    const timer = setTimeout(() => {
      error ??= `timed out after ${timeoutMs}ms with ${n} of ${expect} bytes`;
      finish(false);
    }, timeoutMs);
    socket.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= expect) finish(false);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code ?? err.message));
    socket.on('close', () => finish(true));
    const write = async () => {
      for (const c of chunks) {
        if (settled || socket.destroyed) return;
        if (!socket.write(c)) await new Promise((r) => socket.once('drain', r));
      }
    };
    socket.once(tlsOptions ? 'secureConnect' : 'connect', () => void write());
  });
}
