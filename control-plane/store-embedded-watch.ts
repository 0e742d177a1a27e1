// The embedded store's watch side: bounded revision history and watchers that each read it from their own next revision, once and in order.
import type { Logger } from '../api/log.js';
import { checkWatchStart, type WatchEvent, type WatchHandle, type WatchHandlers } from './store.js';

/** The events committed at one revision (possibly none that a given watcher cares about). */
export interface HistoryEntry {
  readonly revision: number;
  readonly events: readonly WatchEvent[];
}

interface Watcher {
  readonly prefix: string;
  readonly handlers: WatchHandlers;
  /** The first revision not yet delivered. */
  next: number;
  scheduled: boolean;
  closed: boolean;
}

export class WatchHub {
  /** Contiguous: history[i].revision === history[0].revision + i. */
  private history: HistoryEntry[] = [];
  private readonly watchers = new Set<Watcher>();
  private revision = 1;
  private compactedBelow = 0;

  constructor(
    private readonly historyLimit: number,
    private readonly log?: Logger,
  ) {}

  /** Watches from a revision below this one get onCompacted. */
  get compactRevision(): number {
    return this.compactedBelow;
  }

  reset(revision: number, compactRevision: number): void {
    this.history = [];
    this.revision = revision;
    this.compactedBelow = compactRevision;
  }

  /** Records a committed revision and wakes the watchers. */
  append(entry: HistoryEntry): void {
    this.history.push(entry);
    this.revision = entry.revision;
    // Bounded memory: the oldest history goes, exactly as if compacted; a watcher that far behind re-reads.
    if (this.history.length > this.historyLimit) this.compact(this.history[this.history.length - this.historyLimit].revision);
    for (const w of this.watchers) this.schedule(w);
  }

  compact(revision: number): void {
    if (revision <= this.compactedBelow) return;
    this.compactedBelow = revision;
    const first = this.history[0]?.revision ?? revision;
    this.history = this.history.slice(Math.max(0, revision - first));
    // Watchers behind the new floor must learn now, not at the next write.
    for (const w of this.watchers) if (w.next < revision) this.schedule(w);
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): WatchHandle {
    checkWatchStart(fromRevision);
    const w: Watcher = { prefix, handlers, next: fromRevision, scheduled: false, closed: false };
    this.watchers.add(w);
    this.schedule(w);
    return {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
      },
    };
  }

  closeAll(): void {
    for (const w of this.watchers) w.closed = true;
    this.watchers.clear();
  }

  /** Delivery runs in a microtask: never inside watch() or a write, and one flush covers every revision committed meanwhile. */
  private schedule(w: Watcher): void {
    if (w.scheduled || w.closed) return;
    w.scheduled = true;
    queueMicrotask(() => {
      w.scheduled = false;
      this.flush(w);
    });
  }

  private flush(w: Watcher): void {
    if (w.closed) return;
    if (w.next < this.compactedBelow) {
      w.closed = true;
      this.watchers.delete(w);
      this.call(() => w.handlers.onCompacted(this.revision));
      return;
    }
    if (w.next > this.revision) return;
    const first = this.history[0]?.revision ?? this.revision + 1;
    const events: WatchEvent[] = [];
    for (let i = Math.max(0, w.next - first); i < this.history.length; i++) {
      for (const ev of this.history[i].events) if (eventKey(ev).startsWith(w.prefix)) events.push(ev);
    }
    w.next = this.revision + 1;
    if (events.length > 0) this.call(() => w.handlers.onEvents(events, eventRevision(events[events.length - 1])));
  }

  /** A throwing handler is the caller's bug; it must not stop delivery to the other watchers. */
  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log?.error('store.watch_handler_threw', { err });
    }
  }
}

export function eventKey(ev: WatchEvent): string {
  return ev.type === 'put' ? ev.kv.key : ev.key;
}

export function eventRevision(ev: WatchEvent): number {
  return ev.type === 'put' ? ev.kv.modRevision : ev.modRevision;
}
