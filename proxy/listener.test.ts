import net, { type AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import { createLogger } from '../api/log.js';
import { createListener, hostOf, InFlight, LIMITS, splitTarget, unsupportedVersion, type ListenerDeps, type ListenerLimits } from './listener.js';

describe('splitTarget', () => {
  it.each([
    ['/x?y=1', 'billing', { host: 'billing', hostHeader: 'billing', pathAndQuery: '/x?y=1' }],
    ['/x', 'Billing:8080', { host: 'billing', hostHeader: 'Billing:8080', pathAndQuery: '/x' }],
    ['http://billing/x', undefined, { host: 'billing', hostHeader: 'billing', pathAndQuery: '/x' }],
    ['http://billing:80', 'billing:80', { host: 'billing', hostHeader: 'billing:80', pathAndQuery: '/' }],
    ['http://billing?q=1', 'billing', { host: 'billing', hostHeader: 'billing', pathAndQuery: '/?q=1' }],
    ['/x', '[::1]:9000', { host: '[::1]', hostHeader: '[::1]:9000', pathAndQuery: '/x' }],
  ])('%s with Host %s', (url, host, expected) => {
    expect(splitTarget(url, host)).toEqual(expected);
  });

  it.each([
    ['/x', undefined, 'missing Host header'],
    ['http://billing/x', 'users', 'request target authority "billing" does not match Host "users"'],
    ['http://user@billing/x', undefined, 'userinfo in request target'],
    ['https://billing/x', undefined, 'unsupported request target "https://billing/x"'],
    ['*', 'billing', 'unsupported request target "*"'],
    ['/x', 'bill ing', 'invalid authority "bill ing"'],
    ['/x', 'billing:99999', 'invalid authority "billing:99999"'],
  ])('rejects %s with Host %s', (url, host, message) => {
    const r = splitTarget(url, host);
    expect(r).toBeInstanceOf(MeshError);
    expect((r as MeshError).code).toBe('bad-request');
    expect((r as MeshError).message).toBe(message);
  });
});

describe('unsupportedVersion', () => {
  it.each([
    ['GET / HTTP/1.2\r\n', true], ['GET / HTTP/2.0\r\nHost: a', true], ['GET / HTTP/0.1\r\n', true],
    ['GET / HTTP/1.1\r\n', false], ['GET / HTTP/1.1\nHost: a', false], ['GET / HTTP/1.10\r\n', false], ['PRI / HTTP/1.1\r\n', false],
  ])('%j → %s', (line, want) => {
    expect(unsupportedVersion(Buffer.from(line, 'latin1'))).toBe(want);
  });
});

describe('hostOf', () => {
  it.each([
    ['billing', 'billing'], ['BILLING.default.svc:8080', 'billing.default.svc'], ['127.0.0.1:15001', '127.0.0.1'],
    ['[::1]:80', '[::1]'], ['', undefined], ['a/b', undefined], ['billing:', undefined], ['x:-1', undefined],
  ])('%s → %s', (input, expected) => {
    expect(hostOf(input)).toBe(expected);
  });
});

/**
 * The listener as the sidecar runs it: never listening itself, handed sockets by a front server (h2-listener.ts,
 * tls.ts), with short timeouts. The handler reads the body, then answers 200 with the path.
 */
interface Hooks {
  /** Called as each request starts being served. */
  onServe?: () => void;
}

async function frontedListener(limits: Partial<ListenerLimits> = {}, hooks: Hooks = {}) {
  const deps: ListenerDeps = {
    direction: 'outbound',
    clock: systemClock,
    log: createLogger('error', {}, () => undefined),
    refused: { record: () => undefined },
    limits: { ...LIMITS, ...limits },
    handler: async (ex) => {
      hooks.onServe?.();
      // Reads the body first, as forwarding it upstream would.
      for await (const _ of ex.req) { /* drained */ }
      ex.res.writeHead(200, { 'content-length': Buffer.byteLength(ex.path) });
      ex.res.end(ex.path);
    },
    // WebSocket handshakes: refused, as an upstream that answers without 101 would have them.
    upgrade: async (ex) => {
      ex.res.writeHead(403, { 'content-length': 0 });
      ex.res.end();
    },
  };
  const server = createListener(deps, new InFlight());
  // As the outbound front does (h2-listener.ts): the first bytes are read to sniff the protocol, then replayed.
  const front = net.createServer((socket) => socket.once('data', (chunk: Buffer) => {
    server.emit('connection', socket);
    socket.emit('data', chunk);
  }));
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  return {
    port: (front.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      front.close(() => resolve());
    }),
  };
}

