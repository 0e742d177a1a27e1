// Test harness: a WebSocket app on 127.0.0.1:0 (the `ws` package): echoes on any path, refuses upgrades under /refuse with 403, records every handshake, request and stray byte.
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';

export interface SeenRequest {
  readonly kind: 'request' | 'upgrade';
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
}

export interface WsApp {
  /** "127.0.0.1:PORT" */
  readonly address: string;
  /** Every plain request and every upgrade handshake, in arrival order. */
  readonly seen: SeenRequest[];
  /** Bytes that reached the app after a refused handshake's request head (there must never be any). */
  readonly afterRefusal: () => string;
  clear(): void;
  close(): Promise<void>;
}

export async function startWsApp(): Promise<WsApp> {
  const seen: SeenRequest[] = [];
  let afterRefusal = '';
  const sockets = new Set<Socket>();
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  const server = http.createServer((req, res) => {
    seen.push({ kind: 'request', method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => res.end(JSON.stringify({ url: req.url, upgrade: req.headers.upgrade ?? null })));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push({ kind: 'upgrade', method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (req.url?.startsWith('/refuse')) {
      afterRefusal += head.toString('latin1');
      socket.on('data', (d: Buffer) => (afterRefusal += d.toString('latin1')));
      socket.on('error', () => undefined);
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\nrefused');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    seen,
    afterRefusal: () => afterRefusal,
    clear() {
      seen.length = 0;
      afterRefusal = '';
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      wss.close();
      await new Promise((r) => server.close(r));
    },
  };
}
