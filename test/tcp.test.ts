// End-to-end: `protocol: tcp` through the mesh: an echo over mTLS with data integrity, identity-only AccessPolicy refusing at the TCP level, per-connection balancing, failover from a dead endpoint.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessPolicy, issueClientCert, meshCa, meshService, spiffeOf } from './harness/mtls.js';
import { sumWhere } from './harness/prom.js';
import { toYaml, type Doc } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { startTcpEcho, tcpExchange, type TcpEcho } from './harness/tcp-echo.js';
import { waitFor } from './harness/wait.js';

const doc = (kind: string, name: string, spec: Record<string, unknown>): Doc => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

/** A `protocol: tcp` service over mesh mTLS, round-robin so the balancing test can count exactly. */
function tcpService(name: string, endpoints?: string[]): Doc[] {
  const docs = [doc('Service', name, { protocol: 'tcp' })];
  if (endpoints) docs.push(doc('Endpoints', name, { service: name, endpoints: endpoints.map((address) => ({ address, labels: {} })) }));
  docs.push(doc('TrafficPolicy', name, { service: name, loadBalancer: { policy: 'round-robin' }, tls: { mode: 'mutual' } }));
  return docs;
}

/** The --tcp listener address of `service`, from the sidecar's "listening" log line. */
function tcpAddress(sc: Sidecar, service: string): string {
  for (const line of sc.stderr().split('\n')) {
    if (!line.includes('"listening"')) continue;
    const addr = (JSON.parse(line) as { tcp?: Record<string, string> }).tcp?.[service];
    if (addr) return addr;
  }
  throw new Error(`no --tcp listener for "${service}" in the listening line:\n${sc.stderr()}`);
}

let echoA: TcpEcho;
let echoB: TcpEcho;
let dbA: Sidecar;
let dbB: Sidecar;
let api: Sidecar;
let apiDb: string;

const serverResources = toYaml([
  ...tcpService('db'),
  ...meshService({ name: 'api' }),
  accessPolicy('db-clients', 'db', 'allow', [{ from: ['api'] }]),
]);

const clientSidecar = async (service: string, endpoints: string[]) => {
  const sc = await startSidecar({
    service,
    resources: toYaml([...meshService({ name: service }), ...tcpService('db', endpoints)]),
    extraArgs: ['--tcp', 'db=127.0.0.1:0'],
  });
  return { sc, db: tcpAddress(sc, 'db') };
};

const inbound = async (direction: string, result: string): Promise<number> =>
  sumWhere(await dbA.samples('mesh_tcp_connections_total'), { direction, destination_service: 'db', result }) +
  sumWhere(await dbB.samples('mesh_tcp_connections_total'), { direction, destination_service: 'db', result });

beforeAll(async () => {
  [echoA, echoB] = await Promise.all([startTcpEcho(), startTcpEcho()]);
  [dbA, dbB] = await Promise.all([
    startSidecar({ service: 'db', app: echoA.address, resources: serverResources }),
    startSidecar({ service: 'db', app: echoB.address, resources: serverResources }),
  ]);
  ({ sc: api, db: apiDb } = await clientSidecar('api', [dbA.inbound, dbB.inbound]));
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await Promise.all([echoA?.close(), echoB?.close()]);
});

