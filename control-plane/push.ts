// The discovery stream (DESIGN.md §6): Hello registers the sidecar under a lease, snapshots are pushed when its view changes, Ack/Nack recorded.
import { randomBytes } from 'node:crypto';
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';
import type { Logger } from '../api/log.js';
import type { DiscoveryRequest, Hello, SidecarStatus, SnapshotMessage } from '../api/protocol.js';
import { compileMesh, viewFor, type Compiled } from './snapshots.js';
import type { Registry } from './registry.js';
import { registryKey, type MeshState } from './state.js';
import type { StatsStore } from './stats-store.js';
import type { ControlPlaneTelemetry } from './telemetry.js';

/** Nonces must be unique per send, not secret: a random per-process prefix and a counter. */
const NONCE_PREFIX = `${randomBytes(4).toString('hex')}-`;

interface Connection {
  readonly call: ServerDuplexStream<DiscoveryRequest, SnapshotMessage>;
  hello: Hello;
  connectedSince: number;
  sentHash: string;
  sentVersion: string;
  sentNonce: string;
  ackedHash: string;
  ackedVersion: string;
  nackError: string;
  /** Hash of the version the sidecar NACKed: not resent until the view changes again. */
  nackedHash: string;
  /** performance.now() of the last send, for the push latency histogram. */
  sentAt: number;
}

/** Optional observers: /metrics counters and the stats reports behind `mesh stat`. */
export interface PushExtras {
  readonly telemetry?: ControlPlaneTelemetry;
  readonly stats?: StatsStore;
}

const sidecarId = (h: Hello): string => `${h.namespace}/${h.service}/${h.instance}`;

export class PushServer {
  private readonly conns = new Set<Connection>();
  /** Registry key → the connection that registered it last (a reconnecting instance replaces its old stream). */
  private readonly byKey = new Map<string, Connection>();
  private sends = 0;
  private mesh: Compiled | undefined;
  /** Views differ only by the sidecar's service, so each is encoded once per revision, not once per sidecar. */
  private views = new Map<string, { json: string; hash: string }>();

  constructor(
    private readonly registry: Registry,
    private readonly state: MeshState,
    private readonly log: Logger,
    private readonly name: string,
    private readonly caTrustDomain: string,
    private readonly extras: PushExtras = {},
  ) {
    state.onChange(() => this.recompile());
    registry.onSessionRenewed(() => { for (const c of this.conns) void this.register(c); });
  }

  /** The mesh as last compiled (compiling now if nothing was yet). */
  compiled(): Compiled {
    this.mesh ??= compileMesh(this.state, this.log, this.caTrustDomain);
    return this.mesh;
  }

  /** Compile once per burst of store changes, then push only to sidecars whose view changed. */
  private recompile(): void {
    try {
      this.mesh = compileMesh(this.state, this.log, this.caTrustDomain);
      this.views = new Map();
    } catch (err) {
      this.log.error('compile_failed', { error: err, revision: this.state.revision });
      return;
    }
    for (const c of this.conns) this.push(c);
  }

  private push(c: Connection): void {
    const mesh = this.compiled();
    const key = `${c.hello.namespace}/${c.hello.service}`;
    let view = this.views.get(key);
    if (!view) this.views.set(key, (view = viewFor(mesh, c.hello)));
    const { json, hash } = view;
    if (hash === c.ackedHash && c.nackError) {
      // The config went back to what the sidecar already runs: nothing to send, and the NACK is resolved.
      c.nackError = '';
      c.nackedHash = '';
      c.sentHash = hash;
      c.sentVersion = c.ackedVersion;
      return;
    }
    if (hash === c.sentHash || hash === c.nackedHash) return;
    const nonce = `${NONCE_PREFIX}${(this.sends++).toString(36)}`;
    c.sentHash = hash;
    c.sentVersion = String(mesh.revision);
    c.sentNonce = nonce;
    c.sentAt = performance.now();
    c.call.write({ version: c.sentVersion, nonce, snapshotJson: json, hash });
    this.extras.telemetry?.pushed();
  }

