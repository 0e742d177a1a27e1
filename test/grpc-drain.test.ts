// End-to-end: SIGTERM drains gRPC: a call in flight on either sidecar finishes; the sidecar then exits 0.
import { afterAll, expect, it } from 'vitest';
import { meshService } from './harness/mtls.js';
import { echoClient, grpcService, startEchoServer, unaryCall, type EchoServer } from './harness/grpc.js';
import { toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { waitFor } from './harness/wait.js';

const apps: EchoServer[] = [];

afterAll(async () => {
  await stopAllSidecars();
  await Promise.all(apps.map((a) => a.close()));
});

async function pair(): Promise<{ app: EchoServer; server: Sidecar; client: Sidecar }> {
  const app = await startEchoServer(`echo-${apps.length + 1}`);
  apps.push(app);
  const server = await startSidecar({ service: 'echo', app: app.address, resources: toYaml(grpcService({ name: 'echo' })) });
  const client = await startSidecar({
    service: 'gateway',
    resources: toYaml([...meshService({ name: 'gateway' }), ...grpcService({ name: 'echo', endpoints: [server.inbound] })]),
  });
  return { app, server, client };
}

it.each(['client', 'server'] as const)('SIGTERM to the %s sidecar lets an in-flight call finish, then exits 0', async (which) => {
  const p = await pair();
  const echo = echoClient(p.client.outbound);
  const before = p.app.calls.unary ?? 0;
  const call = unaryCall(echo, { text: 'drain', seq: 1, delayMs: 700 });
  await waitFor(() => (p.app.calls.unary ?? 0) > before, { what: 'the app to receive the call' });
  const exited = (which === 'client' ? p.client : p.server).stop('SIGTERM', 10_000);
  const r = await call;
  expect(r.reply.text).toBe(`${p.app.name}:drain`);
  expect(await exited).toBe(0);
  echo.close();
}, 30_000);
