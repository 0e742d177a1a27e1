// End-to-end: gRPC (grpc-js client and server) through client sidecar → mTLS h2 → server sidecar → h2c app: call kinds, metadata, trailers, deadlines, retries, streams.
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sumWhere } from './harness/prom.js';
import { issueClientCert, meshCa, meshService } from './harness/mtls.js';
import { echoClient, grpc, grpcFrame, grpcService, startEchoServer, unaryCall, type EchoClient, type EchoServer, type Msg } from './harness/grpc.js';
import { route, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { waitFor } from './harness/wait.js';
import { freePort } from '../cli/ports.js';
import { parseGrpcTimeout } from '../proxy/grpc.js';

let app: EchoServer;
let server: Sidecar;
let client: Sidecar;
let echo: EchoClient;

beforeAll(async () => {
  app = await startEchoServer('echo-1');
  server = await startSidecar({ service: 'echo', app: app.address, resources: toYaml(grpcService({ name: 'echo' })) });
  client = await startSidecar({
    service: 'gateway',
    resources: toYaml([
      ...meshService({ name: 'gateway' }),
      ...grpcService({ name: 'echo', endpoints: [server.inbound] }),
      route('echo', ['echo'], [{
        backends: [{ service: 'echo' }],
        timeout: '10s',
        retries: { attempts: 3, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'resource-exhausted'], backoff: { base: '5ms', max: '20ms' } },
      }]),
    ]),
  });
  echo = echoClient(client.outbound);
}, 45_000);

afterAll(async () => {
  echo?.close();
  await stopAllSidecars();
  await app?.close();
});

