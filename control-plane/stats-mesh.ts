// The Stat answer for the whole mesh: this replica's window deltas plus every live peer's (asked with local_only), merged
// as raw counts and Δt, and only then turned into rates, success rates and percentiles (control-plane/stats-aggregate.ts).
import * as grpc from '@grpc/grpc-js';
import { call, createMeshClient } from '../api/cp-client.js';
import type { Logger } from '../api/log.js';
import type { ReplicaRecord } from './state.js';
import type { ReplicaStatus, SeriesDelta, StatRequest, StatResponse } from '../api/protocol.js';
import type { Registry } from './registry.js';
import { aggregateServices, mergeDeltas } from './stats-aggregate.js';
import { STATS_RETENTION_MS, type StatsStore } from './stats-store.js';
import type { MeshState } from './state.js';

const PEER_TIMEOUT_MS = 2_000;
export const DEFAULT_WINDOW_SECONDS = 60;

export interface StatDeps {
  readonly name: string;
  readonly state: MeshState;
  readonly registry: Registry;
  readonly stats: StatsStore;
  readonly caPem: string;
  readonly trustDomain: string;
  readonly adminToken: string;
  readonly log: Logger;
}

function invalid(details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code: grpc.status.INVALID_ARGUMENT, details, metadata: new grpc.Metadata() });
}

/** The window in seconds: default 60, at most the retention (what older reports were kept for). */
export function windowSeconds(req: Pick<StatRequest, 'windowSeconds'>): number {
  const w = req.windowSeconds || DEFAULT_WINDOW_SECONDS;
  if (!Number.isFinite(w) || w <= 0) throw invalid(`window must be a positive duration, got ${w} s`);
  if (w * 1000 > STATS_RETENTION_MS) throw invalid(`window ${w} s is longer than the ${STATS_RETENTION_MS / 1000} s of stats the control plane keeps`);
  return w;
}

async function askPeer(d: StatDeps, peer: ReplicaRecord, window: number): Promise<{ deltas: SeriesDelta[]; sidecars: number }> {
  const client = createMeshClient({ address: peer.address, caPem: d.caPem, trustDomain: d.trustDomain });
  try {
    const r = await call<StatResponse>(client, 'Stat', { service: '', windowSeconds: window, localOnly: true }, { adminToken: d.adminToken, timeoutMs: PEER_TIMEOUT_MS });
    return { deltas: r.deltas ?? [], sidecars: r.sidecars ?? 0 };
  } finally {
    client.close();
  }
}

export async function meshStat(d: StatDeps, req: StatRequest): Promise<StatResponse> {
  const window = windowSeconds(req);
  const local = d.stats.deltas(window * 1000);
  const replicas: ReplicaStatus[] = [{ name: d.name, address: d.registry.advertised, error: '' }];
  const base = { windowSeconds: window, controlPlane: d.name };
  if (req.localOnly) {
    const own = req.service ? local.filter((x) => x.destinationService === req.service) : local;
    return { ...base, services: [], deltas: own, replicas, sidecars: d.stats.reporting(window * 1000) };
  }
  const peers = [...d.state.liveReplicas().values()].filter((r) => r.session !== d.registry.id);
  const answers = await Promise.allSettled(peers.map((p) => askPeer(d, p, window)));
  const groups: SeriesDelta[][] = [local];
  // A sidecar reports to one replica at a time, so the replicas' counts add up (one that moved inside the window counts twice).
  let sidecars = d.stats.reporting(window * 1000);
  answers.forEach((a, i) => {
    const peer = peers[i];
    if (a.status === 'rejected') {
      const error = (a.reason as Error).message;
      d.log.warn('peer_stat_failed', { peer: peer.name, address: peer.address, error });
      replicas.push({ name: peer.name, address: peer.address, error });
      return;
    }
    replicas.push({ name: peer.name, address: peer.address, error: '' });
    groups.push(a.value.deltas);
    sidecars += a.value.sidecars;
  });
  const windows = mergeDeltas(groups);
  const services = aggregateServices(windows, req.service);
  return { ...base, services, deltas: [], replicas, sidecars };
}
