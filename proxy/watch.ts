// A latest-value cell with subscribers (linkerd's watch channel): snapshots, credentials and endpoint sets swap atomically.

export class Watch<T> {
  private value: T;
  private readonly subscribers = new Set<(v: T) => void>();

  constructor(initial: T) {
    this.value = initial;
  }

  get(): T {
    return this.value;
  }

  set(v: T): void {
    this.value = v;
    for (const fn of this.subscribers) fn(v);
  }

  subscribe(fn: (v: T) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }
}
