// Where a sidecar's config and certificate come from: a resources file and the local CA (standalone), or the control plane (dynamic).
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Clock, Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { StatsReport } from '../api/protocol.js';
import { formatIssue } from '../api/resources.js';
import type { Snapshot } from '../api/snapshot.js';
import { validateFiles } from '../api/validate-meaning.js';
import { CA_FILES, loadCa } from '../certs/ca.js';
import { uriSans } from '../certs/spiffe.js';
import { compileSnapshot } from '../control-plane/compiler.js';
import { ControlPlaneClient } from './config-client.js';
import { localCaSource, type CertificateSource } from './credentials.js';
import type { Identity } from './runtime.js';

export class ConfigError extends Error {}

export async function loadSnapshot(file: string): Promise<Snapshot> {
  const { resources, issues } = await validateFiles([file]);
  if (issues.length > 0) throw new ConfigError(issues.map(formatIssue).join('\n'));
  return compileSnapshot(resources);
}

export interface ConfigSource {
  readonly trustDomain: string;
  /** Standalone mode's config, applied before listening. */
  readonly first: Snapshot | undefined;
  certificates(ttlMs: () => number | undefined): CertificateSource;
  /** Registers the function that applies a pushed snapshot (it throws to refuse one). */
  onSnapshot(apply: (s: Snapshot) => void): void;
  /** Called once listening: dynamic mode says Hello with the inbound address (and the admin address, for Prometheus file_sd). */
  start(inboundAddress: string, certExpiryUnix: () => number, adminAddress?: string): void;
  certificateRenewed(expiryUnix: number): void;
  /** Dynamic mode only: where stats reports go (proxy/stats-report.ts). */
  readonly stats?: { connected(): boolean; send(report: StatsReport): void };
  stop(): void;
}

export interface SourceOptions {
  readonly config: { readonly mode: 'file'; readonly resources: string } | { readonly mode: 'control-plane'; readonly endpoints: readonly string[]; readonly token: string };
  readonly dir: string;
}

/** The trust domain of a CA certificate, from its `spiffe://<td>` URI SAN. */
function trustDomainOf(caPem: string): string {
  const uri = uriSans(new X509Certificate(caPem)).find((u) => u.startsWith('spiffe://'));
  if (!uri) throw new Error('the mesh CA certificate has no spiffe:// URI SAN');
  return uri.slice('spiffe://'.length).replace(/\/.*$/, '');
}

/** A wildcard bind address is not something a peer can dial; on one machine, loopback is. */
function advertised(address: string): string {
  return address.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
}

export async function configSource(o: SourceOptions, me: Identity, deps: { clock: Clock; random: Random; log: Logger }): Promise<ConfigSource> {
  if (o.config.mode === 'file') {
    const first = await loadSnapshot(o.config.resources);
    const ca = await loadCa(o.dir);
    if (ca.trustDomain !== first.meshConfig.trustDomain) {
      throw new ConfigError(`MeshConfig trustDomain "${first.meshConfig.trustDomain}" does not match the CA in "${o.dir}" (trust domain "${ca.trustDomain}")`);
    }
    return {
      trustDomain: ca.trustDomain,
      first,
      certificates: (ttl) => localCaSource(ca, () => ttl() ?? first.meshConfig.certificateTTLMs),
      onSnapshot: () => undefined,
      start: () => undefined,
      certificateRenewed: () => undefined,
      stop: () => undefined,
    };
  }
  const caPem = await readFile(join(o.dir, CA_FILES.cert), 'utf8').catch(() => {
    throw new Error(`no mesh CA certificate in "${o.dir}" (${CA_FILES.cert}): copy the control plane's ca.crt there`);
  });
  const trustDomain = trustDomainOf(caPem);
  let apply: (s: Snapshot) => void = () => { throw new Error('not ready'); };
  const client = new ControlPlaneClient({ endpoints: o.config.endpoints, caPem, trustDomain, token: o.config.token }, deps, (s) => apply(s));
  return {
    trustDomain,
    first: undefined,
    certificates: () => client.certificateSource(),
    onSnapshot: (fn) => { apply = fn; },
    start: (inbound, expiry, admin) => client.start({
      service: me.service, namespace: me.namespace, instance: me.instance, address: advertised(inbound), labels: { ...me.labels },
      version: '', certExpiryUnix: expiry(), adminAddress: admin ? advertised(admin) : '',
    }),
    stats: { connected: () => client.connected, send: (r) => void client.sendStats(r) },
    certificateRenewed: (unix) => client.updateCertExpiry(unix),
    stop: () => client.stop(),
  };
}