describe('TCP through api → mTLS (ALPN trellis-tcp/1) → db', () => {
  it('echoes 1 MiB and 1,000 small writes intact, and counts bytes and connections', async () => {
    const big = randomBytes(1024 * 1024);
    const small = Array.from({ length: 1_000 }, (_, i) => randomBytes(1 + (i % 100)));
    for (const chunks of [[big], small]) {
      const total = chunks.reduce((n, c) => n + c.length, 0);
      const out = await tcpExchange(apiDb, chunks, total);
      expect(out.error).toBeUndefined();
      expect(out.data.length).toBe(total);
      expect(out.data.equals(Buffer.concat(chunks))).toBe(true);
    }
    const sent = sumWhere(await api.samples('mesh_tcp_bytes_total'), { direction: 'outbound', destination_service: 'db', flow: 'sent' });
    const received = sumWhere(await api.samples('mesh_tcp_bytes_total'), { direction: 'outbound', destination_service: 'db', flow: 'received' });
    expect(sent).toBeGreaterThanOrEqual(big.length + 1_000);
    expect(received).toBeGreaterThanOrEqual(big.length + 1_000);
    expect(sumWhere(await api.samples('mesh_tcp_connections_total'), { direction: 'outbound', result: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(await inbound('inbound', 'ok')).toBeGreaterThanOrEqual(2);
    await waitFor(async () => sumWhere(await api.samples('mesh_tcp_connections_active'), {}) === 0, { what: 'no TCP connection left open on api' });
  }, 40_000);

  it('balances per connection: 20 connections, 10 to each endpoint (round-robin)', async () => {
    const [a0, b0] = [echoA.connections(), echoB.connections()];
    for (let i = 0; i < 20; i++) {
      const out = await tcpExchange(apiDb, [Buffer.from(`ping ${i}`)], `ping ${i}`.length);
      expect(out.data.toString()).toBe(`ping ${i}`);
    }
    expect([echoA.connections() - a0, echoB.connections() - b0]).toEqual([10, 10]);
  }, 40_000);

  it('a denied identity is refused at the TCP level: closed, nothing reaches the app, mesh_access_denied_total counts it', async () => {
    const { db: intruderDb } = await clientSidecar('intruder', [dbA.inbound, dbB.inbound]);
    const denied0 = sumWhere(await dbA.samples('mesh_access_denied_total'), { destination_service: 'db', policy: 'db-clients' }) +
      sumWhere(await dbB.samples('mesh_access_denied_total'), { destination_service: 'db', policy: 'db-clients' });
    const refused0 = await inbound('inbound', 'denied');
    const [conns0, bytes0] = [echoA.connections() + echoB.connections(), echoA.bytes() + echoB.bytes()];
    for (let i = 0; i < 2; i++) {
      const out = await tcpExchange(intruderDb, [Buffer.from('SELECT secrets')], 14, 10_000);
      expect(out.closedByPeer).toBe(true);
      expect(out.data.length).toBe(0);
    }
    // Straight to the inbound port with a valid mesh certificate for "intruder" and the TCP ALPN id.
    const direct = await tcpExchange(dbA.inbound, [Buffer.from('SELECT secrets')], 14, 10_000, await directTls('intruder'));
    expect(direct.closedByPeer).toBe(true);
    expect(direct.data.length).toBe(0);
    await waitFor(async () => (await inbound('inbound', 'denied')) >= refused0 + 3, { what: 'three inbound TCP refusals' });
    const denied = sumWhere(await dbA.samples('mesh_access_denied_total'), { destination_service: 'db', policy: 'db-clients' }) +
      sumWhere(await dbB.samples('mesh_access_denied_total'), { destination_service: 'db', policy: 'db-clients' });
    expect(denied).toBe(denied0 + 3);
    expect(echoA.connections() + echoB.connections()).toBe(conns0);
    expect(echoA.bytes() + echoB.bytes()).toBe(bytes0);
  }, 40_000);

  it('a service that is not protocol: tcp takes no raw TCP connection, whoever calls', async () => {
    // api is an http service: the TCP ALPN path would skip its per-request policies.
    const before = sumWhere(await api.samples('mesh_tcp_connections_total'), { direction: 'inbound', result: 'not-tcp' });
    const out = await tcpExchange(api.inbound, [Buffer.from('GET / HTTP/1.1\r\n\r\n')], 1, 10_000, await directTls('db'));
    expect(out.closedByPeer).toBe(true);
    expect(out.data.length).toBe(0);
    expect(sumWhere(await api.samples('mesh_tcp_connections_total'), { direction: 'inbound', result: 'not-tcp' })).toBe(before + 1);

    // And the caller's side says so before dialling: --tcp for an http service.
    const probe = await startSidecar({
      service: 'probe',
      resources: toYaml([...meshService({ name: 'probe' }), ...meshService({ name: 'api', endpoints: [api.inbound] })]),
      extraArgs: ['--tcp', 'api=127.0.0.1:0'],
    });
    const refused = await tcpExchange(tcpAddress(probe, 'api'), [Buffer.from('hello')], 1, 10_000);
    expect(refused.closedByPeer).toBe(true);
    expect(refused.data.length).toBe(0);
    expect(sumWhere(await probe.samples('mesh_tcp_connections_total'), { direction: 'outbound', destination_service: 'api', result: 'not-tcp' })).toBe(1);
  }, 30_000);

  it('a dead endpoint costs a connect failure, then the connection goes to the live one, and it is ejected', async () => {
    const dead = await closedPort();
    const { sc: api2, db } = await clientSidecar('api', [dead, dbA.inbound]);
    const a0 = echoA.connections();
    // Two tunnels: round-robin puts the dead endpoint first for at least one, and at most two connect failures stay
    // under the default 5 that eject by themselves, so the ejection below is the liveness probes' doing.
    for (let i = 0; i < 2; i++) {
      const out = await tcpExchange(db, [Buffer.from(`hello ${i}`)], `hello ${i}`.length);
      expect(out.data.toString(), out.error).toBe(`hello ${i}`);
    }
    expect(echoA.connections() - a0).toBe(2);
    expect(sumWhere(await api2.samples('mesh_tcp_connections_total'), { direction: 'outbound', result: 'ok' })).toBe(2);
    expect(api2.stderr()).toContain('tcp_connect_failed');
    // The refused connect started liveness probes (cluster.ts), so the dead endpoint is ejected without more tunnels
    // failing on it (HARDENING.md: within 1 s; polled here with slack for a shared machine).
    await waitFor(async () => (await api2.endpoints('db')).find((e) => e.address === dead)?.ejected === true, {
      timeoutMs: 3_000, intervalMs: 50, what: 'the dead TCP endpoint ejected by its liveness probes',
    });
  }, 40_000);
});

/** TLS client options with a mesh certificate for `service`, offering only the TCP ALPN id. */
async function directTls(service: string) {
  const cert = await issueClientCert(service);
  return {
    ca: (await meshCa()).certPem,
    key: cert.keyPem,
    cert: cert.certPem,
    ALPNProtocols: ['trellis-tcp/1'],
    checkServerIdentity: (_host: string, c: { subjectaltname?: string }) =>
      c.subjectaltname?.includes(spiffeOf('db')) || c.subjectaltname?.includes(spiffeOf('api')) ? undefined : new Error('unexpected server identity'),
  };
}

/** An address nothing listens on (bound once, then closed). */
async function closedPort(): Promise<string> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return `127.0.0.1:${port}`;
}
