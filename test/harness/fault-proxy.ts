// Test harness: a TCP fault proxy on 127.0.0.1:0 in front of one target. Latency, bandwidth caps, resets at a byte offset,
// black holes and refused connections, switched at run time for every connection or for one; chance from a seeded PRNG.
import net from 'node:net';
import { seededRandom, type Random } from '../../api/clock.js';
import { splitAddr } from './client.js';
import { clean, dirs, Link, type Direction, type Directions, type LinkFaults, type ResetFault } from './fault-link.js';

export type { Direction, Directions, ResetFault };

export interface BlackholeFault {
  /** Default both. */
  readonly direction?: Directions;
  /** Bytes forwarded (from the connection's start) before the hole opens; default 0: read and drop everything. */
  readonly afterBytes?: number;
}

/** close: the listener stops (ECONNREFUSED); destroy: accept and close at once; reset: accept and RST at once. */
export type RefuseMode = 'close' | 'destroy' | 'reset';

export interface FaultStats {
  /** Connections accepted and forwarded (refused ones not counted). */
  connections: number;
  /** Connections accepted and then closed or reset by refuse('destroy' | 'reset'). */
  refused: number;
  open: number;
  /** Bytes forwarded client → target and target → client. */
  bytesUp: number;
  bytesDown: number;
  /** Bytes read and dropped by a black hole. */
  droppedUp: number;
  droppedDown: number;
  /** Connections this proxy reset (RST) itself: reset faults, resetAll(), refuse('reset'). */
  resets: number;
}

/** The faults every kind of handle can switch: the whole proxy (current and future connections) or one connection. */
export interface FaultControls {
  /** Delay each chunk by `ms` (0 removes it). */
  latency(ms: number, direction?: Directions): void;
  /** Cap the rate at `bytesPerSecond` (Infinity removes it). */
  bandwidth(bytesPerSecond: number, direction?: Directions): void;
  resetAt(fault: ResetFault): void;
  blackhole(fault?: BlackholeFault): void;
  /** Clear every fault (forwarding resumes; bytes a black hole dropped stay dropped). */
  heal(): void | Promise<void>;
}

export interface FaultConnection extends FaultControls {
  readonly id: number;
  readonly bytesUp: number;
  readonly bytesDown: number;
  /** RST both sides now. */
  reset(): void;
  heal(): void;
}

export interface FaultProxy extends FaultControls {
  /** "127.0.0.1:PORT" */
  readonly endpoint: string;
  readonly port: number;
  readonly stats: Readonly<FaultStats>;
  /** Open connections, oldest first. */
  connections(): readonly FaultConnection[];
  /** Called for every accepted connection before a byte is forwarded: the place for per-connection faults. */
  onConnection(fn: ((c: FaultConnection) => void) | undefined): void;
  /** RST every open connection now. */
  resetAll(): void;
  /** Close every open connection (FIN) now. */
  dropAll(): void;
  /** Refuse new connections until heal(); open ones are left alone. */
  refuse(mode?: RefuseMode): Promise<void>;
  /** Clear every fault on every connection, and accept again (same port). */
  heal(): Promise<void>;
  close(): Promise<void>;
}

export interface FaultProxyOptions {
  /** "host:port" of the target ("[::1]:port" for IPv6). */
  target: string;
  /** Source of random offsets; default seededRandom(seed). */
  random?: Random;
  seed?: number;
}

class Conn implements FaultConnection {
  readonly up: Link;
  readonly down: Link;
  private dead = false;

  constructor(
    readonly id: number,
    readonly proxy: Proxy,
    private readonly client: net.Socket,
    private readonly target: net.Socket,
  ) {
    this.up = new Link('up', client, target, this);
    this.down = new Link('down', target, client, this);
    let closed = 0;
    for (const s of [client, target]) {
      s.on('error', () => undefined);
      s.on('close', () => {
        if (++closed === 2) proxy.forget(this);
      });
    }
    // Never connected: the client sees its connection closed, as through the old relay.
    target.on('error', () => {
      if (!target.remoteAddress) client.destroy();
    });
  }

  get bytesUp(): number {
    return this.up.forwarded;
  }

  get bytesDown(): number {
    return this.down.forwarded;
  }

  private links(d: Directions = 'both'): Link[] {
    return dirs(d).map((x) => (x === 'up' ? this.up : this.down));
  }

  latency(ms: number, direction?: Directions): void {
    for (const l of this.links(direction)) l.f.latencyMs = ms;
  }

  bandwidth(bytesPerSecond: number, direction?: Directions): void {
    for (const l of this.links(direction)) l.f.bytesPerSecond = bytesPerSecond;
  }

  resetAt(fault: ResetFault): void {
    this.links(fault.direction ?? 'down')[0].setCut(fault, this.proxy.random);
  }

  blackhole(fault: BlackholeFault = {}): void {
    for (const l of this.links(fault.direction)) l.f.holeAfter = fault.afterBytes ?? 0;
  }

  heal(): void {
    for (const l of this.links()) {
      l.f = clean();
      l.cutAt = Infinity;
      l.flushNow();
    }
  }

  reset(): void {
    this.cut('rst', true);
  }

  /** Stops forwarding both ways (a cut is coming). */
  freeze(): void {
    this.up.stop();
    this.down.stop();
  }

