// The HTTP/2 field check node:http2 leaves out: a stream whose header block holds a field RFC 9113 §8.2.1 forbids is reset.
import http2 from 'node:http2';
import type net from 'node:net';
import { EventEmitter } from 'node:events';
import { HpackCheck, HpackError } from './hpack-check.js';

/*
 * Why this exists: nghttp2 resets a stream carrying CR, LF or NUL in a field value, or a bad field name, unless the
 * application registers on_invalid_header_callback; node:http2 registers one that returns 0 on purpose
 * (src/node_http2.cc, Http2Session::OnInvalidHeader), so the field is dropped and the rest of the request served, and
 * no option changes that. RFC 9113 §8.1.1 and HARDENING.md want the stream reset. So the peer's bytes pass through
 * here on their way to nghttp2: frames are followed, header blocks HPACK-decoded (the dynamic table kept in step), and
 * a stream with a bad field is marked before nghttp2 has even seen it.
 */

/** RFC 9113 §3.4: the client preface, which comes before the first frame. */
const PREFACE_LENGTH = 24;
const FRAME_HEADER = 9;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PUSH_PROMISE = 0x5;
const PING = 0x6;
const GOAWAY = 0x7;
const ACK = 0x1;
const CONTINUATION = 0x9;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
/** SETTINGS_MAX_FRAME_SIZE as node:http2 advertises it (the default): nghttp2 refuses larger frames. */
const MAX_FRAME = 16_384;

/**
 * The largest compressed header block read. The sidecar takes at most 16 KiB of decoded fields (LIMITS.maxHeaderBytes),
 * and a plain literal is barely larger than its field, so a block four times that is a CONTINUATION flood, not a request.
 */
export const MAX_HEADER_BLOCK = 64 * 1024;

export interface FieldGuardEvents {
  /** A header block on `streamId` holds a malformed field. Called before nghttp2 reads that block. */
  malformed(streamId: number): void;
  /** The peer sent a header block over MAX_HEADER_BLOCK: the session should end with ENHANCE_YOUR_CALM. */
  flood(): void;
  /** The peer sent RST_STREAM (rapid reset is counted here, before nghttp2 has started any of those streams' work). */
  reset(): void;
  /** The peer sent a PING or SETTINGS frame that asks for an ACK (the control-frame flood guard counts these). */
  control(): void;
}

/**
 * Follows the frames one peer sends on one connection. When it loses the thread (a frame nghttp2 will refuse and end
 * the session for), it stops looking; nghttp2 ends the session itself.
 */
export class FieldGuard {
  private readonly hpack = new HpackCheck();
  private prefaceLeft = PREFACE_LENGTH;
  private readonly head = Buffer.alloc(FRAME_HEADER);
  private headFill = 0;
  private inPayload = false;
  private left = 0; // payload octets still to come
  private type = 0;
  private flags = 0;
  private streamId = 0;
  private frameParts: Buffer[] = []; // the current HEADERS or CONTINUATION payload
  private blockParts: Buffer[] = []; // the open header block's fragments
  private blockLength = 0;
  private blockStream = 0; // the stream whose header block is open, 0 if none
  private stopped = false;
  private lastStream = 0;

  constructor(private readonly events: FieldGuardEvents) {}

  /** The HPACK dynamic table's size as this guard has it (nghttp2's own: the session's `inflateDynamicTableSize`). */
  get tableSize(): number {
    return this.hpack.tableSize;
  }

  /** The highest stream the peer opened (a HEADERS frame's), for a GOAWAY's last-stream-id. */
  get lastStreamId(): number {
    return this.lastStream;
  }

  /** Whether the guard gave up on this connection (nghttp2 is about to end it). */
  get off(): boolean {
    return this.stopped;
  }

  /** Reads one chunk of what the peer sent, in order. */
  feed(chunk: Buffer): void {
    if (this.stopped) return;
    let i = 0;
    if (this.prefaceLeft > 0) {
      i = Math.min(this.prefaceLeft, chunk.length);
      this.prefaceLeft -= i;
    }
    while (i < chunk.length && !this.stopped) {
      if (!this.inPayload) {
        const n = Math.min(FRAME_HEADER - this.headFill, chunk.length - i);
        chunk.copy(this.head, this.headFill, i, i + n);
        this.headFill += n;
        i += n;
        if (this.headFill === FRAME_HEADER) this.startFrame();
        continue;
      }
      const n = Math.min(this.left, chunk.length - i);
      if (this.collecting()) this.frameParts.push(chunk.subarray(i, i + n));
      i += n;
      this.left -= n;
      if (this.left === 0) this.endFrame();
    }
  }

  private collecting(): boolean {
    return this.type === HEADERS || this.type === CONTINUATION;
  }

