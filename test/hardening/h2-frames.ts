// Test helper: hand-built HTTP/2 frames (RFC 9113 §4–6) and HPACK representations (RFC 7541, no Huffman), plus a small
// reader that records what the server sent back (GOAWAY, RST_STREAM, SETTINGS/PING ACKs, response :status).
import type { Duplex } from 'node:stream';

/** RFC 9113 §3.4: the client connection preface. */
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const T = Object.freeze({
  DATA: 0x0, HEADERS: 0x1, PRIORITY: 0x2, RST_STREAM: 0x3, SETTINGS: 0x4, PUSH_PROMISE: 0x5, PING: 0x6, GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8, CONTINUATION: 0x9,
});

export const F = Object.freeze({ END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4, PADDED: 0x8, PRIORITY: 0x20 });

/** RFC 9113 §7 error codes. */
export const E = Object.freeze({
  NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, INTERNAL_ERROR: 0x2, FLOW_CONTROL_ERROR: 0x3, SETTINGS_TIMEOUT: 0x4,
  STREAM_CLOSED: 0x5, FRAME_SIZE_ERROR: 0x6, REFUSED_STREAM: 0x7, CANCEL: 0x8, COMPRESSION_ERROR: 0x9,
  CONNECT_ERROR: 0xa, ENHANCE_YOUR_CALM: 0xb, INADEQUATE_SECURITY: 0xc, HTTP_1_1_REQUIRED: 0xd,
});

/** RFC 9113 §6.5.2 setting identifiers. */
export const S = Object.freeze({
  HEADER_TABLE_SIZE: 0x1, ENABLE_PUSH: 0x2, MAX_CONCURRENT_STREAMS: 0x3, INITIAL_WINDOW_SIZE: 0x4, MAX_FRAME_SIZE: 0x5,
  MAX_HEADER_LIST_SIZE: 0x6,
});

const ERROR_NAMES = new Map<number, string>(Object.entries(E).map(([k, v]) => [v, k]));

/** "PROTOCOL_ERROR" for 1, "0x42" for codes RFC 9113 does not name. */
export function errorName(code: number): string {
  return ERROR_NAMES.get(code) ?? `0x${code.toString(16)}`;
}

/**
 * One frame: the 9-octet header (§4.1) and the payload. `length` overrides the length field, for frames that lie
 * about their size (the payload written is still `payload`).
 */
export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0), length = payload.length): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

export function settings(entries: readonly (readonly [number, number])[] = []): Buffer {
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    p.writeUInt16BE(id, i * 6);
    p.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(T.SETTINGS, 0, 0, p);
}

export const settingsAck = (): Buffer => frame(T.SETTINGS, F.ACK, 0);

export function headers(streamId: number, block: Buffer, o: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  const flags = (o.endStream ?? true ? F.END_STREAM : 0) | (o.endHeaders ?? true ? F.END_HEADERS : 0);
  return frame(T.HEADERS, flags, streamId, block);
}

export const continuation = (streamId: number, block: Buffer, endHeaders = false): Buffer =>
  frame(T.CONTINUATION, endHeaders ? F.END_HEADERS : 0, streamId, block);

export const data = (streamId: number, payload: Buffer, endStream = false): Buffer =>
  frame(T.DATA, endStream ? F.END_STREAM : 0, streamId, payload);

export function ping(opaque: Buffer = Buffer.alloc(8), ack = false): Buffer {
  return frame(T.PING, ack ? F.ACK : 0, 0, opaque);
}

export function rstStream(streamId: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(T.RST_STREAM, 0, streamId, p);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment & 0x7fffffff);
  return frame(T.WINDOW_UPDATE, 0, streamId, p);
}

export function priority(streamId: number, dependsOn: number, weight = 16, exclusive = false): Buffer {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(((exclusive ? 0x80000000 : 0) | (dependsOn & 0x7fffffff)) >>> 0);
  p[4] = weight - 1;
  return frame(T.PRIORITY, 0, streamId, p);
}

export function goaway(lastStreamId: number, code: number, debug = ''): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(lastStreamId & 0x7fffffff);
  p.writeUInt32BE(code, 4);
  return frame(T.GOAWAY, 0, 0, Buffer.concat([p, Buffer.from(debug)]));
}

// ---- HPACK (RFC 7541), encoder side: raw octet strings only, which every decoder must accept.

/** §5.1: an integer with an N-bit prefix; `flags` fills the high bits of the first octet. */
export function hpackInt(value: number, prefixBits: number, flags = 0): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([flags | value]);
  const out = [flags | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** §5.2: a string literal, H = 0 (not Huffman-coded). */
export function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(b.length, 7), b]);
}

/** §6.1: an indexed field (static table 1–61, dynamic table from 62, newest first). */
export const indexed = (index: number): Buffer => hpackInt(index, 7, 0x80);

/** §6.2.2: literal field without indexing, new name. Nothing enters the decoder's dynamic table. */
export const literal = (name: string, value: string | Buffer): Buffer =>
  Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);

/** §6.2.1: literal field with incremental indexing, new name: the decoder adds it to its dynamic table (index 62). */
export const literalIndexed = (name: string, value: string | Buffer): Buffer =>
  Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);

/** A header block of literals without indexing, in order (pseudo-header fields first, as §8.3 requires). */
export function block(fields: readonly (readonly [string, string | Buffer])[]): Buffer {
  return Buffer.concat(fields.map(([n, v]) => literal(n, v)));
}

