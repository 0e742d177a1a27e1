// The sidecar registry's ownership: this replica's leased session record, the registrations it writes, and removal of registrations whose replica is gone.
import { systemClock, type Clock, type Timer } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import { REPLICAS, registryKey, type MeshState, type ReplicaRecord } from './state.js';
import type { Lease, Store } from './store.js';

/** How long a replica's session record outlives a replica that vanished without revoking it. */
export const SESSION_TTL_MS = 15_000;

/**
 * How long a registration survives its replica. A sidecar's worst reconnect wait is 30 s + 20 % jitter, so by then every
 * live sidecar has re-registered wherever it reconnected; what is still orphaned is a sidecar that died meanwhile.
 */
export const ORPHAN_GRACE_MS = 45_000;


export interface RegistrationInput {
  readonly service: string;
  readonly namespace: string;
  readonly instance: string;
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly connectedSince: number;
  /** host:port of the sidecar's admin listener (its /metrics), for the Prometheus file_sd; absent from older sidecars. */
  readonly adminAddress?: string;
}

export interface OrphanSweep {
  /** Keys (with the modRevision seen) to delete now. */
  readonly expired: { key: string; modRevision: number }[];
}

/**
 * Which registrations to delete: those whose session is not live, once they have been seen orphaned for `graceMs`.
 * `since` (key → first seen orphaned) is updated in place; a key that is live again, or gone, is forgotten.
 */
export function sweepOrphans(
  regs: readonly { key: string; modRevision: number; session?: string }[],
  live: ReadonlySet<string>,
  since: Map<string, number>,
  now: number,
  graceMs: number,
): OrphanSweep {
  const orphaned = new Set<string>();
  const expired: { key: string; modRevision: number }[] = [];
  for (const r of regs) {
    if (r.session !== undefined && live.has(r.session)) continue;
    orphaned.add(r.key);
    const first = since.get(r.key);
    if (first === undefined) since.set(r.key, now);
    else if (now - first >= graceMs) expired.push({ key: r.key, modRevision: r.modRevision });
  }
  for (const k of since.keys()) if (!orphaned.has(k)) since.delete(k);
  return { expired };
}

/**
 * Registrations carry no lease of their own. Tying them to a lease would tie a healthy sidecar's place in the mesh to
 * the control plane's uptime: a control plane down for longer than the TTL would come back to an empty registry and push
 * every caller an empty endpoint set. Instead a closed stream deletes its registration at once (the sidecar is gone),
 * and registrations left behind by a replica that died are collected by whichever replica is live, after a grace
 * period in which their sidecars reconnect and re-register.
 */
export class Registry {
  private session: Promise<Lease> | undefined;
  private sessionId = '';
  private readonly orphanSince = new Map<string, number>();
  private sweepTimer: Timer | undefined;
  private closed = false;
  private readonly lostListeners = new Set<() => void>();

  constructor(
    private readonly store: Store,
    private readonly state: MeshState,
    private readonly log: Logger,
    private readonly name: string,
    private readonly clock: Clock = systemClock,
    private readonly graceMs = ORPHAN_GRACE_MS,
  ) {
    // Often enough that an orphan goes within about one grace and a half.
    this.sweepEveryMs = Math.min(5_000, Math.max(250, graceMs / 3));
  }

  private readonly sweepEveryMs: number;

  private address = '';
  private httpAddress = '';
  private markStarted: () => void = () => undefined;
  /** Registrations wait for start(): a session record needs the address, known only once the server is bound. */
  private readonly started = new Promise<void>((resolve) => { this.markStarted = resolve; });

  /**
   * Publishes this replica's session (with the gRPC address peers reach it at, and its --http address for Prometheus),
   * then sweeps orphans periodically.
   */
  async start(address: string, httpAddress = ''): Promise<void> {
    this.address = address;
    this.httpAddress = httpAddress;
    await this.ensureSession();
    this.markStarted();
    this.scheduleSweep();
  }

  /** Called when the session was lost and re-established: every registration must be rewritten under the new one. */
  onSessionRenewed(fn: () => void): void {
    this.lostListeners.add(fn);
  }

  /** The live session id ('' before start()). */
  get id(): string {
    return this.sessionId;
  }

  /** Where peers reach this replica. */
  get advertised(): string {
    return this.address;
  }

  private ensureSession(): Promise<Lease> {
    this.session ??= this.store.grantLease(SESSION_TTL_MS).then(async (lease) => {
      const record: ReplicaRecord = {
        session: lease.id, name: this.name, address: this.address, startedAtUnix: Math.floor(Date.now() / 1000),
        ...(this.httpAddress ? { http: this.httpAddress } : {}),
      };
      await this.store.put(`${REPLICAS}${lease.id}`, JSON.stringify(record), { lease: lease.id });
      this.sessionId = lease.id;
      lease.onLost(() => {
        if (this.closed) return;
        this.session = undefined;
        this.log.warn('session_lost', { session: lease.id });
        // Our registrations now look orphaned to every replica: re-publish the session and rewrite them within the grace.
        void this.ensureSession().then(() => { for (const fn of this.lostListeners) fn(); }, (err: unknown) => this.log.error('session_failed', { error: err }));
      });
      return lease;
    }, (err: unknown) => {
      this.session = undefined;
      throw err;
    });
    return this.session;
  }

  async register(r: RegistrationInput): Promise<void> {
    await this.started;
    await this.ensureSession();
    await this.store.put(registryKey(r.namespace, r.service, r.instance), JSON.stringify({
      service: r.service, namespace: r.namespace, instance: r.instance, address: r.address, labels: r.labels,
      session: this.sessionId, controlPlane: this.name, connectedSince: r.connectedSince,
      ...(r.adminAddress ? { adminAddress: r.adminAddress } : {}),
    }));
  }

  async deregister(namespace: string, service: string, instance: string): Promise<void> {
    await this.store.delete(registryKey(namespace, service, instance));
  }

  private scheduleSweep(): void {
    if (this.closed) return;
    this.sweepTimer = this.clock.setTimeout(() => {
      void this.sweep().finally(() => this.scheduleSweep());
    }, this.sweepEveryMs);
  }

  /** Deletes registrations orphaned for longer than the grace. A key re-registered meanwhile survives (compare on modRevision). */
  async sweep(): Promise<number> {
    // A degraded store means we may not know which sessions are live: never collect on stale knowledge.
    if (!this.state.healthy || !this.sessionId) return 0;
    const live = new Set(this.state.liveReplicas().keys());
    const { expired } = sweepOrphans(this.state.registrations(), live, this.orphanSince, this.clock.now(), this.graceMs);
    let removed = 0;
    for (const e of expired) {
      try {
        const r = await this.store.txn([{ key: e.key, modRevision: e.modRevision }], [{ type: 'delete', key: e.key }]);
        if (r.succeeded) {
          removed++;
          this.log.info('orphan_registration_removed', { key: e.key });
        }
        this.orphanSince.delete(e.key);
      } catch (err) {
        this.log.warn('orphan_removal_failed', { key: e.key, error: err });
      }
    }
    return removed;
  }

  /** Ends the session: peers stop seeing this replica at once; registrations of still-open streams were deleted by their close. */
  async close(): Promise<void> {
    this.closed = true;
    this.sweepTimer?.cancel();
    const s = this.session;
    this.session = undefined;
    if (s) await s.then((l) => l.revoke(), () => undefined).catch(() => undefined);
  }
}
