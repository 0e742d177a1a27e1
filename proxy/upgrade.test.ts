import http, { type IncomingMessage } from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { acceptUpgrade, isWebSocketUpgrade } from './upgrade.js';

describe('isWebSocketUpgrade', () => {
  const req = (method: string, version: string, upgrade: string | undefined) =>
    ({ method, httpVersion: version, headers: upgrade === undefined ? {} : { upgrade } }) as unknown as IncomingMessage;
  it.each([
    ['GET', '1.1', 'websocket', true],
    ['GET', '1.1', 'WebSocket', true],
    ['GET', '1.1', 'foo, websocket', true],
    ['POST', '1.1', 'websocket', false],
    ['GET', '1.0', 'websocket', false],
    ['GET', '1.1', 'h2c', false],
    ['GET', '1.1', 'websocketx', false],
    ['GET', '1.1', undefined, false],
  ])('%s HTTP/%s Upgrade: %s → %s', (method, version, upgrade, expected) => {
    expect(isWebSocketUpgrade(req(method, version, upgrade))).toBe(expected);
  });
});

describe('acceptUpgrade', () => {
  const servers: http.Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  /** A server whose 'upgrade' goes through acceptUpgrade; records plain requests, answers "tunnel" for tunnels. */
  async function server(tunnel: boolean) {
    const seen: { url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
    const s = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ url: req.url ?? '', headers: req.headers, body });
        res.end(`plain ${req.url}`);
      });
    });
    s.on('upgrade', (req: IncomingMessage, socket: net.Socket, head: Buffer) => {
      acceptUpgrade(s, req, socket, head, tunnel ? (res) => {
        res.writeHead(418, { 'content-length': 6 });
        res.end('tunnel');
      } : undefined);
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return { port: (s.address() as net.AddressInfo).port, seen };
  }

  function raw(port: number, text: string): Promise<string> {
    return new Promise((resolve) => {
      let got = '';
      const c = net.connect(port, '127.0.0.1', () => c.end(text));
      c.setEncoding('latin1');
      c.on('data', (d: string) => (got += d));
      c.on('close', () => resolve(got));
    });
  }

  it('h2c: replayed as plain HTTP/1.1 without the upgrade fields, body and pipelined request included', async () => {
    const { port, seen } = await server(true);
    const got = await raw(port,
      'POST /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, keep-alive\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\nContent-Length: 5\r\n\r\nhello' +
      'GET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    expect(got).not.toContain(' 101 ');
    expect(got.match(/HTTP\/1\.1 200 OK/g)).toHaveLength(2);
    expect(seen.map((r) => [r.url, r.body])).toEqual([['/x', 'hello'], ['/y', '']]);
    expect(seen[0].headers.upgrade).toBeUndefined();
    expect(seen[0].headers['http2-settings']).toBeUndefined();
    expect(seen[0].headers.connection).toBe('keep-alive');
  });

  it('websocket: handed to the tunnel stage, whose answer closes the connection', async () => {
    const { port, seen } = await server(true);
    const got = await raw(port, 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n');
    expect(got).toMatch(/^HTTP\/1\.1 418 /);
    expect(got).toContain('Connection: close');
    expect(got.match(/HTTP\/1\.1/g)).toHaveLength(1);
    expect(seen).toHaveLength(0);
  });

  it('websocket without a tunnel stage: served as a plain request', async () => {
    const { port, seen } = await server(false);
    const got = await raw(port, 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\n\r\n');
    expect(got).toMatch(/^HTTP\/1\.1 200 /);
    expect(seen.map((r) => r.url)).toEqual(['/ws']);
    expect(seen[0].headers.upgrade).toBeUndefined();
  });
});