  handle(call: ServerDuplexStream<DiscoveryRequest, SnapshotMessage>): void {
    let conn: Connection | undefined;
    call.on('data', (msg: DiscoveryRequest) => {
      if (msg.hello) {
        if (!msg.hello.service || !msg.hello.instance || !msg.hello.address) {
          call.destroy(new Error('Hello needs service, instance and address'));
          return;
        }
        if (!conn) {
          // A sidecar that reconnects (here or after failing over from another replica) says what it runs. If that is
          // what we would send, nothing is sent, and it keeps its version: replicas converge without a needless push.
          const runs = msg.hello.version && msg.hello.snapshotHash ? msg.hello.snapshotHash : '';
          conn = {
            call, hello: { ...msg.hello, namespace: msg.hello.namespace || 'default' }, connectedSince: Date.now(),
            sentHash: runs, sentVersion: runs ? msg.hello.version : '', sentNonce: '', ackedHash: runs, ackedVersion: msg.hello.version,
            nackError: '', nackedHash: '', sentAt: 0,
          };
          this.conns.add(conn);
          this.byKey.set(registryKey(conn.hello.namespace, conn.hello.service, conn.hello.instance), conn);
          void this.register(conn);
          this.extras.stats?.connected(sidecarId(conn.hello));
          this.log.info('sidecar_connected', { service: conn.hello.service, instance: conn.hello.instance, address: conn.hello.address });
          // Headers now tell the sidecar it is connected even when its snapshot is current and nothing else is sent.
          call.sendMetadata(new Metadata());
          this.push(conn);
        } else {
          conn.hello = { ...conn.hello, certExpiryUnix: msg.hello.certExpiryUnix };
        }
        return;
      }
      if (!conn) return;
      if (msg.stats) {
        const ok = this.extras.stats?.record(sidecarId(conn.hello), msg.stats);
        this.extras.telemetry?.statsReports.labels(ok === false ? 'malformed' : 'accepted').inc();
        return;
      }
      if (msg.ack && msg.ack.nonce === conn.sentNonce) {
        this.extras.telemetry?.acked((performance.now() - conn.sentAt) / 1000);
        conn.ackedHash = conn.sentHash;
        conn.ackedVersion = msg.ack.version;
        conn.nackError = '';
        conn.nackedHash = '';
      } else if (msg.nack && msg.nack.nonce === conn.sentNonce) {
        conn.nackError = msg.nack.error;
        conn.nackedHash = conn.sentHash;
        // The sidecar keeps its previous config, so what it runs is what it last acknowledged.
        conn.sentHash = conn.ackedHash;
        this.extras.telemetry?.nacked();
        this.log.warn('snapshot_nacked', { service: conn.hello.service, instance: conn.hello.instance, version: msg.nack.version, error: msg.nack.error });
      }
    });
    const gone = () => {
      if (!conn || !this.conns.delete(conn)) return;
      this.extras.stats?.disconnected(sidecarId(conn.hello));
      this.log.info('sidecar_disconnected', { service: conn.hello.service, instance: conn.hello.instance });
      const h = conn.hello;
      const key = registryKey(h.namespace, h.service, h.instance);
      // A quick reconnect of the same instance may already hold the key again.
      if (this.byKey.get(key) === conn) {
        this.byKey.delete(key);
        void this.registry.deregister(h.namespace, h.service, h.instance).catch((err: unknown) => this.log.warn('deregistration_failed', { key, error: err }));
      }
    };
    call.on('end', () => { gone(); call.end(); });
    call.on('error', gone);
    call.on('close', gone);
    call.on('cancelled', gone);
  }

  /** The sidecar becomes an endpoint of its service for as long as its stream lives (registry.ts says why without a lease). */
  private async register(c: Connection): Promise<void> {
    try {
      if (!this.conns.has(c)) return;
      const h = c.hello;
      await this.registry.register({ ...h, connectedSince: c.connectedSince });
    } catch (err) {
      this.log.error('registration_failed', { service: c.hello.service, instance: c.hello.instance, error: err });
    }
  }

  /** Open discovery streams (the connected-sidecars gauge). */
  get connectionCount(): number {
    return this.conns.size;
  }

  /** Sidecars connected to this replica, with their sync state. */
  status(): SidecarStatus[] {
    return [...this.conns].map((c) => ({
      service: c.hello.service, namespace: c.hello.namespace, instance: c.hello.instance, address: c.hello.address,
      ackedVersion: c.ackedVersion, sentVersion: c.sentVersion, nackError: c.nackError,
      certExpiryUnix: c.hello.certExpiryUnix, connectedSinceUnix: Math.floor(c.connectedSince / 1000), controlPlane: this.name,
      inSync: c.ackedHash !== '' && c.ackedHash === c.sentHash && c.nackError === '', unknownReason: '',
    }));
  }

  close(): void {
    for (const c of this.conns) c.call.end();
    this.conns.clear();
    this.byKey.clear();
  }
}
