// The Status answer for the whole mesh: this replica's sidecars, every live peer's (asked over gRPC), and registrations no live replica holds.
import { call, createMeshClient } from '../api/cp-client.js';
import type { Logger } from '../api/log.js';
import type { ReplicaStatus, SidecarStatus, StatusResponse } from '../api/protocol.js';
import type { PushServer } from './push.js';
import type { Registry } from './registry.js';
import { ORPHAN_GRACE_MS } from './registry.js';
import type { MeshState, ReplicaRecord } from './state.js';
import type { Store } from './store.js';

const PEER_TIMEOUT_MS = 2_000;

export interface StatusDeps {
  readonly name: string;
  readonly store: Store;
  readonly state: MeshState;
  readonly push: PushServer;
  readonly registry: Registry;
  readonly caPem: string;
  readonly trustDomain: string;
  readonly adminToken: string;
  readonly log: Logger;
}

/** Asks one peer for its own sidecars. Replicas share the CA and the admin token (they share `--dir`'s contents). */
async function askPeer(d: StatusDeps, peer: ReplicaRecord): Promise<StatusResponse> {
  const client = createMeshClient({ address: peer.address, caPem: d.caPem, trustDomain: d.trustDomain });
  try {
    return await call<StatusResponse>(client, 'Status', { localOnly: true }, { adminToken: d.adminToken, timeoutMs: PEER_TIMEOUT_MS });
  } finally {
    client.close();
  }
}

const keyOf = (s: { namespace: string; service: string; instance: string }): string => `${s.namespace}/${s.service}/${s.instance}`;

export async function meshStatus(d: StatusDeps, localOnly: boolean): Promise<StatusResponse> {
  const sidecars = d.push.status();
  const replicas: ReplicaStatus[] = [{ name: d.name, address: d.registry.advertised, error: '' }];
  if (!localOnly) {
    const peers = [...d.state.liveReplicas().values()].filter((r) => r.session !== d.registry.id);
    const answers = await Promise.allSettled(peers.map((p) => askPeer(d, p)));
    const seen = new Set(sidecars.map(keyOf));
    answers.forEach((a, i) => {
      const peer = peers[i];
      if (a.status === 'rejected') {
        const error = (a.reason as Error).message;
        d.log.warn('peer_status_failed', { peer: peer.name, address: peer.address, error });
        replicas.push({ name: peer.name, address: peer.address, error });
        return;
      }
      replicas.push({ name: peer.name, address: peer.address, error: '' });
      // A sidecar that just moved may briefly be reported by two replicas: the first answer wins.
      for (const s of a.value.sidecars) if (!seen.has(keyOf(s))) { seen.add(keyOf(s)); sidecars.push(s); }
    });
    const bySession = d.state.liveReplicas();
    for (const r of d.state.registrations()) {
      if (seen.has(keyOf(r))) continue;
      const owner = r.session ? bySession.get(r.session) : undefined;
      const failed = owner && replicas.find((x) => x.name === owner.name && x.error);
      const unknownReason = !owner
        ? `not connected: registered by ${r.controlPlane ?? 'a replica'} that is gone; removed within ${ORPHAN_GRACE_MS / 1000} s unless it reconnects`
        : failed ? `replica ${owner.name} did not answer: ${failed.error}`
          : `not connected (yet) to ${owner.name}`;
      sidecars.push({
        service: r.service, namespace: r.namespace, instance: r.instance, address: r.address, ackedVersion: '', sentVersion: '', nackError: '',
        certExpiryUnix: 0, connectedSinceUnix: r.connectedSince ? Math.floor(r.connectedSince / 1000) : 0, controlPlane: owner?.name ?? r.controlPlane ?? '',
        inSync: false, unknownReason,
      } satisfies SidecarStatus);
    }
  }
  return {
    currentVersion: String(d.state.revision), sidecars, store: d.store.kind, storeHealthy: d.state.healthy,
    caTrustDomain: d.trustDomain, controlPlane: d.name, replicas,
  };
}
