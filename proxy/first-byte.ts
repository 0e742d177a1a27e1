// How both front doors (outbound port, inbound TLS port) hold a connection until its first byte: the silence timer, the drain's set, the hand-over to HTTP/1.
import type http from 'node:http';
import type net from 'node:net';

/** Gives `socket` to the HTTP/1 server with the bytes already read: its parser reads the socket handle directly, so they are replayed, not unshifted. */
export function handToHttp1(server: http.Server, socket: net.Socket, read: Buffer): void {
  server.emit('connection', socket);
  socket.emit('data', read);
}

/**
 * Destroys `socket` unless a byte comes within `ms`; returns the call that disarms it once one has. The 'timeout'
 * listener goes with the timer: `setTimeout(0)` alone stops the timer but keeps the listener, which would then destroy
 * the socket on any later timeout (defect 23).
 */
export function closeIfSilent(socket: net.Socket, ms: number): () => void {
  const onSilent = (): void => void socket.destroy();
  socket.setTimeout(ms, onSilent);
  return () => void socket.setTimeout(0, onSilent);
}

/**
 * The connections a front door holds before their first request byte, when no HTTP server has them yet. A drain
 * closes them at once: nothing has begun on them, and left alone they would hold the listener's close() for the whole
 * idle time.
 */
export class FirstByteWait {
  private readonly waiting = new Set<net.Socket>();

  /** `closeIfSilent`, with the socket counted as waiting until the returned call (its first byte) or its close. */
  hold(socket: net.Socket, ms: number): () => void {
    const disarm = closeIfSilent(socket, ms);
    this.waiting.add(socket);
    const forget = (): void => void this.waiting.delete(socket);
    socket.once('close', forget);
    return () => {
      forget();
      socket.off('close', forget);
      disarm();
    };
  }

  closeAll(): void {
    for (const socket of this.waiting) socket.destroy();
    this.waiting.clear();
  }
}