/** The pseudo-header fields of a GET to `authority` + `path` over h2c. */
export function getRequest(authority: string, path: string, extra: readonly (readonly [string, string | Buffer])[] = []): Buffer {
  return block([[':method', 'GET'], [':scheme', 'http'], [':authority', authority], [':path', path], ...extra]);
}

// ---- Reader: what the server sent.

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

export interface GoAway {
  readonly lastStreamId: number;
  readonly code: number;
  readonly debug: string;
}

/** RFC 7541 Appendix A: static table entries 8–14 are `:status`. */
const STATIC_STATUS: Record<number, number> = { 8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500 };

function readInt(buf: Buffer, at: number, prefixBits: number): [number, number] {
  const max = (1 << prefixBits) - 1;
  let v = buf[at] & max;
  let i = at + 1;
  if (v < max) return [v, i];
  let shift = 0;
  for (;;) {
    const b = buf[i++];
    v += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return [v, i];
  }
}

/**
 * The `:status` of a response header block when it is the block's first field and either a static-table entry or a
 * literal with a raw (non-Huffman) value, as nghttp2 encodes a connection's first response of each status; else undefined.
 */
export function statusOf(blockBytes: Buffer): number | undefined {
  if (blockBytes.length === 0) return undefined;
  const b = blockBytes[0];
  if (b & 0x80) return STATIC_STATUS[readInt(blockBytes, 0, 7)[0]];
  const prefix = (b & 0xc0) === 0x40 ? 6 : 4;
  const [nameIndex, at] = readInt(blockBytes, 0, prefix);
  if (STATIC_STATUS[nameIndex] === undefined || (blockBytes[at] & 0x80) !== 0) return undefined;
  const [len, start] = readInt(blockBytes, at, 7);
  const n = Number(blockBytes.subarray(start, start + len).toString('latin1'));
  return Number.isInteger(n) ? n : undefined;
}

/** What the server said on one raw connection, as it arrived. */
export interface Observed {
  readonly frames: Frame[];
  goaway: GoAway | undefined;
  /** RST_STREAM code by stream id. */
  readonly resets: Map<number, number>;
  /** Response `:status` by stream id (when statusOf could read it; 0 when it could not). */
  readonly statuses: Map<number, number>;
  settingsAcks: number;
  pingAcks: number;
  /** The server's own SETTINGS (not ACKs) received. */
  serverSettings: number;
  bytesIn: number;
  /** The socket closed (either side); `error` holds a socket error such as ECONNRESET. */
  closed: boolean;
  error: string | undefined;
}

/**
 * Records every frame `socket` delivers. Reading follows the socket's flow: pause() it to play a client that never
 * reads, resume() it to collect what was sent meanwhile.
 */
export function observe(socket: Duplex): Observed {
  const o: Observed = {
    frames: [], goaway: undefined, resets: new Map(), statuses: new Map(), settingsAcks: 0, pingAcks: 0, serverSettings: 0,
    bytesIn: 0, closed: false, error: undefined,
  };
  let buf: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    o.bytesIn += chunk.length;
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const f: Frame = { type: buf[3], flags: buf[4], streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) };
      buf = buf.subarray(9 + len);
      record(o, f);
    }
  });
  socket.on('error', (err: NodeJS.ErrnoException) => { o.error ??= err.code ?? err.message; });
  socket.on('close', () => { o.closed = true; });
  return o;
}

function record(o: Observed, f: Frame): void {
  // Keep the record small: a flood's thousands of ACKs are counted, not stored.
  if (f.type !== T.PING && f.type !== T.SETTINGS && o.frames.length < 1_000) o.frames.push(f);
  switch (f.type) {
    case T.GOAWAY:
      o.goaway = { lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString('latin1') };
      break;
    case T.RST_STREAM:
      o.resets.set(f.streamId, f.payload.readUInt32BE(0));
      break;
    case T.SETTINGS:
      if (f.flags & F.ACK) o.settingsAcks++;
      else o.serverSettings++;
      break;
    case T.PING:
      if (f.flags & F.ACK) o.pingAcks++;
      break;
    case T.HEADERS:
      if (!o.statuses.has(f.streamId)) o.statuses.set(f.streamId, statusOf(headerBlockOf(f)) ?? 0);
      break;
  }
}

/** A HEADERS frame's header block fragment, without padding and priority fields. */
function headerBlockOf(f: Frame): Buffer {
  let p = f.payload;
  let pad = 0;
  if (f.flags & F.PADDED) {
    pad = p[0];
    p = p.subarray(1);
  }
  if (f.flags & F.PRIORITY) p = p.subarray(5);
  return p.subarray(0, p.length - pad);
}

/** One line for messages: "GOAWAY PROTOCOL_ERROR (last 3) 'debug'", or how the connection ended without one. */
export function describe(o: Observed): string {
  const parts: string[] = [];
  if (o.goaway) parts.push(`GOAWAY ${errorName(o.goaway.code)} (last stream ${o.goaway.lastStreamId})${o.goaway.debug ? ` "${o.goaway.debug}"` : ''}`);
  for (const [id, code] of o.resets) parts.push(`RST_STREAM ${id} ${errorName(code)}`);
  for (const [id, status] of o.statuses) parts.push(`HEADERS ${id} :status ${status || '?'}`);
  if (o.settingsAcks) parts.push(`${o.settingsAcks} SETTINGS ACK`);
  if (o.pingAcks) parts.push(`${o.pingAcks} PING ACK`);
  parts.push(o.closed ? `closed${o.error ? ` (${o.error})` : ''}` : 'open');
  return parts.join(', ');
}