  private startFrame(): void {
    const h = this.head;
    this.headFill = 0;
    this.left = h.readUIntBE(0, 3);
    this.type = h[3]!;
    this.flags = h[4]!;
    this.streamId = h.readUInt32BE(5) & 0x7fffffff;
    this.inPayload = true;
    // Frames nghttp2 ends the session for (RFC 9113 §4.2, §6.2, §6.6, §6.10): the guard need not follow what comes after.
    if (this.left > MAX_FRAME || this.type === PUSH_PROMISE) return this.stop();
    if (this.blockStream !== 0 && (this.type !== CONTINUATION || this.streamId !== this.blockStream)) return this.stop();
    if (this.blockStream === 0 && this.type === CONTINUATION) return this.stop();
    if (this.type === RST_STREAM) this.events.reset();
    else if ((this.type === PING || this.type === SETTINGS) && (this.flags & ACK) === 0) this.events.control();
    if (this.left === 0) this.endFrame();
  }

  private endFrame(): void {
    this.inPayload = false;
    if (!this.collecting()) return;
    const payload = this.frameParts.length === 1 ? this.frameParts[0]! : Buffer.concat(this.frameParts);
    this.frameParts = [];
    let fragment = payload;
    if (this.type === HEADERS) {
      let start = 0;
      let pad = 0;
      if (this.flags & PADDED) {
        if (payload.length < 1) return this.stop();
        pad = payload[0]!;
        start = 1;
      }
      if (this.flags & PRIORITY) start += 5;
      if (start + pad > payload.length) return this.stop();
      fragment = payload.subarray(start, payload.length - pad);
      this.blockStream = this.streamId;
      if (this.streamId > this.lastStream) this.lastStream = this.streamId;
    }
    this.blockParts.push(fragment);
    this.blockLength += fragment.length;
    if (this.blockLength > MAX_HEADER_BLOCK) {
      this.stop();
      this.events.flood();
      return;
    }
    if (this.flags & END_HEADERS) this.endBlock();
  }

  private endBlock(): void {
    const block = this.blockParts.length === 1 ? this.blockParts[0]! : Buffer.concat(this.blockParts);
    const streamId = this.blockStream;
    this.blockParts = [];
    this.blockLength = 0;
    this.blockStream = 0;
    let malformed: boolean;
    try {
      malformed = this.hpack.check(block);
    } catch (err) {
      if (err instanceof HpackError) return this.stop(); // nghttp2: COMPRESSION_ERROR, the session ends
      throw err;
    }
    if (malformed) this.events.malformed(streamId);
  }

  private stop(): void {
    this.stopped = true;
    this.frameParts = [];
    this.blockParts = [];
  }
}

/**
 * What node:http2 is given in place of the peer's socket: the socket's own methods, and its reads shown to `onRead`
 * first. node:http2 serves anything without a native handle through its JSStreamSocket, which needs only these
 * members (lib/internal/js_stream_socket.js). Not a stream.Duplex: a Duplex's buffering on both sides cost a bare
 * node:http2 server 13–17 % of its requests/s (h2load, 8 × 10 streams); this costs about what run-to-run noise does.
 */
export class ReadTap extends EventEmitter {
  /** JSStreamSocket refuses object-mode streams by reading this. */
  readonly _readableState = Object.freeze({ objectMode: false });
  readonly readable = true;
  readonly writable = true;

