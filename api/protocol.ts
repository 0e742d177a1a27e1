// The control-plane protocol at the boundary: loads api/mesh.proto once and names its message shapes for TypeScript.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The .proto sits in api/ of the package root, both when running from source and from dist/. */
function protoPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const p = join(dir, 'api', 'mesh.proto');
    if (existsSync(p)) return p;
    const here = join(dir, 'mesh.proto');
    if (existsSync(here)) return here;
    dir = dirname(dir);
  }
  throw new Error('api/mesh.proto not found next to the program');
}

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated service: its `.service` definition for servers, and the constructor for clients. */
export function meshService(): grpc.ServiceClientConstructor {
  if (!cached) {
    const def = protoLoader.loadSync(protoPath(), { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { trellis: { mesh: { v1: { Mesh: grpc.ServiceClientConstructor } } } };
    cached = pkg.trellis.mesh.v1.Mesh;
  }
  return cached;
}

/** Keepalive on both sides (DESIGN.md §2): dead peers are noticed in seconds, not at the next TCP timeout. */
export const KEEPALIVE_OPTIONS = Object.freeze({
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
});

export const SERVER_KEEPALIVE_OPTIONS = Object.freeze({
  ...KEEPALIVE_OPTIONS,
  'grpc.http2.min_time_between_pings_ms': 5_000,
  'grpc.http2.max_pings_without_data': 0,
});

export interface JoinRequest { token: string; csrPem: string; service: string; namespace: string }
export interface JoinResponse { certPem: string; caPem: string }
export interface Hello { service: string; namespace: string; instance: string; address: string; labels: Record<string, string>; version: string; certExpiryUnix: number; snapshotHash?: string; adminAddress?: string }
export interface Ack { version: string; nonce: string }
export interface Nack { version: string; nonce: string; error: string }
export interface StatsSeries {
  direction: string; sourceService: string; destinationService: string; route: string;
  codes: number[]; codeCounts: number[]; bucketCounts: number[]; durationSum: number;
}
export interface StatsReport { startedUnixMs: number; bucketBounds: number[]; series: StatsSeries[] }
export interface DiscoveryRequest { hello?: Hello; ack?: Ack; nack?: Nack; stats?: StatsReport; kind?: 'hello' | 'ack' | 'nack' | 'stats' }
export interface SnapshotMessage { version: string; nonce: string; snapshotJson: string; hash: string }
export interface ApplyRequest { yaml: string; file: string; dryRun: boolean }
export interface ApplyResponse { results: string[]; issues: string[]; revision: number }
export interface DeleteRequest { kind: string; name: string; namespace: string; yaml: string; file: string }
export interface GetRequest { kind: string; name: string; namespace: string }
export interface GetResponse { resourcesJson: string; revision: number }
export interface DiffResponse { changes: string[]; issues: string[] }
export interface SidecarStatus {
  service: string; namespace: string; instance: string; address: string; ackedVersion: string; sentVersion: string;
  nackError: string; certExpiryUnix: number; connectedSinceUnix: number; controlPlane: string; inSync: boolean; unknownReason: string;
}
export interface StatusRequest { localOnly: boolean }
export interface ReplicaStatus { name: string; address: string; error: string }
export interface StatusResponse {
  currentVersion: string; sidecars: SidecarStatus[]; store: string; storeHealthy: boolean; caTrustDomain: string; controlPlane: string; replicas: ReplicaStatus[];
}
export interface StatRequest { service: string; windowSeconds: number; localOnly: boolean }
export interface SeriesDelta {
  sidecar: string; direction: string; sourceService: string; destinationService: string; route: string; seconds: number;
  codes: number[]; codeCounts: number[]; bucketCounts: number[]; durationSum: number; bucketBounds: number[];
}
export interface LatencyMs { p50: number; p95: number; p99: number }
export interface RouteStat { route: string; requestsPerSecond: number; successRate: number; latencyMs: LatencyMs; requests: number }
export interface ServiceStat extends Omit<RouteStat, 'route'> { service: string; routes: RouteStat[]; source: string }
export interface StatResponse {
  windowSeconds: number; services: ServiceStat[]; deltas: SeriesDelta[]; controlPlane: string; replicas: ReplicaStatus[]; sidecars: number;
}
export interface TokenRequest { service: string; namespace: string; ttlSeconds: number }
export interface TokenResponse { token: string; expiresUnix: number }
