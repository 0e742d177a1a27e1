// End-to-end: gRPC (grpc-js client and server) through client sidecar → mTLS h2 → server sidecar → h2c app: call kinds, metadata, trailers, deadlines, retries, streams.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { meshService } from './harness/mtls.js';
import { echoClient, grpc, grpcService, startEchoServer, unaryCall, type EchoClient, type EchoServer } from './harness/grpc.js';
import { route, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';

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
});