  constructor(readonly socket: net.Socket, onRead: (chunk: Buffer) => void) {
    super();
    // Nothing may be emitted before node:http2 listens (it pauses, listens, then resumes in the same turn).
    socket.pause();
    socket.on('data', (chunk: Buffer) => {
      onRead(chunk);
      this.emit('data', chunk);
    });
    socket.on('end', () => this.emit('end'));
    socket.on('error', (err) => this.emit('error', err));
    socket.on('close', () => this.emit('close'));
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  pause(): this {
    this.socket.pause();
    return this;
  }

  resume(): this {
    this.socket.resume();
    return this;
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  write(chunk: Buffer, done?: (err?: Error | null) => void): boolean {
    return this.socket.write(chunk, done);
  }

  end(done?: () => void): this {
    this.socket.end(done);
    return this;
  }

  destroy(err?: Error): this {
    this.socket.destroy(err);
    return this;
  }
}

/** Malformed streams nghttp2 never emitted (it refused them for another reason) that a session may hold before it ends. */
const MAX_PENDING = 128;

/** What the field check keeps for one session. */
export interface GuardedSession {
  /** The peer's own socket (node:http2 holds only the tap, through its JSStreamSocket). */
  readonly raw: net.Socket;
  readonly guard: FieldGuard;
  /** Streams whose request header block was malformed, until node:http2 emits them. */
  readonly pending: Set<number>;
  /** Streams node:http2 has emitted and not closed: a malformed trailer block resets one of these. */
  readonly open: Map<number, http2.ServerHttp2Stream>;
  session: http2.ServerHttp2Session | undefined;
  /** Counts the peer's RST_STREAM frames (h2-listener.ts: the rapid-reset guard). */
  onReset: () => void;
  /** Counts the peer's PING and SETTINGS frames (h2-listener.ts: the control-frame flood guard). */
  onControl: () => void;
}

const GUARDED = Symbol('mesh.fieldGuard');
type Tagged = http2.ServerHttp2Session & { [GUARDED]?: GuardedSession };

/** The session node:http2 is creating for the socket handed over right now (its 'session' event is synchronous). */
let handing: GuardedSession | undefined;

/** Hands a peer's socket to `server` with the field check in front of nghttp2. */
export function connectGuarded(server: http2.Http2Server, raw: net.Socket): void {
  const state: GuardedSession = {
    raw,
    pending: new Set(),
    open: new Map(),
    session: undefined,
    onReset: () => undefined,
    onControl: () => undefined,
    guard: new FieldGuard({
      reset() {
        state.onReset();
      },
      control() {
        state.onControl();
      },
      malformed(streamId) {
        const open = state.open.get(streamId);
        if (open) open.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        else if (state.pending.add(streamId).size > MAX_PENDING) calm(state, 'malformed header blocks on streams never opened');
      },
      flood() {
        calm(state, `a header block over ${MAX_HEADER_BLOCK} octets`);
      },
    }),
  };
  // The sockets come from our own net listeners (default Nagle on): without this, small HEADERS-only responses wait for
  // the peer's delayed ACK (measured: gRPC unary mean 13.6 ms at 64 streams, sidecars half idle).
  raw.setNoDelay(true);
  const tap = new ReadTap(raw, (chunk) => state.guard.feed(chunk));
  handing = state;
  try {
    server.emit('connection', tap);
  } finally {
    handing = undefined;
  }
}

/**
 * Writes GOAWAY with `code` straight to the peer's socket, after what node:http2 is writing now. node:http2 writes
 * through JSStreamSocket one write at a time, each finished a turn later; a session destroyed meanwhile (nghttp2 found
 * a connection error in the same read) never sends its own GOAWAY, and the peer saw only the socket close (found by
 * test/hardening/h2-abuse.test.ts, WINDOW_UPDATE of 0 on a stream). RFC 9113 §6.8 allows a second GOAWAY if it does.
 */
export function sendGoaway(state: GuardedSession, code: number): void {
  process.nextTick(() => {
    const raw = state.raw;
    if (raw.destroyed || raw.writableEnded) return;
    const frame = Buffer.alloc(FRAME_HEADER + 8);
    frame.writeUIntBE(8, 0, 3);
    frame[3] = GOAWAY;
    frame.writeUInt32BE(state.guard.lastStreamId & 0x7fffffff, FRAME_HEADER);
    frame.writeUInt32BE(code >>> 0, FRAME_HEADER + 4);
    raw.write(frame);
  });
}

function calm(state: GuardedSession, why: string): void {
  if (state.session && !state.session.destroyed) state.session.destroy(new Error(why), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  else state.raw.destroy();
}

/**
 * For the server's 'session' listener: ties the session to the check of the socket being handed over, if any.
 * `counters.reset` is called for each RST_STREAM the peer sends, `counters.control` for each PING or SETTINGS.
 */
export function bindFieldGuard(session: http2.ServerHttp2Session, counters: { reset: () => void; control: () => void }): GuardedSession | undefined {
  const state = handing;
  if (state === undefined) return undefined;
  handing = undefined;
  state.session = session;
  state.onReset = counters.reset;
  state.onControl = counters.control;
  (session as Tagged)[GUARDED] = state;
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    const id = stream.id ?? 0;
    state.open.set(id, stream);
    stream.once('close', () => state.open.delete(id));
  });
  return state;
}

export function guardedSession(session: http2.Http2Session | undefined): GuardedSession | undefined {
  return (session as Tagged | undefined)?.[GUARDED];
}

/** Whether the check found a malformed field in this stream's request header block (asked once per request). */
export function malformedRequest(stream: http2.ServerHttp2Stream): boolean {
  const state = guardedSession(stream.session);
  const streamId = stream.id;
  if (state === undefined || state.pending.size === 0 || streamId === undefined) return false;
  // Stream ids only grow: one below this stream's was never emitted, and never will be.
  for (const id of state.pending) if (id < streamId) state.pending.delete(id);
  return state.pending.delete(streamId);
}
