// The silent-connection timer of both front doors (outbound port, inbound TLS port): a socket that sends nothing is closed.
import type net from 'node:net';

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
