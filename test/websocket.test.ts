// End-to-end: WebSocket through two sidecars with mTLS: a 1,000-message echo, a refused upgrade never tunnelled (nor the bytes after it), h2c never forwarded, AccessPolicy on the handshake, idle timeout.
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { parseResponse, splitAddr } from './harness/client.js';
import { accessPolicy, issueClientCert, meshService, spiffeOf, tlsProbe } from './harness/mtls.js';
import { sumWhere } from './harness/prom.js';
import { toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { waitFor, withDeadline } from './harness/wait.js';
import { startWsApp, type WsApp } from './harness/ws-app.js';

let app: WsApp;
let echo: Sidecar;
let gateway: Sidecar;

const clientResources = (server: Sidecar) => toYaml([...meshService({ name: 'gateway' }), ...meshService({ name: 'echo', endpoints: [server.inbound] })]);

beforeAll(async () => {
  app = await startWsApp();
  echo = await startSidecar({
    service: 'echo',
    app: app.address,
    resources: toYaml([
      ...meshService({ name: 'echo' }),
      accessPolicy('no-private', 'echo', 'deny', [{ from: ['*'], to: [{ paths: ['/private', '/private/*'] }] }]),
    ]),
  });
  gateway = await startSidecar({ service: 'gateway', resources: clientResources(echo) });
}, 45_000);

afterAll(async () => {
  await stopAllSidecars();
  await app.close();
});

function connect(sidecar: Sidecar, path: string): WebSocket {
  return new WebSocket(`ws://${sidecar.outbound}${path}`, { headers: { host: 'echo' } });
}

async function upgrades(sc: Sidecar, direction: string, result: string): Promise<number> {
  return sumWhere(await sc.samples('mesh_upgrades_total'), { direction, destination_service: 'echo', result });
}

interface RawOutcome {
  /** Everything the sidecar sent back (latin1). */
  received: string;
  /** The sidecar closed the connection. */
  closed: boolean;
}

/** Writes `first` in one go, then `later` once a response has started; collects what comes back until close or the deadline. */
function rawExchange(addr: string, first: string, later: string, timeoutMs = 5_000): Promise<RawOutcome> {
  const [host, port] = splitAddr(addr);
  return new Promise((resolve) => {
    const out: RawOutcome = { received: '', closed: false };
    const sock = net.connect({ host, port }, () => sock.write(first, 'latin1'));
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(out);
    }, timeoutMs);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      const started = out.received.length === 0;
      out.received += d;
      if (started && later && sock.writable) sock.write(later, 'latin1');
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      out.closed = true;
      resolve(out);
    });
  });
}