describe('gRPC through two sidecars', () => {
  it('unary: reply, initial metadata and trailers preserved', async () => {
    const md = new grpc.Metadata();
    md.set('x-echo', 'hello');
    const r = await unaryCall(echo, { text: 'a', seq: 1 }, md);
    expect(r.reply.text).toBe('echo-1:a');
    expect(r.initial.get('x-initial')).toEqual(['initial:hello']);
    expect(r.trailers.get('x-trailer')).toEqual(['trailer:hello']);
    expect(app.lastMetadata['x-echo']).toBe('hello');
    expect(app.lastMetadata['x-forwarded-client-cert']).toMatch(/URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/gateway$/);
  });

  it('server streaming: every message in order, then trailers', async () => {
    const md = new grpc.Metadata();
    md.set('x-echo', 'ss');
    const call = echo.serverStream({ text: 's', seq: 0, count: 500 }, md);
    const got: number[] = [];
    let initial: grpc.Metadata | undefined;
    call.on('metadata', (m: grpc.Metadata) => { initial = m; });
    call.on('data', (m: Msg) => got.push(m.seq));
    const status = await new Promise<grpc.StatusObject>((resolve, reject) => { call.on('status', resolve); call.on('error', reject); });
    expect(status.code).toBe(grpc.status.OK);
    expect(got).toEqual([...Array(500).keys()]);
    expect(initial?.get('x-initial')).toEqual(['initial:ss']);
    expect(status.metadata.get('x-trailer')).toEqual(['trailer:ss']);
  });

  it('client streaming: the server sees every message; reply and trailers come back', async () => {
    const md = new grpc.Metadata();
    md.set('x-echo', 'cs');
    let trailers: grpc.Metadata | undefined;
    const reply = await new Promise<Msg>((resolve, reject) => {
      const call = echo.clientStream(md, {}, (err, r) => (err ? reject(err) : resolve(r!)));
      call.on('status', (s: grpc.StatusObject) => { trailers = s.metadata; });
      for (let i = 0; i < 100; i++) call.write({ text: `m${i}`, seq: i });
      call.end();
    });
    expect(reply.seq).toBe(100);
    expect(reply.text.split(',')).toEqual([...Array(100).keys()].map((i) => `m${i}`));
    await waitFor(() => trailers !== undefined, { what: 'the status event' });
    expect(trailers?.get('x-trailer')).toEqual(['trailer:cs']);
  });

  it('bidi: 10,000 messages arrive complete and in order, with metadata and trailers', async () => {
    const md = new grpc.Metadata();
    md.set('x-echo', 'bidi');
    const call = echo.bidi(md);
    const N = 10_000;
    const got: number[] = [];
    let initial: grpc.Metadata | undefined;
    call.on('metadata', (m: grpc.Metadata) => { initial = m; });
    call.on('data', (m: Msg) => got.push(m.seq));
    const status = new Promise<grpc.StatusObject>((resolve, reject) => { call.on('status', resolve); call.on('error', reject); });
    // Written with backpressure, so the test exercises flow control through both sidecars rather than one big buffer.
    for (let i = 0; i < N; i++) {
      if (!call.write({ text: `b${i}`, seq: i })) await new Promise((r) => call.once('drain', r));
    }
    call.end();
    const s = await status;
    expect(s.code).toBe(grpc.status.OK);
    expect(got.length).toBe(N);
    expect(got.every((v, i) => v === i)).toBe(true);
    expect(initial?.get('x-initial')).toEqual(['initial:bidi']);
    expect(s.metadata.get('x-trailer')).toEqual(['trailer:bidi']);
  }, 30_000);

  it('an UNAVAILABLE first attempt (Trailers-Only) is retried to success', async () => {
    const before = app.calls.unary ?? 0;
    const r = await unaryCall(echo, { text: 'flaky-1', seq: 1, failFirst: grpc.status.UNAVAILABLE });
    expect(r.reply.text).toBe('echo-1:flaky-1');
    expect((app.calls.unary ?? 0) - before).toBe(2);
    expect(sumWhere(await client.samples('mesh_retries_total'), { destination_service: 'echo', reason: 'unavailable' })).toBeGreaterThanOrEqual(1);
  });

  it('a connect failure is retried on another endpoint: the unread request body is read and replayed, no call is lost', async () => {
    // One endpoint refuses connections. The failure comes back before the client's body has been read, so the retry
    // must first read the rest of the body (gRPC bodies are streamed, and recorded only as they are forwarded).
    const dead = `127.0.0.1:${await freePort()}`;
    const picky = await startSidecar({
      service: 'gateway',
      resources: toYaml([
        ...meshService({ name: 'gateway' }),
        ...grpcService({ name: 'echo', endpoints: [dead, server.inbound], policy: { loadBalancer: { policy: 'round-robin' } } }),
        route('echo', ['echo'], [{ backends: [{ service: 'echo' }], timeout: '10s', retries: { attempts: 3, retryOn: ['connect-failure'], backoff: { base: '5ms', max: '20ms' } } }]),
      ]),
    });
    const c = echoClient(picky.outbound);
    try {
      for (let i = 0; i < 10; i++) {
        const r = await unaryCall(c, { text: `retry-${i}`, seq: i });
        expect(r.reply.text).toBe(`echo-1:retry-${i}`);
      }
      expect(sumWhere(await picky.samples('mesh_retries_total'), { destination_service: 'echo', reason: 'connect-failure' })).toBeGreaterThanOrEqual(1);
    } finally {
      c.close();
      await picky.stop();
    }
  });

  it('a status the route does not list (INTERNAL) is not retried', async () => {
    const before = app.calls.unary ?? 0;
    await expect(unaryCall(echo, { text: 'broken-1', seq: 1, failFirst: grpc.status.INTERNAL })).rejects.toMatchObject({ code: grpc.status.INTERNAL });
    expect((app.calls.unary ?? 0) - before).toBe(1);
  });

  it('a deadline that expires at the second hop: DEADLINE_EXCEEDED, the app got a shrunk grpc-timeout and was cancelled', async () => {
    const cancelledBefore = app.cancelled;
    const err = await unaryCall(echo, { text: 'slow', seq: 1, delayMs: 5_000 }, new grpc.Metadata(), { deadline: Date.now() + 400 })
      .then(() => undefined, (e: grpc.ServiceError) => e);
    expect(err?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    // The app saw less than the 400 ms the client gave: each sidecar took off the time already spent.
    expect(app.lastDeadlineMs).toBeLessThan(400);
    expect(app.lastDeadlineMs).toBeGreaterThan(0);
    await waitFor(() => app.cancelled > cancelledBefore, { what: 'the app call to be cancelled' });
  });

  it('the second hop enforces grpc-timeout by itself: DEADLINE_EXCEEDED made by the server sidecar, app cancelled', async () => {
    // Straight to a server sidecar's inbound port (mTLS, ALPN h2) with no client-side timer, in front of an h2c app that
    // never answers and ignores its deadline. A grpc-js app would end the call itself: the sidecar forwards the time
    // left, rounded down, so the app's own timer races the sidecar's and either may answer first.
    const deaf = await startDeafGrpcApp();
    const sidecar = await startSidecar({ service: 'deaf', app: deaf.address, resources: toYaml(grpcService({ name: 'deaf' })) });
    const cert = await issueClientCert('gateway');
    const session = http2.connect(`https://${sidecar.inbound}`, {
      key: cert.keyPem, cert: cert.certPem, ca: (await meshCa()).certPem, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined,
    });
    session.on('error', () => undefined);
    try {
      const started = Date.now();
      const got = await new Promise<{ headers: http2.IncomingHttpHeaders; trailers?: http2.IncomingHttpHeaders }>((resolve, reject) => {
        const s = session.request({
          ':method': 'POST', ':path': '/trellis.test.Echo/Unary', ':authority': 'deaf', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '300m',
        });
        let headers: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders | undefined;
        s.on('response', (h) => { headers = h; });
        s.on('trailers', (t) => { trailers = t; });
        s.on('error', reject);
        s.on('close', () => resolve({ headers, trailers }));
        s.resume();
        s.end(grpcFrame({ text: 'slow-direct', seq: 1 }));
      });
      const status = got.trailers?.['grpc-status'] ?? got.headers['grpc-status'];
      expect(status).toBe('4');
      expect(got.headers['x-mesh-error'] ?? got.trailers?.['x-mesh-error']).toBe('upstream-timeout');
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);
      // The app was told less than the 300 ms the caller gave: the sidecar took off the time already spent.
      expect(deaf.lastTimeoutMs).toBeLessThan(300);
      expect(deaf.lastTimeoutMs).toBeGreaterThan(0);
      await waitFor(() => deaf.cancelled >= 1, { what: 'the app stream to be reset by the sidecar' });
      await waitFor(async () => sumWhere(await sidecar.samples('mesh_requests_total'), { direction: 'inbound', grpc_status: '4' }) >= 1, {
        what: 'inbound mesh_requests_total{grpc_status="4"} on the server sidecar',
      });
    } finally {
      session.close();
      await sidecar.stop();
      await deaf.close();
    }
  });

  it('metrics carry grpc_status', async () => {
    const ok = sumWhere(await client.samples('mesh_requests_total'), { direction: 'outbound', destination_service: 'echo', grpc_status: '0' });
    expect(ok).toBeGreaterThanOrEqual(4);
    const http = await client.samples('mesh_requests_total');
    expect(http.every((s) => 'grpc_status' in s.labels)).toBe(true);
  });
});

/** An h2c "gRPC" app that reads each call's grpc-timeout and never answers: only the sidecar can end its calls. */
async function startDeafGrpcApp(): Promise<{ address: string; lastTimeoutMs: number | undefined; cancelled: number; close(): Promise<void> }> {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  const state = {
    address: '', lastTimeoutMs: undefined as number | undefined, cancelled: 0,
    close: () => new Promise<void>((resolve) => { for (const s of sessions) s.destroy(); server.close(() => resolve()); }),
  };
  server.on('stream', (stream, headers) => {
    state.lastTimeoutMs = parseGrpcTimeout(headers['grpc-timeout']);
    stream.on('error', () => undefined);
    stream.resume();
    stream.on('close', () => { if (!stream.headersSent) state.cancelled++; });
  });
  server.on('session', (s) => { sessions.add(s); s.on('close', () => sessions.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return state;
}
