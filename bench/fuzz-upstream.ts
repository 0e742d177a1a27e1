// A recording upstream for the HTTP/1.1 attack corpus and the fuzzer: notes each request as soon as its headers arrive (so one cut off mid-body still counts) and answers with what it saw.
import http, { type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface SeenRequest {
  readonly method: string;
  /** The request target exactly as received. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawHeaders: readonly string[];
  /** Body bytes received so far. */
  bodyBytes: number;
  /** The body ended as its framing said; false while it arrives, or for good when it was cut off. */
  complete: boolean;
  readonly at: number;
}

export interface RecordingUpstream {
  /** "127.0.0.1:PORT" */
  readonly address: string;
  /** Requests in arrival order (the most recent `keep` of them). */
  readonly seen: SeenRequest[];
  /** Called for every request when its headers arrive. */
  onRequest(fn: (r: SeenRequest) => void): void;
  /** Called when the upstream's own parser refuses what it was sent (a proxy must never forward that). */
  onParseError(fn: (code: string, packet: string) => void): void;
  clear(): void;
  close(): Promise<void>;
}

/**
 * The answer names what arrived, so a client can tell whose response it got: `{"path","method","bodyBytes"}`, sent
 * once the body has ended. Upgrade requests are answered like any other (no 'upgrade' listener): an upstream that
 * refuses the upgrade.
 */
export async function startRecordingUpstream(opts: { keep?: number } = {}): Promise<RecordingUpstream> {
  const keep = opts.keep ?? Infinity;
  const seen: SeenRequest[] = [];
  const listeners: ((r: SeenRequest) => void)[] = [];
  const parseErrors: ((code: string, packet: string) => void)[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const rec: SeenRequest = {
      method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders,
      bodyBytes: 0, complete: false, at: Date.now(),
    };
    seen.push(rec);
    if (seen.length > keep) seen.splice(0, seen.length - keep);
    for (const fn of listeners) fn(rec);
    req.on('data', (c: Buffer) => (rec.bodyBytes += c.length));
    req.on('error', () => undefined);
    req.on('end', () => {
      rec.complete = true;
      const text = JSON.stringify({ path: rec.url, method: rec.method, bodyBytes: rec.bodyBytes });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, s: Socket) => {
    // A connection the proxy closes between requests is no parse error.
    if (err.code !== 'ECONNRESET' && err.code !== 'HPE_INVALID_EOF_STATE') {
      for (const fn of parseErrors) fn(err.code ?? err.message, err.rawPacket?.subarray(0, 400).toString('latin1') ?? '');
    }
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    seen,
    onRequest: (fn) => void listeners.push(fn),
    onParseError: (fn) => void parseErrors.push(fn),
    clear: () => void seen.splice(0),
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  };
}