const HANDSHAKE = (path: string) =>
  `GET ${path} HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe('WebSocket through gateway → mTLS → echo', () => {
  it('echoes 1,000 messages in order, plus a 1 MiB binary one; the app sees the caller in XFCC', async () => {
    app.clear();
    const ws = connect(gateway, '/chat');
    await withDeadline(once(ws, 'open'), 10_000, 'the WebSocket to open');
    const n = 1_000;
    const sent = Array.from({ length: n }, (_, i) => `message ${i} ${'x'.repeat(i % 251)}`);
    const got: string[] = [];
    const all = new Promise<void>((resolve) => {
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (!isBinary) got.push(data.toString('utf8'));
        if (got.length === n) resolve();
      });
    });
    for (const m of sent) ws.send(m);
    await withDeadline(all, 20_000, `${n} echoes (got ${got.length})`);
    expect(got).toEqual(sent);

    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const echoed = new Promise<Buffer>((resolve) => ws.once('message', (data: Buffer) => resolve(data)));
    ws.send(big, { binary: true });
    expect((await withDeadline(echoed, 10_000, 'the 1 MiB echo')).equals(big)).toBe(true);

    ws.close();
    await withDeadline(once(ws, 'close'), 5_000, 'the close handshake');
    const hs = app.seen.filter((s) => s.kind === 'upgrade');
    expect(hs).toHaveLength(1);
    expect(hs[0].headers['x-forwarded-client-cert']).toBe(`By=${spiffeOf('echo')};URI=${spiffeOf('gateway')}`);
    expect(hs[0].headers['sec-websocket-key']).toBeTruthy();
    expect(await upgrades(gateway, 'outbound', 'tunnelled')).toBeGreaterThanOrEqual(1);
    expect(await upgrades(echo, 'inbound', 'tunnelled')).toBeGreaterThanOrEqual(1);
    await waitFor(async () => sumWhere(await gateway.samples('mesh_upgrades_active'), {}) === 0, { what: 'no tunnel left open on the gateway' });
    expect(sumWhere(await gateway.samples('mesh_upgrade_bytes_total'), { flow: 'sent' })).toBeGreaterThan(1024 * 1024);
  }, 40_000);

  it('a refused upgrade (upstream 403) is relayed and closed, never tunnelled: bytes sent after the request never reach the app', async () => {
    app.clear();
    const before = await upgrades(gateway, 'outbound', 'refused');
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n';
    const out = await rawExchange(gateway.outbound, HANDSHAKE('/refuse') + smuggled, `${smuggled}\x81\x05hello`);
    expect(out.received, out.received).toMatch(/^HTTP\/1\.1 403 /);
    expect(parseResponse(out.received).body).toBe('refused');
    expect(out.received).not.toMatch(/ 101 /);
    expect(out.closed).toBe(true);
    expect(app.seen.map((s) => `${s.kind} ${s.url}`)).toEqual(['upgrade /refuse']);
    expect(app.afterRefusal()).toBe('');
    expect(await upgrades(gateway, 'outbound', 'refused')).toBe(before + 1);
  }, 20_000);

  it('Upgrade: h2c is never forwarded: served as plain HTTP/1.1, and a request pipelined behind it is served too', async () => {
    app.clear();
    const h2c = 'GET /h2c HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n';
    const out = await rawExchange(gateway.outbound, `${h2c}GET /after HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n`, '');
    expect(out.received).toMatch(/^HTTP\/1\.1 200 /);
    expect(out.received).not.toMatch(/ 101 /);
    expect(out.received.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
    expect(app.seen.map((s) => `${s.kind} ${s.url}`)).toEqual(['request /h2c', 'request /after']);
    for (const s of app.seen) {
      expect(s.headers.upgrade).toBeUndefined();
      expect(s.headers['http2-settings']).toBeUndefined();
    }
  }, 20_000);

  it('h2c sent straight to the inbound port (valid client certificate) is not forwarded either', async () => {
    app.clear();
    const probe = await tlsProbe(echo.inbound, {
      cert: await issueClientCert('gateway'),
      text: 'GET /h2c-inbound HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    });
    expect(probe.response?.status, probe.received || probe.error).toBe(200);
    expect(app.seen.map((s) => `${s.kind} ${s.url}`)).toEqual(['request /h2c-inbound']);
    expect(app.seen[0].headers.upgrade).toBeUndefined();
  }, 20_000);

  it('AccessPolicy applies to the handshake: a denied path is 403 access-denied, and nothing reaches the app', async () => {
    app.clear();
    const before = sumWhere(await echo.samples('mesh_access_denied_total'), { destination_service: 'echo', policy: 'no-private' });
    const ws = connect(gateway, '/private/room');
    ws.on('error', () => undefined);
    const [req, res] = (await withDeadline(once(ws, 'unexpected-response'), 10_000, 'the refusal')) as [ClientRequest, IncomingMessage];
    expect(res.statusCode).toBe(403);
    expect(res.headers['x-mesh-error']).toBe('access-denied');
    req.destroy();
    expect(app.seen).toHaveLength(0);
    expect(sumWhere(await echo.samples('mesh_access_denied_total'), { destination_service: 'echo', policy: 'no-private' })).toBe(before + 1);
  }, 20_000);

  it('a tunnel with no bytes either way for --tunnel-idle-timeout is closed; traffic keeps it open; a drain closes what is left', async () => {
    const quick = await startSidecar({ service: 'gateway', resources: clientResources(echo), extraArgs: ['--tunnel-idle-timeout', '1s', '--drain-timeout', '500ms'] });
    const ws = connect(quick, '/idle');
    await withDeadline(once(ws, 'open'), 10_000, 'the WebSocket to open');
    let closedAt = 0;
    ws.on('close', () => (closedAt = Date.now()));
    // 2.4 s of traffic every 300 ms: longer than the timeout, never idle for it.
    let quietFrom = 0;
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 300));
      ws.send(`ping ${i}`);
      quietFrom = Date.now();
    }
    expect(closedAt).toBe(0);
    await waitFor(() => closedAt > 0, { timeoutMs: 10_000, what: 'the idle tunnel to close' });
    expect(closedAt - quietFrom).toBeGreaterThanOrEqual(900);

    // SIGTERM with a tunnel open: it gets the drain timeout, then is closed, and the sidecar exits 0.
    const open = connect(quick, '/drain');
    await withDeadline(once(open, 'open'), 10_000, 'the second WebSocket to open');
    const closed = once(open, 'close');
    expect(await quick.stop('SIGTERM', 10_000)).toBe(0);
    await withDeadline(closed, 5_000, 'the drained tunnel to close');
  }, 40_000);
});
