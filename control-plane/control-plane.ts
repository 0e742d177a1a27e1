// The control-plane program: open the store, load or create the CA, serve gRPC (and a small HTTP API with /metrics), keep the
// Prometheus file_sd current, stop cleanly.
import { generateKeyPairSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../api/log.js';
import { DEFAULTS } from '../api/resources.js';
import { CA_FILES, initCa, type CertificateAuthority } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import { createCsr } from '../certs/workload.js';
import { FileSdWriter } from './file-sd.js';
import { createHttpApi } from './http-api.js';
import { PushServer } from './push.js';
import { Registry } from './registry.js';
import { ResourcesApi } from './resources-api.js';
import { CONTROL_PLANE_ID, createServer } from './server.js';
import { MeshState } from './state.js';
import { meshStatus } from './status.js';
import { meshStat } from './stats-mesh.js';
import { StatsStore } from './stats-store.js';
import type { Store } from './store.js';
import { openEmbeddedStore } from './store-embedded.js';
import { openEtcdStore } from './store-etcd.js';
import { ControlPlaneTelemetry } from './telemetry.js';
import { Tokens } from './tokens.js';

export interface ControlPlaneOptions {
  readonly dir: string;
  readonly listen: { host: string; port: number };
  readonly http: { host: string; port: number };
  readonly etcd: string[] | undefined;
  readonly trustDomain: string;
  readonly log: Logger;
  /** Distinguishes replicas in `mesh status`. */
  readonly name: string;
  /** host:port peers reach this replica's gRPC API at (default: the listen address; a wildcard host becomes the host name). */
  readonly advertise?: string;
  /** registry.ts ORPHAN_GRACE_MS unless given. */
  readonly registryGraceMs?: number;
  /** Where the Prometheus file_sd of every sidecar's and replica's /metrics goes (default <dir>/prometheus/targets.json). */
  readonly prometheusSd?: string;
}

export interface ControlPlane {
  readonly grpcAddress: string;
  readonly httpAddress: string;
  /** The Prometheus file_sd this replica writes. */
  readonly prometheusSd: string;
  stop(): Promise<void>;
}

/** A fresh server certificate per start, with the control plane's SPIFFE id (clients check it, not a host name). */
async function serverCredentials(ca: CertificateAuthority, dir: string): Promise<grpc.ServerCredentials> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const id = CONTROL_PLANE_ID(ca.trustDomain);
  const cert = signCsr(ca, createCsr({ keyPem: privateKey }, id), { id, ttlMs: 365 * 24 * 3600_000 });
  await writeFile(join(dir, 'control-plane.crt'), cert, { mode: 0o644 });
  await writeFile(join(dir, 'control-plane.key'), privateKey, { mode: 0o600 });
  return grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: Buffer.from(cert), private_key: Buffer.from(privateKey) }], false);
}

function advertised(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' || host === '' ? hostname() : host;
  return h.includes(':') ? `[${h}]:${port}` : `${h}:${port}`;
}

export async function startControlPlane(o: ControlPlaneOptions): Promise<ControlPlane> {
  const { log } = o;
  const { ca, created } = await initCa(o.dir, o.trustDomain);
  if (created) log.info('ca_created', { dir: o.dir, trust_domain: ca.trustDomain });
  const adminToken = (await readFile(join(o.dir, CA_FILES.token), 'utf8')).trim();
  let store: Store;
  if (o.etcd?.length) {
    store = await openEtcdStore(o.etcd, { log });
    log.info('store', { kind: 'etcd', endpoints: o.etcd });
  } else {
    store = await openEmbeddedStore(join(o.dir, 'store'), { log });
    log.info('store', { kind: 'embedded', note: 'single replica: use --etcd for several control planes' });
  }
  const state = new MeshState(store, log);
  await state.start();
  const registry = new Registry(store, state, log, o.name, undefined, o.registryGraceMs);
  const stats = new StatsStore();
  // The gauges read `push` at scrape time, after it exists.
  const telemetry: ControlPlaneTelemetry = new ControlPlaneTelemetry({
    connectedSidecars: (): number => push.connectionCount, storeRevision: () => state.revision, storeHealthy: () => state.healthy,
  });
  const push: PushServer = new PushServer(registry, state, log, o.name, ca.trustDomain, { telemetry, stats });
  const resources = new ResourcesApi(store, state, ca.trustDomain);
  const tokens = new Tokens(store, adminToken);
  const certificateTTLMs = () => {
    try {
      return push.compiled().snapshot.meshConfig.certificateTTLMs;
    } catch {
      return DEFAULTS.meshConfig.certificateTTLMs;
    }
  };
  const statusDeps = { name: o.name, store, state, push, registry, caPem: ca.certPem, trustDomain: ca.trustDomain, adminToken, log };
  const statDeps = { name: o.name, state, registry, stats, caPem: ca.certPem, trustDomain: ca.trustDomain, adminToken, log };
  const server = createServer({
    ca, push, resources, tokens, log, certificateTTLMs, status: (localOnly) => meshStatus(statusDeps, localOnly), stat: (req) => meshStat(statDeps, req),
  });
  const port = await new Promise<number>((resolve, reject) => {
    void serverCredentials(ca, o.dir).then((creds) =>
      server.bindAsync(`${o.listen.host}:${o.listen.port}`, creds, (err, p) => (err ? reject(err) : resolve(p))), reject);
  });
  const health = createHttpApi({ state, telemetry, status: () => meshStatus(statusDeps, false) });
  await new Promise<void>((resolve, reject) => {
    health.once('error', reject);
    health.listen(o.http.port, o.http.host, () => resolve());
  });
  const grpcAddress = `${o.listen.host}:${port}`;
  const httpPort = (health.address() as AddressInfo).port;
  await registry.start(o.advertise ?? advertised(o.listen.host, port), advertised(o.http.host, httpPort));
  const httpAddress = `${o.http.host}:${httpPort}`;
  const fileSd = new FileSdWriter(o.prometheusSd ?? join(o.dir, 'prometheus', 'targets.json'), state, log);
  await fileSd.start();
  log.info('listening', { grpc: grpcAddress, http: httpAddress, revision: state.revision, prometheus_sd: fileSd.path });
  return {
    grpcAddress,
    httpAddress,
    prometheusSd: fileSd.path,
    async stop() {
      await fileSd.close();
      push.close();
      await registry.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      health.close();
      state.close();
      await store.close();
    },
  };
}