  /** Ends both sides: RST (counted when injected) or FIN after what was written. */
  cut(how: 'rst' | 'fin', injected: boolean): void {
    if (this.dead) return;
    this.dead = true;
    this.freeze();
    if (how === 'fin') {
      this.client.destroySoon();
      this.target.destroySoon();
      return;
    }
    if (injected) this.proxy.stats.resets++;
    for (const s of [this.client, this.target]) {
      if (s.destroyed) continue;
      // resetAndDestroy needs a connected (or connecting) TCP handle; anything else is simply destroyed.
      if (s.readyState === 'closed') s.destroy();
      else s.resetAndDestroy();
    }
  }

  /** Applies the proxy-wide faults to a new connection. */
  inherit(t: Record<Direction, LinkFaults>): void {
    for (const l of this.links()) {
      const f = t[l.dir];
      l.f = { ...f, cut: undefined };
      if (f.cut) l.setCut(f.cut, this.proxy.random);
    }
  }
}

class Proxy implements FaultProxy {
  readonly stats: FaultStats = { connections: 0, refused: 0, open: 0, bytesUp: 0, bytesDown: 0, droppedUp: 0, droppedDown: 0, resets: 0 };
  readonly random: Random;
  private readonly open = new Set<Conn>();
  private template: Record<Direction, LinkFaults> = { up: clean(), down: clean() };
  private refusing: RefuseMode | undefined;
  private listening = false;
  private hook: ((c: FaultConnection) => void) | undefined;
  private ids = 0;
  private readonly server: net.Server;
  port = 0;

  constructor(private readonly target: [string, number], opts: FaultProxyOptions) {
    this.random = opts.random ?? seededRandom(opts.seed ?? 0x5eed);
    this.server = net.createServer({ allowHalfOpen: true }, (client) => this.accept(client));
  }

  get endpoint(): string {
    return `127.0.0.1:${this.port}`;
  }

  async listen(port = 0): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listening = true;
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.refusing === 'destroy' || this.refusing === 'reset') {
      this.stats.refused++;
      if (this.refusing === 'reset') {
        this.stats.resets++;
        client.resetAndDestroy();
      } else {
        client.destroy();
      }
      return;
    }
    const [host, port] = this.target;
    const target = net.connect({ host, port, allowHalfOpen: true });
    const conn = new Conn(++this.ids, this, client, target);
    this.open.add(conn);
    this.stats.connections++;
    this.stats.open = this.open.size;
    conn.inherit(this.template);
    this.hook?.(conn);
  }

  count(dir: Direction, what: 'bytes' | 'dropped', n: number): void {
    if (n <= 0) return;
    if (what === 'bytes') this.stats[dir === 'up' ? 'bytesUp' : 'bytesDown'] += n;
    else this.stats[dir === 'up' ? 'droppedUp' : 'droppedDown'] += n;
  }

  forget(c: Conn): void {
    this.open.delete(c);
    this.stats.open = this.open.size;
  }

  connections(): readonly FaultConnection[] {
    return [...this.open];
  }

  onConnection(fn: ((c: FaultConnection) => void) | undefined): void {
    this.hook = fn;
  }

  latency(ms: number, direction?: Directions): void {
    for (const d of dirs(direction)) this.template[d].latencyMs = ms;
    for (const c of this.open) c.latency(ms, direction);
  }

  bandwidth(bytesPerSecond: number, direction?: Directions): void {
    for (const d of dirs(direction)) this.template[d].bytesPerSecond = bytesPerSecond;
    for (const c of this.open) c.bandwidth(bytesPerSecond, direction);
  }

  resetAt(fault: ResetFault): void {
    this.template[fault.direction ?? 'down'].cut = fault;
    for (const c of this.open) c.resetAt(fault);
  }

  blackhole(fault: BlackholeFault = {}): void {
    for (const d of dirs(fault.direction)) this.template[d].holeAfter = fault.afterBytes ?? 0;
    for (const c of this.open) c.blackhole(fault);
  }

  resetAll(): void {
    for (const c of [...this.open]) c.reset();
  }

  dropAll(): void {
    for (const c of [...this.open]) c.cut('fin', false);
  }

  async refuse(mode: RefuseMode = 'close'): Promise<void> {
    this.refusing = mode;
    if (mode === 'close' && this.listening) {
      this.listening = false;
      // close() waits for open connections; the listening socket itself is gone at once.
      this.server.close();
    }
  }

  async heal(): Promise<void> {
    this.template = { up: clean(), down: clean() };
    for (const c of this.open) c.heal();
    const wasClosed = this.refusing === 'close';
    this.refusing = undefined;
    if (wasClosed) await this.listen(this.port);
  }

  async close(): Promise<void> {
    this.refusing = 'destroy';
    for (const c of [...this.open]) c.cut('rst', false);
    if (!this.listening) return;
    this.listening = false;
    await new Promise((r) => this.server.close(r));
  }
}

/** Starts a fault proxy on 127.0.0.1:0 forwarding to `opts.target`; no faults until told. */
export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const [host, port] = splitAddr(opts.target);
  const p = new Proxy([host.replace(/^\[(.*)\]$/, '$1'), port], opts);
  await p.listen();
  return p;
}
