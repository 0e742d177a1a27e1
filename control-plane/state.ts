// The control plane's view of the store: every resource and registered sidecar, kept current by one watch, re-read after compaction.
import type { Logger } from '../api/log.js';
import type { KeyValue, Store, WatchHandle } from './store.js';

export const PREFIX = '/trellis/';
export const RESOURCES = `${PREFIX}resources/`;
export const REGISTRY = `${PREFIX}registry/`;
export const TOKENS = `${PREFIX}tokens/`;
/** One leased record per live control-plane session (replica): `/trellis/replicas/<session id>`. */
export const REPLICAS = `${PREFIX}replicas/`;

export function resourceKey(kind: string, namespace: string, name: string): string {
  return `${RESOURCES}${kind}/${namespace}/${name}`;
}

export function registryKey(namespace: string, service: string, instance: string): string {
  return `${REGISTRY}${namespace}/${service}/${instance}`;
}

export interface Registration {
  readonly service: string;
  readonly namespace: string;
  readonly instance: string;
  readonly address: string;
  readonly labels: Readonly<Record<string, string>>;
  /** The replica session that registered it (absent in records written before sessions existed). */
  readonly session?: string;
  readonly controlPlane?: string;
  readonly connectedSince?: number;
  /** host:port of the sidecar's admin listener (GET /metrics), listed in the Prometheus file_sd. */
  readonly adminAddress?: string;
}

/** What a live replica publishes about itself, for peers (status fan-out) and orphan collection. */
export interface ReplicaRecord {
  readonly session: string;
  readonly name: string;
  /** host:port of its gRPC API. */
  readonly address: string;
  readonly startedAtUnix: number;
  /** host:port of its --http API (/metrics), listed in the Prometheus file_sd; absent in records of older replicas. */
  readonly http?: string;
}

function sortedByKey(m: ReadonlyMap<string, KeyValue>): KeyValue[] {
  return [...m.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/**
 * Mirrors `/trellis/resources/`, `/trellis/registry/` and `/trellis/replicas/` in memory. Changes are coalesced: listeners run once per
 * burst (debounceMs after the last event), so a `mesh apply` of many resources causes one compile and one push.
 */
export class MeshState {
  readonly resources = new Map<string, KeyValue>();
  readonly registry = new Map<string, KeyValue>();
  readonly replicas = new Map<string, KeyValue>();
  revision = 0;
  healthy = false;
  private watch: WatchHandle | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** When the oldest unannounced change happened: a steady stream of writes must not postpone pushes forever. */
  private pendingSince = 0;
  private readonly listeners = new Set<() => void>();
  private probing: NodeJS.Timeout | undefined;
  private closed = false;
  /** Counts load() calls: only the latest may install its read and watch. */
  private loads = 0;

  constructor(private readonly store: Store, private readonly log: Logger, private readonly debounceMs = 50, private readonly maxWaitMs = 250) {}

  async start(): Promise<void> {
    await this.load();
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * Sorted by key: a replica that read the store at start and one that followed it event by event must compile the
   * same bytes, so that their snapshot hashes agree.
   */
  registrations(): (Registration & { readonly key: string; readonly modRevision: number })[] {
    const out: (Registration & { key: string; modRevision: number })[] = [];
    for (const kv of sortedByKey(this.registry)) {
      try {
        out.push({ ...(JSON.parse(kv.value) as Registration), key: kv.key, modRevision: kv.modRevision });
      } catch {
        this.log.warn('registry_entry_unreadable', { key: kv.key });
      }
    }
    return out;
  }

  /** Stored resource documents in key order (see registrations()). */
  resourceValues(): string[] {
    return sortedByKey(this.resources).map((kv) => kv.value);
  }

  /** Live replica sessions by session id. */
  liveReplicas(): Map<string, ReplicaRecord> {
    const out = new Map<string, ReplicaRecord>();
    for (const kv of this.replicas.values()) {
      try {
        const r = JSON.parse(kv.value) as ReplicaRecord;
        out.set(r.session, r);
      } catch {
        this.log.warn('replica_entry_unreadable', { key: kv.key });
      }
    }
    return out;
  }

  /** Full read, then watch from the next revision: no event between the two can be missed. */
  private async load(): Promise<void> {
    // The old watch stops before the read, and a load overtaken by a newer one gives way: otherwise events the old
    // watch applied while the read was in flight (revision N+1) were wiped by the read's older state (N), and sidecars
    // were pushed N+1, then N, then N+1 again.
    this.watch?.close();
    this.watch = undefined;
    const seq = ++this.loads;
    const range = await this.store.get(PREFIX);
    if (seq !== this.loads) return;
    this.resources.clear();
    this.registry.clear();
    this.replicas.clear();
    for (const kv of range.kvs) this.index(kv);
    this.revision = range.revision;
    this.healthy = true;
    this.watch = this.store.watch(PREFIX, range.revision + 1, {
      onEvents: (events, revision) => {
        for (const e of events) {
          if (e.type === 'put') this.index(e.kv);
          else {
            this.resources.delete(e.key);
            this.registry.delete(e.key);
            this.replicas.delete(e.key);
          }
        }
        this.revision = Math.max(this.revision, revision);
        this.healthy = true;
        this.changed();
      },
      onCompacted: (revision) => {
        // Events we had not seen are gone: the only correct recovery is a fresh read of the whole state.
        this.log.warn('store_compacted', { revision });
        void this.reload();
      },
      onError: (err) => {
        if (this.healthy) this.log.warn('store_degraded', { error: err.message, serving_revision: this.revision });
        this.healthy = false;
        this.probe();
      },
    });
    this.changed();
  }

  /** While degraded, a cheap read every second tells when the store is back, even if nothing is written. */
  private probe(): void {
    if (this.probing || this.closed) return;
    this.probing = setInterval(() => {
      this.store.get(`${PREFIX}health/`).then(() => {
        if (!this.probing) return;
        clearInterval(this.probing);
        this.probing = undefined;
        this.log.info('store_recovered', { revision: this.revision });
        // A resumed watch can lag well behind a recovered store; a fresh read and watch is the prompt, exact resync.
        void this.reload();
      }, () => undefined);
    }, 1_000);
    this.probing.unref();
  }

  private async reload(): Promise<void> {
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        await this.load();
        return;
      } catch (err) {
        this.healthy = false;
        this.log.warn('store_reload_failed', { error: err, attempt });
        await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * attempt)));
      }
    }
  }

  private index(kv: KeyValue): void {
    if (kv.key.startsWith(RESOURCES)) this.resources.set(kv.key, kv);
    else if (kv.key.startsWith(REGISTRY)) this.registry.set(kv.key, kv);
    else if (kv.key.startsWith(REPLICAS)) this.replicas.set(kv.key, kv);
  }

  private changed(): void {
    clearTimeout(this.timer);
    const now = Date.now();
    if (this.pendingSince === 0) this.pendingSince = now;
    const wait = Math.max(0, Math.min(this.debounceMs, this.pendingSince + this.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.pendingSince = 0;
      for (const fn of this.listeners) fn();
    }, wait);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.probing);
    this.watch?.close();
  }
}
