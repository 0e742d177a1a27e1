// The soak's upstream app: small, large, echo and slow answers, and a connection reset on the first try of a marked request.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const SMALL = Buffer.alloc(1024, 'a');
const CHUNK = Buffer.alloc(16 * 1024, 'b');
/** Request ids already reset once: bounded, so a long soak does not grow it (ids are never reused by the load). */
const MAX_REMEMBERED = 10_000;

export interface SoakApp {
  readonly address: string;
  /** Resets done on purpose (first try of each /reset-once request). */
  readonly resets: () => number;
  close(): Promise<void>;
}

export async function startSoakApp(): Promise<SoakApp> {
  const resetOnce = new Set<string>();
  let resets = 0;
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/small')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL.length });
      res.end(SMALL);
    } else if (url.startsWith('/large')) {
      // 256 KiB in 16 chunks, streamed: exercises backpressure through both sidecars.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': CHUNK.length * 16 });
      let n = 0;
      const more = () => {
        while (n < 16) {
          n++;
          if (!res.write(CHUNK)) return void res.once('drain', more);
        }
        res.end();
      };
      more();
    } else if (url.startsWith('/echo')) {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
        res.end(body);
      });
    } else if (url.startsWith('/slow')) {
      const t = setTimeout(() => res.end('slow\n'), 200);
      res.on('close', () => clearTimeout(t));
    } else if (url.startsWith('/reset-once')) {
      // The first try dies with a TCP reset before any response byte: the sidecar must retry it (GET, "reset" is a
      // default retry condition), so the load generator never sees this fault.
      const id = String(req.headers['x-request-id'] ?? '');
      if (!resetOnce.has(id)) {
        resetOnce.add(id);
        if (resetOnce.size > MAX_REMEMBERED) resetOnce.delete(resetOnce.values().next().value!);
        resets++;
        req.socket.resetAndDestroy();
        return;
      }
      res.end('ok\n');
    } else {
      res.writeHead(404).end();
    }
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    resets: () => resets,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
