// Dynamic mode: join the control plane for certificates, hold one discovery stream, apply each snapshot atomically, ACK or NACK.
import type * as grpc from '@grpc/grpc-js';
import type { Clock, Random, Timer } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import { call, createMeshClient, type MeshClient } from '../api/cp-client.js';
import type { DiscoveryRequest, Hello, JoinResponse, SnapshotMessage, StatsReport } from '../api/protocol.js';
import { deepFreeze, type Snapshot } from '../api/snapshot.js';
import type { SpiffeId } from '../certs/spiffe.js';
import type { CertificateSource } from './credentials.js';

export interface ControlPlaneSettings {
  /** host:port of every replica; the client fails over in order. */
  readonly endpoints: readonly string[];
  readonly caPem: string;
  readonly trustDomain: string;
  readonly token: string;
}

/** DESIGN.md §6: 1 s × 1.6ⁿ ± 20 %, capped at 30 s, so a fleet does not reconnect in lockstep. */
export function reconnectDelay(attempt: number, random: Random): number {
  const base = Math.min(30_000, 1_000 * 1.6 ** Math.max(0, attempt));
  return Math.min(30_000, base * (0.8 + 0.4 * random()));
}

/** Parses a snapshot at the boundary; anything malformed becomes the NACK reason. */
export function parseSnapshot(msg: SnapshotMessage): Snapshot {
  const s = JSON.parse(msg.snapshotJson) as Partial<Snapshot>;
  for (const field of ['services', 'routes', 'accessPolicies'] as const) {
    if (!Array.isArray(s[field])) throw new Error(`snapshot ${msg.version}: ${field} is missing`);
  }
  if (!s.meshConfig || typeof s.meshConfig !== 'object') throw new Error(`snapshot ${msg.version}: meshConfig is missing`);
  return deepFreeze({ ...(s as Snapshot), version: msg.version });
}

export class ControlPlaneClient {
  private clients: MeshClient[];
  private current = 0;
  private stream: grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage> | undefined;
  private attempt = 0;
  private timer: Timer | undefined;
  private stopped = false;
  private hello: Hello | undefined;
  /** The version this sidecar runs and its content hash, sent in Hello after a reconnect. */
  version = '';
  private hash = '';
  connected = false;

  constructor(
    private readonly s: ControlPlaneSettings,
    private readonly deps: { clock: Clock; random: Random; log: Logger },
    /** Applies a snapshot; throws to refuse it (NACK), leaving the previous config in force. */
    private readonly apply: (snapshot: Snapshot) => void,
  ) {
    this.clients = s.endpoints.map((address) => createMeshClient({ address, caPem: s.caPem, trustDomain: s.trustDomain }));
  }

  /** The certificate source for dynamic mode: the CSR goes to Join, on each replica in turn until one answers. */
  certificateSource(): CertificateSource {
    return {
      sign: async (csrPem: string, id: SpiffeId) => {
        let last: Error | undefined;
        for (let i = 0; i < this.clients.length; i++) {
          const idx = (this.current + i) % this.clients.length;
          try {
            const r = await call<JoinResponse>(this.clients[idx], 'Join', { token: this.s.token, csrPem, service: id.service, namespace: id.namespace }, { timeoutMs: 10_000 });
            return { certPem: r.certPem, caPem: r.caPem };
          } catch (err) {
            last = err as Error;
            // Refusals are final: another replica would refuse the same token.
            if ((err as { code?: number }).code === 7 /* PERMISSION_DENIED */) break;
          }
        }
        throw new Error(`join failed on ${this.s.endpoints.join(', ')}: ${last?.message ?? 'no control plane'}`);
      },
    };
  }

  /** Opens the stream; reconnects forever (until stop) with jittered backoff, failing over across replicas. */
  start(hello: Hello): void {
    this.hello = hello;
    this.connect();
  }

  /** A changed certificate expiry (after renewal) is reported with a repeated Hello. */
  updateCertExpiry(unix: number): void {
    if (!this.hello) return;
    this.hello = { ...this.hello, certExpiryUnix: unix };
    this.stream?.write({ hello: this.hello });
  }

  /** A stats report (proxy/stats-report.ts) on the open stream; false (nothing sent) while disconnected. */
  sendStats(report: StatsReport): boolean {
    if (!this.connected || !this.stream) return false;
    this.stream.write({ stats: report });
    return true;
  }

  private connect(): void {
    if (this.stopped || !this.hello) return;
    const client = this.clients[this.current];
    const endpoint = this.s.endpoints[this.current];
    const stream = (client.Discover as () => grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage>)();
    this.stream = stream;
    let answered = false;
    // The control plane answers Hello with headers at once, and with a snapshot only if ours is out of date.
    const connected = () => {
      if (answered) return;
      answered = true;
      this.attempt = 0;
      this.connected = true;
      this.deps.log.info('control_plane_connected', { endpoint, version: this.version });
    };
    stream.on('metadata', connected);
    stream.on('data', (msg: SnapshotMessage) => {
      connected();
      try {
        const snap = parseSnapshot(msg);
        this.apply(snap);
        this.version = msg.version;
        this.hash = msg.hash;
        stream.write({ ack: { version: msg.version, nonce: msg.nonce } });
      } catch (err) {
        const error = (err as Error).message;
        this.deps.log.error('snapshot_rejected', { version: msg.version, error });
        stream.write({ nack: { version: msg.version, nonce: msg.nonce, error } });
      }
    });
    let ended = false;
    const lost = (why: string) => {
      if (ended) return;
      ended = true;
      this.connected = false;
      if (this.stopped) return;
      // Keep serving the last snapshot; try the next replica after a jittered pause. A fresh channel each time,
      // so grpc-js's own connection backoff (up to 2 min) never stretches ours past DESIGN's 30 s cap.
      const failed = this.current;
      this.clients[failed].close();
      this.clients[failed] = createMeshClient({ address: this.s.endpoints[failed], caPem: this.s.caPem, trustDomain: this.s.trustDomain });
      this.current = (this.current + 1) % this.clients.length;
      const delay = reconnectDelay(this.attempt++, this.deps.random);
      this.deps.log.warn('control_plane_lost', { endpoint, reason: why, retry_in_ms: Math.round(delay), next: this.s.endpoints[this.current] });
      this.timer = this.deps.clock.setTimeout(() => this.connect(), delay);
    };
    stream.on('error', (err: grpc.ServiceError) => lost(err.details || err.message));
    stream.on('end', () => lost('stream ended'));
    stream.write({ hello: { ...this.hello, version: this.version, snapshotHash: this.hash } });
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.stream?.cancel();
    for (const c of this.clients) c.close();
  }
}
