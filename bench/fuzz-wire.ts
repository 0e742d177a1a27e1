// Raw HTTP/1.1 on the wire for the corpus runner and the fuzzer: a TCP (or TLS) connection that writes bytes as given and reads responses one at a time.
import net from 'node:net';
import tls from 'node:tls';

export interface WireResponse {
  readonly status: number;
  /** Lower-case names; repeated fields joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** The server said it will close after this response (Connection: close, or HTTP/1.0 without keep-alive). */
  readonly closing: boolean;
}

export type ReadResult =
  | { readonly kind: 'response'; readonly response: WireResponse }
  | { readonly kind: 'closed'; readonly leftover: string }
  | { readonly kind: 'timeout'; readonly leftover: string }
  /** Bytes that are not an HTTP/1.x response: the stream is out of step. */
  | { readonly kind: 'garbage'; readonly text: string };

type Parsed = { response: WireResponse; used: number } | 'incomplete' | 'garbage';

const HEAD_END = Buffer.from('\r\n\r\n');
const MAX_HEAD = 64 * 1024;

/** One response at the start of `buf`; `eof` says no more bytes will come (a body framed by the close ends there). */
export function parseResponse(buf: Buffer, eof: boolean, bodiless = false): Parsed {
  const end = buf.indexOf(HEAD_END);
  if (end < 0) {
    const pre = buf.subarray(0, 9).toString('latin1');
    if (!'HTTP/1.1 '.startsWith(pre) && !'HTTP/1.0 '.startsWith(pre)) return 'garbage';
    return buf.length > MAX_HEAD ? 'garbage' : 'incomplete';
  }
  const [statusLine, ...lines] = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) return 'garbage';
  const status = Number(m[2]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i <= 0) return 'garbage';
    const k = line.slice(0, i).trim().toLowerCase();
    const v = line.slice(i + 1).trim();
    headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
  }
  const conn = (headers.connection ?? '').toLowerCase();
  const closing = conn.includes('close') || (m[1] === '0' && !conn.includes('keep-alive'));
  const start = end + 4;
  const done = (bodyEnd: number, body: Buffer): Parsed => ({ response: { status, headers, body, closing }, used: bodyEnd });
  if (bodiless || (status >= 100 && status < 200) || status === 204 || status === 304) return done(start, Buffer.alloc(0));
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const r = dechunk(buf, start);
    return r === 'incomplete' ? (eof ? 'garbage' : 'incomplete') : r === 'garbage' ? 'garbage' : done(r.end, r.body);
  }
  if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (!Number.isSafeInteger(n) || n < 0) return 'garbage';
    if (buf.length - start < n) return eof ? 'garbage' : 'incomplete';
    return done(start + n, buf.subarray(start, start + n));
  }
  return eof ? done(buf.length, buf.subarray(start)) : 'incomplete';
}

function dechunk(buf: Buffer, from: number): { end: number; body: Buffer } | 'incomplete' | 'garbage' {
  const parts: Buffer[] = [];
  let pos = from;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) return 'incomplete';
    const size = parseInt(buf.subarray(pos, eol).toString('latin1'), 16);
    if (!Number.isSafeInteger(size) || size < 0) return 'garbage';
    if (size === 0) {
      // Trailers, then the empty line.
      const tail = buf.indexOf('\r\n\r\n', eol);
      if (buf.subarray(eol, eol + 4).toString('latin1') === '\r\n\r\n') return { end: eol + 4, body: Buffer.concat(parts) };
      return tail < 0 ? 'incomplete' : { end: tail + 4, body: Buffer.concat(parts) };
    }
    if (buf.length < eol + 2 + size + 2) return 'incomplete';
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    pos = eol + 2 + size + 2;
  }
}

export interface OpenOptions {
  /** TLS to the inbound port (mTLS client certificate and CA); plain TCP when absent. */
  readonly tls?: tls.ConnectionOptions;
  readonly connectTimeoutMs?: number;
}

