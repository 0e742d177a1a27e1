// Byte tunnels shared by WebSocket upgrades and TCP services: pipe two sockets both ways with backpressure, idle timeout, byte counts; the set a drain closes.
import type net from 'node:net';

/** Envoy's tcp_proxy default: a tunnel with no bytes either way for this long is closed. */
export const TUNNEL_IDLE_TIMEOUT_MS = 3_600_000;

export type TunnelEnd = 'closed' | 'idle-timeout' | 'error' | 'shutdown';

export interface TunnelOptions {
  readonly idleTimeoutMs: number;
  /** Bytes from the downstream toward the destination (`sent`) and back (`received`), as they pass. */
  readonly onSent?: (bytes: number) => void;
  readonly onReceived?: (bytes: number) => void;
  /** Once, when both sockets are closed. */
  readonly onClose?: (summary: TunnelSummary) => void;
}

export interface TunnelSummary {
  readonly sent: number;
  readonly received: number;
  readonly end: TunnelEnd;
}

export interface Tunnel {
  /** Closes both sides now (drain deadline, shutdown). */
  close(): void;
}

/**
 * Joins `downstream` (who opened the connection) and `upstream`. `pipe` gives backpressure both ways and passes a
 * half-close (FIN) on as `end()`. A socket's timeout is refreshed by reads and writes alike, so one idle timer per
 * socket fires only when nothing moved in either direction. An error or reset on either side destroys both; a clean
 * close lets the other side flush what it has and then closes it too.
 */
export function tunnel(downstream: net.Socket, upstream: net.Socket, o: TunnelOptions): Tunnel {
  let sent = 0;
  let received = 0;
  let end: TunnelEnd | undefined;
  let open = 2;
  const destroyBoth = (why: TunnelEnd) => {
    end ??= why;
    downstream.destroy();
    upstream.destroy();
  };
  const onClosed = (other: net.Socket) => (hadError: boolean) => {
    if (hadError) destroyBoth('error');
    // The peer closed cleanly: `pipe` already ended the other side; let its pending writes go out, then close it.
    else other.destroySoon();
    if (--open === 0) o.onClose?.({ sent, received, end: end ?? 'closed' });
  };
  for (const [s, other] of [[downstream, upstream], [upstream, downstream]] as const) {
    s.on('error', () => destroyBoth('error'));
    s.once('close', onClosed(other));
    s.setTimeout(o.idleTimeoutMs, () => destroyBoth('idle-timeout'));
    s.setNoDelay?.(true);
  }
  downstream.on('data', (c: Buffer) => {
    sent += c.length;
    o.onSent?.(c.length);
  });
  upstream.on('data', (c: Buffer) => {
    received += c.length;
    o.onReceived?.(c.length);
  });
  downstream.pipe(upstream);
  upstream.pipe(downstream);
  return { close: () => destroyBoth('shutdown') };
}

/** The tunnels open in this sidecar, so a drain can wait for them (bounded) and then close what is left. */
export class TunnelSet {
  private readonly open = new Set<Tunnel>();
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.open.size;
  }

  /** Starts a tunnel and tracks it until both sides are closed. */
  start(downstream: net.Socket, upstream: net.Socket, o: TunnelOptions): Tunnel {
    const t = tunnel(downstream, upstream, {
      ...o,
      onClose: (summary) => {
        this.open.delete(t);
        if (this.open.size === 0) for (const w of this.waiters.splice(0)) w();
        o.onClose?.(summary);
      },
    });
    this.open.add(t);
    return t;
  }

  idle(): Promise<void> {
    return this.open.size === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }

  closeAll(): void {
    for (const t of [...this.open]) t.close();
  }
}
