// Test helper for the HTTP/2 abuse probes: raw connections (h2c or TLS+ALPN h2) with a frame observer, bounded blasting,
// the sidecar's RSS from /proc, and the "normal client" that must keep getting 200s while a probe runs.
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { request } from '../harness/client.js';
import { waitFor } from '../harness/wait.js';
import { PREFACE, observe, settings, type Observed } from './h2-frames.js';

/** Where a probe connects: the outbound port in plain TCP, or the inbound port with mTLS and ALPN h2. */
export interface Target {
  readonly name: string;
  readonly addr: string;
  readonly tls?: { readonly keyPem: string; readonly certPem: string; readonly caPem: string };
}

export interface RawConn {
  readonly socket: net.Socket;
  readonly seen: Observed;
  /** Writes and resolves once the bytes were taken (or the socket is gone); never rejects. */
  send(bytes: Buffer): Promise<void>;
  close(): void;
}

function split(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i), Number(addr.slice(i + 1))];
}

/** Connects and (unless `preface` is false) sends the client preface and an empty SETTINGS frame. */
export async function connectRaw(t: Target, o: { preface?: boolean; timeoutMs?: number } = {}): Promise<RawConn> {
  const [host, port] = split(t.addr);
  const socket: net.Socket = t.tls
    ? tls.connect({ host, port, key: t.tls.keyPem, cert: t.tls.certPem, ca: t.tls.caPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined })
    : net.connect({ host, port });
  const seen = observe(socket);
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connect to ${t.name} ${t.addr} took over ${o.timeoutMs ?? 5_000}ms`)), o.timeoutMs ?? 5_000);
    socket.once(t.tls ? 'secureConnect' : 'connect', () => { clearTimeout(timer); resolve(); });
    socket.once('error', (err) => { clearTimeout(timer); reject(err); });
  });
  if (t.tls && (socket as tls.TLSSocket).alpnProtocol !== 'h2') throw new Error(`${t.name}: ALPN chose ${String((socket as tls.TLSSocket).alpnProtocol)}, not h2`);
  const send = (bytes: Buffer): Promise<void> => new Promise<void>((resolve) => {
    if (socket.destroyed || !socket.writable) return resolve();
    socket.write(bytes, () => resolve());
  });
  if (o.preface !== false) await send(Buffer.concat([PREFACE, settings()]));
  return { socket, seen, send, close: () => socket.destroy() };
}

export interface BlastResult {
  /** Bytes the socket accepted before it closed (or the cap or deadline stopped us). */
  readonly written: number;
  readonly stoppedBy: 'closed' | 'cap' | 'deadline';
  readonly ms: number;
}

/**
 * Writes `next()` chunks as fast as the socket takes them (waiting for 'drain'), until the server closes the
 * connection (or sends GOAWAY), `capBytes` were written, or `deadlineMs` passed.
 */
export async function blast(c: RawConn, next: () => Buffer, capBytes: number, deadlineMs: number, stopOnGoaway = true): Promise<BlastResult> {
  const t0 = Date.now();
  let written = 0;
  const over = (): BlastResult['stoppedBy'] | undefined => {
    if (c.socket.destroyed || !c.socket.writable || c.seen.closed || (stopOnGoaway && c.seen.goaway)) return 'closed';
    if (written >= capBytes) return 'cap';
    if (Date.now() - t0 >= deadlineMs) return 'deadline';
    return undefined;
  };
  for (;;) {
    const stop = over();
    if (stop) return { written, stoppedBy: stop, ms: Date.now() - t0 };
    const chunk = next();
    written += chunk.length;
    if (!c.socket.write(chunk)) {
      // The server stopped reading (or is slow): wait, bounded, for room or for the end.
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          c.socket.off('drain', done);
          c.socket.off('close', done);
          resolve();
        };
        const timer = setTimeout(done, Math.max(1, deadlineMs - (Date.now() - t0)));
        c.socket.once('drain', done);
        c.socket.once('close', done);
      });
    } else if ((written & 0xffff) < chunk.length) {
      // Let the reader and timers run now and then, so a GOAWAY is noticed while the kernel still takes our bytes.
      await new Promise((r) => setImmediate(r));
    }
  }
}

/**
 * Writes `batch` and waits until the kernel took it (and a turn of the event loop) before the next one, so the server
 * reads, and answers, a little at a time: its answers pile up in our socket only if we do not read them.
 */
export async function paced(c: RawConn, batch: Buffer, capBytes: number, deadlineMs: number): Promise<BlastResult> {
  const t0 = Date.now();
  let written = 0;
  for (;;) {
    if (c.socket.destroyed || !c.socket.writable || c.seen.closed) return { written, stoppedBy: 'closed', ms: Date.now() - t0 };
    if (written >= capBytes) return { written, stoppedBy: 'cap', ms: Date.now() - t0 };
    if (Date.now() - t0 >= deadlineMs) return { written, stoppedBy: 'deadline', ms: Date.now() - t0 };
    written += batch.length;
    await Promise.race([c.send(batch), new Promise((r) => setTimeout(r, Math.max(1, deadlineMs - (Date.now() - t0))))]);
    await new Promise((r) => setImmediate(r));
  }
}

/** Waits (bounded) until the server sent GOAWAY or the connection closed. */
export async function waitForEnd(c: RawConn, timeoutMs: number, what: string): Promise<void> {
  await waitFor(() => c.seen.goaway !== undefined || c.seen.closed, { timeoutMs, intervalMs: 10, what });
}

/** VmRSS of a process in bytes (Linux /proc). */
export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Samples a process's RSS every 50 ms; `stop()` gives the baseline (at start) and the peak. */
export function watchRss(pid: number): { stop(): { baseline: number; peak: number; growth: number } } {
  const baseline = rssOf(pid);
  let peak = baseline;
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssOf(pid));
    } catch {
      // The process is gone: the probe's liveness check reports it.
    }
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      try {
        peak = Math.max(peak, rssOf(pid));
      } catch {
        // as above
      }
      return { baseline, peak, growth: peak - baseline };
    },
  };
}

export const MB = 1024 * 1024;

export interface NormalClient {
  /** Ends the loops once each has had `after` more successes since stop() was called; bounded by `timeoutMs`. */
  stop(after?: number, timeoutMs?: number): Promise<{ ok: number; failed: number; errors: string[] }>;
}

/**
 * The well-behaved neighbour: one HTTP/1.1 loop (a new connection per request) and one HTTP/2 loop (one session,
 * re-opened if it dies) against `host` on the outbound port, or only HTTP/2 over mTLS when `tlsTarget` is given.
 */
export function normalClient(outbound: string, host: string, tlsTarget?: Target): NormalClient {
  let ok = 0;
  let failed = 0;
  const errors: string[] = [];
  let running = true;
  let okAtStop = Infinity;
  let want = 0;
  const fail = (why: string): void => {
    failed++;
    if (errors.length < 10) errors.push(why);
  };
  const keepGoing = (mine: () => number, mark: number) => running || mine() < mark + want;
  // A neighbour, not a load generator: flat out, the loops alone lag the sidecar enough for its overload shedder.
  const pause = () => new Promise((r) => setTimeout(r, 5));

  let h1ok = 0;
  let h1AtStop = Infinity;
  const h1 = tlsTarget ? Promise.resolve() : (async () => {
    while (keepGoing(() => h1ok, h1AtStop)) {
      await pause();
      const r = await request(outbound, { host, path: '/normal/h1', timeoutMs: 5_000 }).catch((e: Error) => e);
      if (!(r instanceof Error) && r.status === 200) {
        ok++;
        h1ok++;
      } else fail(`h1: ${r instanceof Error ? r.message : `status ${r.status}`}`);
    }
  })();

  let h2ok = 0;
  let h2AtStop = Infinity;
  const h2 = (async () => {
    let session: http2.ClientHttp2Session | undefined;
    const open = (): http2.ClientHttp2Session => {
      const s = tlsTarget?.tls
        ? http2.connect(`https://${tlsTarget.addr}`, { key: tlsTarget.tls.keyPem, cert: tlsTarget.tls.certPem, ca: tlsTarget.tls.caPem, checkServerIdentity: () => undefined })
        : http2.connect(`http://${outbound}`);
      s.on('error', () => undefined);
      return s;
    };
    try {
      while (keepGoing(() => h2ok, h2AtStop)) {
        await pause();
        if (!session || session.destroyed || session.closed) session = open();
        const s = session;
        const status = await new Promise<number | string>((resolve) => {
          let st: http2.ClientHttp2Stream;
          try {
            st = s.request({ ':authority': host, ':path': '/normal/h2' });
          } catch (e) {
            return resolve((e as Error).message);
          }
          const timer = setTimeout(() => { st.close(http2.constants.NGHTTP2_CANCEL); resolve('no answer within 5s'); }, 5_000);
          let code = 0;
          st.on('response', (h) => { code = Number(h[':status']); });
          st.on('error', (e: Error) => { clearTimeout(timer); resolve(e.message); });
          st.resume();
          st.on('close', () => { clearTimeout(timer); resolve(code || `stream closed (rst ${st.rstCode ?? '?'})`); });
        });
        if (status === 200) {
          ok++;
          h2ok++;
        } else fail(`h2: ${status}`);
      }
    } finally {
      session?.close();
    }
  })();

  return {
    async stop(after = 5, timeoutMs = 20_000) {
      want = after;
      okAtStop = ok;
      h1AtStop = h1ok;
      h2AtStop = h2ok;
      running = false;
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, timeoutMs); });
      await Promise.race([Promise.all([h1, h2]), deadline]);
      clearTimeout(timer);
      if (ok < okAtStop + (tlsTarget ? after : 2 * after)) {
        // Still short after the deadline: end the loops and say so.
        want = -Infinity;
        fail(`only ${ok - okAtStop} successes after the probe within ${timeoutMs}ms`);
      }
      return { ok, failed, errors };
    },
  };
}