/** One client connection. Reads are buffered from the start, so nothing the server sends is missed between calls. */
export class RawConnection {
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;
  readonly closed: Promise<void>;
  private closedAt = 0;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    sock.on('error', () => undefined);
    this.closed = new Promise((resolve) => sock.once('close', () => {
      this.ended = true;
      this.closedAt = Date.now();
      this.wake?.();
      resolve();
    }));
  }

  static open(addr: string, o: OpenOptions = {}): Promise<RawConnection> {
    const i = addr.lastIndexOf(':');
    const host = addr.slice(0, i);
    const port = Number(addr.slice(i + 1));
    return new Promise((resolve, reject) => {
      const sock = o.tls ? tls.connect({ host, port, ...o.tls }) : net.connect({ host, port });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`connect to ${addr} timed out`));
      }, o.connectTimeoutMs ?? 5_000);
      const conn = new RawConnection(sock);
      sock.once(o.tls ? 'secureConnect' : 'connect', () => {
        clearTimeout(timer);
        resolve(conn);
      });
      sock.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  get isClosed(): boolean {
    return this.ended;
  }

  /** When the connection closed (ms since epoch), 0 while open. */
  get closedAtMs(): number {
    return this.closedAt;
  }

  /** Writes `data` (errors once the server has closed are ignored); resolves when handed to the kernel. */
  write(data: Buffer | string): Promise<void> {
    if (this.sock.destroyed || !this.sock.writable) return Promise.resolve();
    return new Promise((resolve) => this.sock.write(data, () => resolve()));
  }

  /** Writes `data` in pieces of the given sizes (the last one takes the rest), with `gapMs` between them. */
  async writeFragments(data: Buffer, sizes: readonly number[], gapMs = 0): Promise<void> {
    let at = 0;
    for (let i = 0; at < data.length && !this.ended; i++) {
      const n = i < sizes.length ? Math.max(1, sizes[i]) : data.length - at;
      await this.write(data.subarray(at, at + n));
      at += n;
      if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
      else await new Promise((r) => setImmediate(r));
    }
  }

  /** Writes one byte every `everyMs` until done or the server closes; resolves with the number of bytes written. */
  async dribble(data: Buffer, everyMs: number): Promise<number> {
    let i = 0;
    for (; i < data.length && !this.ended; i++) {
      await this.write(data.subarray(i, i + 1));
      await Promise.race([new Promise((r) => setTimeout(r, everyMs)), this.closed]);
    }
    return i;
  }

  /**
   * The next response (1xx included), or what stopped it: the close, the deadline, or bytes that are no response.
   * `bodiless`: the request was HEAD, so a Content-Length is not followed by a body.
   */
  async next(timeoutMs: number, bodiless = false): Promise<ReadResult> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = parseResponse(this.buf, this.ended, bodiless);
      if (p === 'garbage') return { kind: 'garbage', text: this.buf.subarray(0, 200).toString('latin1') };
      if (p !== 'incomplete') {
        this.buf = this.buf.subarray(p.used);
        return { kind: 'response', response: p.response };
      }
      if (this.ended) return { kind: 'closed', leftover: this.buf.subarray(0, 200).toString('latin1') };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: 'timeout', leftover: this.buf.subarray(0, 200).toString('latin1') };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }

  /** The next final response: 1xx interim responses are skipped. */
  async final(timeoutMs: number, bodiless = false): Promise<ReadResult> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.next(Math.max(0, deadline - Date.now()), bodiless);
      if (r.kind !== 'response' || r.response.status >= 200 || r.response.status === 101) return r;
    }
  }

  /** Resolves true once the server has closed, false at the deadline. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    if (this.ended) return true;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.closed.then(() => true), new Promise<boolean>((res) => (timer = setTimeout(() => res(false), timeoutMs)))]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.sock.destroy();
  }
}
