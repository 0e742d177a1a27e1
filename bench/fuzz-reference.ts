// The reference reading of a fuzzed input for bench/fuzz.ts: Node's own HTTP/1.1 parser, configured like the sidecar's listener, in process. What it delimits is all the sidecar may forward.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { LIMITS, splitTarget } from '../proxy/listener.js';
import { normalizePath } from '../proxy/path.js';
import { isWebSocketUpgrade, replayWithoutUpgrade } from '../proxy/upgrade.js';
import { MeshError } from '../api/errors.js';

export interface ReferenceRequest {
  readonly method: string;
  readonly url: string;
  readonly host: string | undefined;
}

export interface Reference {
  /** The requests the parser delimited, in order (the canary last, when it got that far). */
  readonly requests: readonly ReferenceRequest[];
  /** The canary was parsed as a request of its own: the input ended on a request boundary and left the connection open. */
  readonly canaryAnswered: boolean;
}

export interface ReferenceParser {
  read(bytes: Buffer, canary: Buffer, canaryPath: string): Promise<Reference>;
  close(): Promise<void>;
}

/**
 * A plain node:http server with the listener's limits and an answer to every request once its body ended. Upgrades
 * are read as the sidecar reads them (upgrade.ts): a WebSocket handshake is the last request read on its connection,
 * any other upgrade is replayed as a plain request and the bytes after it parsed as the next. The client writes the
 * input and the canary, then half-closes, so an incomplete request ends in a parse error rather than a wait.
 */
export async function startReference(): Promise<ReferenceParser> {
  const collectors = new Map<number, ReferenceRequest[]>();
  const server = http.createServer({ maxHeaderSize: LIMITS.maxHeaderBytes, insecureHTTPParser: false, requireHostHeader: false });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    collectors.get(req.socket.remotePort ?? -1)?.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host });
    req.on('error', () => undefined);
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  // An expectation other than 100-continue: Node answers 417 itself, as it does in the sidecar, and that is a request too.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    collectors.get(req.socket.remotePort ?? -1)?.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host });
    res.writeHead(417);
    res.end();
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    if (!isWebSocketUpgrade(req)) return replayWithoutUpgrade(server, req, socket, head);
    collectors.get(socket.remotePort ?? -1)?.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host });
    socket.destroy();
  });
  server.on('connect', (_req, socket: Socket) => socket.destroy());
  server.on('clientError', (_err, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    read: (bytes, canary, canaryPath) => new Promise<Reference>((resolve) => {
      const sock = net.connect(port, '127.0.0.1');
      const requests: ReferenceRequest[] = [];
      const finish = (): void => {
        clearTimeout(timer);
        collectors.delete(sock.localPort ?? -2);
        sock.destroy();
        resolve({ requests, canaryAnswered: requests.some((r) => r.url === canaryPath) });
      };
      // An Expect or upgrade quirk could leave the reference waiting: its reading so far is the reading.
      const timer = setTimeout(finish, 2_000);
      sock.on('connect', () => {
        collectors.set(sock.localPort ?? -2, requests);
        sock.end(Buffer.concat([bytes, canary]));
      });
      sock.on('data', () => undefined);
      sock.on('error', () => undefined);
      sock.on('close', finish);
    }),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** The target the sidecar forwards for this request, as the listener normalizes it; undefined if it refuses the target. */
export function forwardablePath(r: ReferenceRequest): string | undefined {
  const t = splitTarget(r.url, r.host);
  if (t instanceof MeshError) return undefined;
  const n = normalizePath(t.pathAndQuery);
  return n.ok ? n.path + n.query : undefined;
}

/** The targets the sidecar may forward for these requests. */
export function forwardablePaths(requests: readonly ReferenceRequest[]): Set<string> {
  const out = new Set<string>();
  for (const r of requests) {
    const p = forwardablePath(r);
    if (p !== undefined) out.add(p);
  }
  return out;
}
