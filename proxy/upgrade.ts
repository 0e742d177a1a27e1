// HTTP/1.1 Upgrade at the listener: which upgrades may become tunnels (WebSocket on GET), h2c and the rest served as plain requests.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Only `Upgrade: websocket` on a GET over HTTP/1.1 is tunnelled (RFC 6455 §4.1). Everything else (h2c above all,
 * HARDENING.md row 13) is never forwarded: RFC 9110 §7.8 lets a server ignore Upgrade, and Envoy does exactly that
 * for h2c, stripping the upgrade headers and serving the request as plain HTTP/1.1.
 */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  if (req.method !== 'GET' || req.httpVersion !== '1.1') return false;
  const upgrade = req.headers.upgrade;
  return typeof upgrade === 'string' && upgrade.split(',').some((t) => t.trim().toLowerCase() === 'websocket');
}

/** Connection tokens that only concern the upgrade being dropped. */
const UPGRADE_FIELDS = new Set(['upgrade', 'http2-settings']);

/**
 * The request head again, without Upgrade, HTTP2-Settings and their Connection tokens, followed by whatever the
 * client sent after it (its body, pipelined requests). Node's parser has already let go of the socket, so the bytes
 * are fed to `server` as a fresh connection: same limits, same pipeline, and what follows is parsed as HTTP/1.1.
 */
export function replayWithoutUpgrade(server: http.Server, req: IncomingMessage, socket: Socket, head: Buffer): void {
  const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/${req.httpVersion}`];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (UPGRADE_FIELDS.has(name)) continue;
    if (name === 'connection') {
      const kept = raw[i + 1].split(',').map((t) => t.trim()).filter((t) => t && !UPGRADE_FIELDS.has(t.toLowerCase()));
      if (kept.length) lines.push(`${raw[i]}: ${kept.join(', ')}`);
      continue;
    }
    lines.push(`${raw[i]}: ${raw[i + 1]}`);
  }
  const bytes = Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), head]);
  server.emit('connection', socket);
  // The parser reads the socket through 'data' events, so the replayed head goes in the same way (as tls.ts does).
  socket.emit('data', bytes);
}

/**
 * A ServerResponse on an upgrade request's socket, so the pipeline's stages (route, authz, rate limit, respondError)
 * answer it as any other request. Without a server behind it, closing after the answer is ours to do: an upgrade
 * request that was not tunnelled never leaves its connection open for more (the client may have sent bytes in the
 * new protocol already).
 */
export function upgradeResponse(req: IncomingMessage, socket: Socket): ServerResponse {
  const res = new http.ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  res.once('finish', () => {
    res.detachSocket(socket);
    socket.destroySoon();
  });
  return res;
}

/**
 * Takes an upgrade request from the HTTP server's 'upgrade' event. WebSocket handshakes go to `tunnel` (when the
 * listener has one) with the bytes the client sent after the request put back in the socket, unread until the
 * upstream's 101; every other upgrade is replayed as a plain request.
 */
export function acceptUpgrade(
  server: http.Server, req: IncomingMessage, socket: Socket, head: Buffer,
  tunnel: ((res: ServerResponse) => void) | undefined,
): void {
  if (!tunnel || !isWebSocketUpgrade(req)) {
    replayWithoutUpgrade(server, req, socket, head);
    return;
  }
  socket.on('error', () => socket.destroy());
  if (head.length > 0) socket.unshift(head);
  tunnel(upgradeResponse(req, socket));
}