/** Everything the server sends until it closes (bounded), after writing `text` (or writing it byte by byte). */
function exchange(port: number, text: string, o: { dribbleMs?: number; onData?: (got: string) => void; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no close within ${o.timeoutMs ?? 5_000}ms; got ${JSON.stringify(got)}`));
    }, o.timeoutMs ?? 5_000);
    sock.setEncoding('latin1');
    sock.on('data', (d: string) => {
      got += d;
      o.onData?.(got);
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    sock.on('connect', async () => {
      if (!o.dribbleMs) return void sock.write(text, 'latin1');
      for (const ch of text) {
        if (sock.destroyed) return;
        sock.write(ch, 'latin1');
        await new Promise((r) => setTimeout(r, o.dribbleMs));
      }
    });
  });
}

/** Resolves with `p`, or fails naming `what` after `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

const statuses = (text: string): number[] => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

describe('createListener (HARDENING.md bad input)', () => {
  it('closes a connection whose headers are still arriving after headersTimeout, with 408', async () => {
    const l = await frontedListener({ headersTimeoutMs: 300, timeoutCheckIntervalMs: 50 });
    try {
      // 100 bytes at 20 ms is 2 s of dribbling, far past the 300 ms timeout; the close must come first.
      const got = await exchange(l.port, `GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ${'a'.repeat(100)}`, { dribbleMs: 20, timeoutMs: 1_800 });
      expect(statuses(got)).toEqual([408]);
    } finally {
      await l.close();
    }
  });

  it('answers a request in flight before refusing the bad bytes pipelined after it', async () => {
    const l = await frontedListener();
    try {
      // One write: the parser meets GARBAGE in the same pass that emitted the request, before the handler answers it.
      const got = await exchange(l.port, 'GET /first HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\r\n\r\n');
      expect(statuses(got)).toEqual([200, 400]);
      expect(got).toContain('/first');
    } finally {
      await l.close();
    }
  });

  it('takes over a WebSocket handshake pipelined behind a request only once that request is answered', async () => {
    const l = await frontedListener();
    try {
      // Taking the socket while /first was still being answered threw ERR_HTTP_SOCKET_ASSIGNED out of the process.
      const ws = 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
      const got = await exchange(l.port, `GET /first HTTP/1.1\r\nHost: a\r\n\r\n${ws}`);
      expect(statuses(got)).toEqual([200, 403]);
    } finally {
      await l.close();
    }
  });

  it('replays an h2c upgrade pipelined behind a request as a plain request, after that request is answered', async () => {
    const l = await frontedListener();
    try {
      const got = await exchange(l.port, 'GET /first HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET /third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
      expect(statuses(got)).toEqual([200, 200, 200]);
      expect(got.indexOf('/first')).toBeLessThan(got.indexOf('/second'));
      expect(got.indexOf('/second')).toBeLessThan(got.indexOf('/third'));
    } finally {
      await l.close();
    }
  });

  it('replays a pipelined h2c upgrade once, even when the requests after it are answered too', async () => {
    const l = await frontedListener();
    try {
      // The first request is refused (101 fields) and answered at once; the replayed ones join the same connection.
      const many = Array.from({ length: 101 }, (_, i) => `X-H${i}: v\r\n`).join('');
      const sock = net.connect(l.port, '127.0.0.1');
      let got = '';
      let sentLast = false;
      const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
      sock.setEncoding('latin1');
      sock.on('data', (d: string) => {
        got += d;
        // Once /b and /c are answered, one more request closes the connection: nothing may come before its answer.
        if (!sentLast && statuses(got).length === 3) {
          sentLast = true;
          sock.write('GET /z HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
        }
      });
      sock.write(`GET /a HTTP/1.1\r\nHost: a\r\n${many}\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n`);
      await within(closed, 5_000, `the connection to close after /z; got ${JSON.stringify(got)}`);
      expect(statuses(got)).toEqual([431, 200, 200, 200]);
      expect([...got.matchAll(/\/[bcz]$|\/[bcz](?=HTTP)/gm)].map((m) => m[0])).toEqual(['/b', '/c', '/z']);
    } finally {
      await l.close();
    }
  });

  it('answers an unsupported Expect with 417 before an h2c upgrade pipelined behind it', async () => {
    const l = await frontedListener();
    try {
      const got = await exchange(l.port, 'GET /a HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
      expect(statuses(got)).toEqual([417, 200, 200]);
      expect(got).toMatch(/x-mesh-error: bad-request/);
    } finally {
      await l.close();
    }
  });

  it.each([
    ['CONNECT', 'CONNECT a:80 HTTP/1.1\r\nHost: a:80\r\n\r\n', 405],
    ['a request whose chunked body breaks', 'POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n', 400],
  ])('answers the request in flight before refusing %s pipelined after it', async (_what, text, status) => {
    const l = await frontedListener();
    try {
      const got = await exchange(l.port, `GET /first HTTP/1.1\r\nHost: a\r\n\r\n${text}`);
      expect(statuses(got)).toEqual([200, status]);
      expect(got).toContain('/first');
    } finally {
      await l.close();
    }
  });

  it('forwards nothing pipelined behind a refusal that closes the connection', async () => {
    let served = 0;
    const l = await frontedListener({}, { onServe: () => served++ });
    try {
      // A refused request with a body closes the connection (its body is not drained): /second would go unanswered.
      const got = await exchange(l.port, 'POST /a%2fb HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nxGET /second HTTP/1.1\r\nHost: a\r\n\r\n');
      expect(statuses(got)).toEqual([400]);
      expect(served).toBe(0);
    } finally {
      await l.close();
    }
  });

  it('refuses a body that breaks mid-way at once, since the request it belongs to can never complete', async () => {
    const l = await frontedListener();
    try {
      const got = await exchange(l.port, 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nZZ\r\n');
      expect(statuses(got)).toEqual([400]);
    } finally {
      await l.close();
    }
  });

  it.each([
    ['an HTTP/2.0 request line', 505, 'GET / HTTP/2.0\r\nHost: a\r\n\r\n'],
    ['an unknown HTTP/1 minor version', 505, 'GET / HTTP/1.2\r\nHost: a\r\n\r\n'],
    ['HTTP/3.0', 505, 'GET / HTTP/3.0\r\nHost: a\r\n\r\n'],
    ['a bare LF after a good version (llhttp calls it a version error)', 400, 'GET / HTTP/1.1\nHost: a\n\n'],
    ['PRI as an HTTP/1.1 method', 400, 'PRI / HTTP/1.1\r\nHost: a\r\n\r\n'],
    ['an HTTP/1.1 request without Host', 400, 'POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx'],
    ['Transfer-Encoding with a coding before chunked', 400, 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n'],
    ['a Content-Length over the body limit', 413, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\nx'],
    ['chunk extensions over 16 KiB', 413, `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;${'e'.repeat(20_000)}\r\nx\r\n0\r\n\r\n`],
  ])('answers %s with %i, x-mesh-error and a close', async (_what, status, text) => {
    const l = await frontedListener({ maxRequestBodyBytes: 1_000 });
    try {
      const got = await exchange(l.port, text);
      expect(statuses(got)).toEqual([status]);
      expect(got).toMatch(/x-mesh-error: /i);
      expect(got).toMatch(/connection: close/i);
    } finally {
      await l.close();
    }
  });
});
