// The Prometheus file_sd this replica keeps (default <--dir>/prometheus/targets.json): every registered sidecar's admin
// /metrics and every live replica's --http /metrics, read from the shared registry, so any replica writes the whole mesh.
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../api/log.js';
import type { MeshState, Registration, ReplicaRecord } from './state.js';

export const SIDECAR_JOB = 'mesh-sidecar';
export const CONTROL_PLANE_JOB = 'mesh-control-plane';
/** Registrations arrive in bursts (a fleet reconnecting): one rewrite a second is plenty for a 15 s+ scrape interval. */
export const FILE_SD_DEBOUNCE_MS = 1_000;

/** One file_sd entry: https://prometheus.io/docs/prometheus/latest/configuration/configuration/#file_sd_config */
export interface TargetGroup {
  readonly targets: string[];
  readonly labels: Record<string, string>;
}

/**
 * The target groups, one per target (labels differ per target), sorted so an unchanged mesh writes identical bytes.
 * `job` is set per group: Prometheus keeps a discovered `job` label over the scrape config's job_name.
 */
export function buildTargets(regs: readonly Registration[], replicas: Iterable<ReplicaRecord>): TargetGroup[] {
  const sidecars = regs
    .filter((r) => typeof r.adminAddress === 'string' && r.adminAddress !== '')
    .map((r) => ({
      targets: [r.adminAddress!],
      labels: { job: SIDECAR_JOB, mesh_service: r.service, mesh_namespace: r.namespace || 'default', mesh_instance: r.instance },
    }))
    .sort((a, b) => order(a.labels, b.labels, ['mesh_namespace', 'mesh_service', 'mesh_instance']));
  const planes = [...replicas]
    .filter((r) => typeof r.http === 'string' && r.http !== '')
    .map((r) => ({ targets: [r.http!], labels: { job: CONTROL_PLANE_JOB, mesh_control_plane: r.name } }))
    .sort((a, b) => order(a.labels, b.labels, ['mesh_control_plane']) || a.targets[0].localeCompare(b.targets[0]));
  return [...planes, ...sidecars];
}

function order(a: Record<string, string>, b: Record<string, string>, keys: readonly string[]): number {
  for (const k of keys) {
    const c = (a[k] ?? '').localeCompare(b[k] ?? '');
    if (c !== 0) return c;
  }
  return 0;
}

/** Write to a temp file beside the target, then rename: Prometheus never reads a half-written file. */
export async function writeAtomically(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2, 8)}.tmp`;
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Rewrites the file (debounced) whenever the registry or the replica set changes, and only when its content changes. */
export class FileSdWriter {
  private timer: NodeJS.Timeout | undefined;
  private written = '';
  private writing: Promise<void> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly state: MeshState,
    private readonly log: Logger,
    private readonly debounceMs = FILE_SD_DEBOUNCE_MS,
  ) {}

  /** Writes the current targets now, then follows changes. */
  async start(): Promise<void> {
    this.unsubscribe = this.state.onChange(() => this.schedule());
    await this.flush();
  }

  /** Coalesces: the first change starts the timer, later ones ride along (so a steady stream still writes once a debounce). */
  private schedule(): void {
    if (this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.debounceMs);
    this.timer.unref();
  }

  /** Writes the targets if they changed since the last write; failures are logged and retried on the next change. */
  flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      if (this.closed) return;
      const text = `${JSON.stringify(buildTargets(this.state.registrations(), this.state.liveReplicas().values()), null, 2)}\n`;
      if (text === this.written) return;
      try {
        await writeAtomically(this.path, text);
        this.written = text;
        this.log.debug('file_sd_written', { path: this.path, bytes: text.length });
      } catch (err) {
        this.log.warn('file_sd_write_failed', { path: this.path, error: err });
      }
    });
    return this.writing;
  }

  async close(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.unsubscribe?.();
    await this.writing;
    this.closed = true;
  }
}
