// Test harness: one direction of a fault-proxy connection (fault-proxy.ts): latency, a bandwidth cap, a black hole and a cut (RST or FIN) at a byte offset, applied in order.
import type net from 'node:net';
import type { Random } from '../../api/clock.js';

/** up: client → target (requests); down: target → client (responses). */
export type Direction = 'up' | 'down';
export type Directions = Direction | 'both';

export interface ResetFault {
  /** The stream whose byte count triggers the reset (default down: mid-response). */
  readonly direction?: Direction;
  /** Bytes of that stream forwarded before the reset, counted from the connection's start; 'random' draws one per connection. */
  readonly at: number | 'random';
  /** Range of a random offset, [min, max) (default [0, 65536)). */
  readonly within?: readonly [number, number];
  /** 'rst' (default): socket.resetAndDestroy() on both sides; 'fin': a clean close of both, as when a process exits. */
  readonly how?: 'rst' | 'fin';
}

/** What a link needs of its connection: stop both links, cut the connection, count bytes. */
export interface LinkOwner {
  freeze(): void;
  cut(how: 'rst' | 'fin', injected: boolean): void;
  readonly proxy: { count(dir: Direction, what: 'bytes' | 'dropped', n: number): void };
}

export interface LinkFaults {
  latencyMs: number;
  bytesPerSecond: number;
  holeAfter: number;
  cut: ResetFault | undefined;
}

export const clean = (): LinkFaults => ({ latencyMs: 0, bytesPerSecond: Infinity, holeAfter: Infinity, cut: undefined });
export const dirs = (d: Directions = 'both'): Direction[] => (d === 'both' ? ['up', 'down'] : [d]);
/** Queued bytes above which the source is paused, so a capped or delayed link pushes back on its sender. */
const HIGH_WATER = 64 * 1024;
/**
 * An injected RST follows the last forwarded byte by this much. Linux reports a reset that arrives while the peer still
 * has unread bytes as a clean EOF (data, then 'end'), so without the pause a "reset after N bytes" could look like a FIN.
 */
const RST_GRACE_MS = 25;

type Piece = { readonly at: number; readonly buf: Buffer } | { readonly at: number; readonly cut: 'rst' | 'fin' };

/** One direction of one connection: reads `src`, applies its faults, writes `dst` in order. */
export class Link {
  f: LinkFaults = clean();
  /** Resolved offset of a pending cut (a random one drawn when the fault was set). */
  cutAt = Infinity;
  read = 0;
  forwarded = 0;
  private queue: Piece[] = [];
  private queuedBytes = 0;
  private lastAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private srcDone: 'end' | 'abort' | undefined;
  private finished = false;

  constructor(
    readonly dir: Direction,
    private readonly src: net.Socket,
    private readonly dst: net.Socket,
    private readonly conn: LinkOwner,
  ) {
    src.on('data', (b: Buffer) => this.onData(b));
    src.on('end', () => this.onSourceDone('end'));
    src.on('close', () => this.onSourceDone('abort'));
    dst.on('drain', () => this.maybeResume());
  }

  /** Sets a cut; one already past its offset fires now (behind what is queued). */
  setCut(fault: ResetFault | undefined, random: Random): void {
    this.f.cut = fault;
    if (!fault) return void (this.cutAt = Infinity);
    const [lo, hi] = fault.within ?? [0, 65_536];
    this.cutAt = fault.at === 'random' ? lo + Math.floor(random() * Math.max(0, hi - lo)) : fault.at;
    if (this.read >= this.cutAt) this.enqueueCut();
  }

  private onData(b: Buffer): void {
    if (this.finished) return;
    const start = this.read;
    this.read += b.length;
    const cutting = this.read >= this.cutAt;
    const upTo = cutting ? Math.max(0, this.cutAt - start) : b.length;
    // Bytes past the hole's offset are read and dropped.
    const keep = Math.max(0, Math.min(upTo, this.f.holeAfter - start));
    this.conn.proxy.count(this.dir, 'dropped', upTo - keep);
    if (keep > 0) this.enqueue(keep === b.length ? b : b.subarray(0, keep));
    if (cutting) this.enqueueCut();
    if (this.queuedBytes > HIGH_WATER || this.dst.writableNeedDrain) this.src.pause();
  }

  private enqueue(buf: Buffer): void {
    const now = performance.now();
    const { latencyMs, bytesPerSecond } = this.f;
    if (this.queue.length === 0 && latencyMs <= 0 && !Number.isFinite(bytesPerSecond)) return this.write(buf);
    // Pieces of ~50 ms each under a cap, so the rate is smooth rather than one burst per chunk.
    const size = Number.isFinite(bytesPerSecond) ? Math.max(1, Math.floor(bytesPerSecond / 20)) : buf.length;
    for (let off = 0; off < buf.length; off += size) {
      const piece = buf.subarray(off, off + size);
      const serialize = Number.isFinite(bytesPerSecond) ? (piece.length / bytesPerSecond) * 1000 : 0;
      this.lastAt = Math.max(now + latencyMs, this.lastAt) + serialize;
      this.queue.push({ at: this.lastAt, buf: piece });
      this.queuedBytes += piece.length;
    }
    this.pump();
  }

  private enqueueCut(): void {
    if (this.finished) return;
    this.finished = true;
    this.lastAt = Math.max(performance.now() + this.f.latencyMs, this.lastAt);
    this.queue.push({ at: this.lastAt, cut: this.f.cut?.how ?? 'rst' });
    this.pump();
  }

  private write(buf: Buffer): void {
    if (this.dst.destroyed) return;
    this.forwarded += buf.length;
    this.conn.proxy.count(this.dir, 'bytes', buf.length);
    this.dst.write(buf);
  }

  /** Delivers every piece that is due, in order; re-arms the timer for the next. */
  pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0].at <= now) {
      const p = this.queue.shift()!;
      if ('cut' in p) {
        // After the bytes before it have left this process, so the peer sees exactly `at` bytes, then the cut.
        this.conn.freeze();
        this.dst.write(Buffer.alloc(0), () => setTimeout(() => this.conn.cut(p.cut, true), p.cut === 'rst' ? RST_GRACE_MS : 0));
        this.queue = [];
        this.queuedBytes = 0;
        return;
      }
      this.queuedBytes -= p.buf.length;
      this.write(p.buf);
    }
    if (this.queue.length > 0) this.timer = setTimeout(() => this.pump(), this.queue[0].at - now);
    else this.onDrained();
    this.maybeResume();
  }

  /** Heal: what is queued goes now. */
  flushNow(): void {
    this.queue = this.queue.map((p) => ({ ...p, at: 0 }));
    this.lastAt = 0;
    this.pump();
  }

  private maybeResume(): void {
    if (this.queuedBytes <= HIGH_WATER / 2 && !this.dst.writableNeedDrain && this.src.isPaused()) this.src.resume();
  }

  private onSourceDone(how: 'end' | 'abort'): void {
    this.srcDone ??= how;
    if (this.queue.length === 0) this.onDrained();
  }

  /** The source is gone and its bytes delivered: pass on a clean end as FIN, anything else as RST. */
  private onDrained(): void {
    if (!this.srcDone || this.finished) return;
    if (this.srcDone === 'end') this.dst.end();
    else this.conn.cut('rst', false);
    this.finished = true;
  }

  stop(): void {
    this.finished = true;
    clearTimeout(this.timer);
    this.queue = [];
  }
}
