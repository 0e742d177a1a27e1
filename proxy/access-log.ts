// The access log (MeshConfig accessLog: true): one JSON line per request on stdout, written in batches off the request path.
import type { Clock } from '../api/clock.js';
import { recordedStatus, type Exchange } from './exchange.js';

/** One request as the access log reports it; field names are stable (users parse them). */
export interface AccessRecord {
  readonly time: string;
  readonly direction: string;
  readonly trace_id: string;
  readonly request_id: string;
  readonly method: string;
  readonly authority: string;
  /** Normalized, without the query (queries carry secrets often enough to keep them out of logs). */
  readonly path: string;
  readonly status: number;
  /** The x-mesh-error code when the mesh made or relayed the error, else ''. */
  readonly mesh_error: string;
  readonly source: string;
  readonly destination: string;
  readonly route: string;
  readonly upstream: string;
  readonly attempts: number;
  readonly duration_ms: number;
  /** Request body bytes: exact when buffered, else the declared Content-Length (null for a streamed chunked body). */
  readonly bytes_received: number | null;
  readonly bytes_sent: number;
  readonly client_aborted: boolean;
}

function bytesReceived(ex: Exchange): number | null {
  const b = ex.body;
  if (b.kind === 'buffered') return b.data.length;
  const declared = ex.req.headers['content-length'];
  if (declared !== undefined) return Number(declared);
  return b.kind === 'none' && ex.req.headers['transfer-encoding'] === undefined ? 0 : null;
}

export function accessRecord(ex: Exchange, durationMs: number, wallNow: number): AccessRecord {
  return {
    time: new Date(wallNow).toISOString(),
    direction: ex.direction,
    trace_id: ex.traceId,
    request_id: ex.requestId,
    method: ex.method,
    authority: ex.authority,
    path: ex.path,
    status: recordedStatus(ex),
    mesh_error: ex.meshError,
    source: ex.sourceService,
    destination: ex.backend?.service ?? (ex.direction === 'inbound' ? ex.upstreamHost : ex.authority),
    route: ex.rule?.routeName ?? 'none',
    upstream: ex.upstream,
    attempts: ex.attempts,
    duration_ms: Math.round(durationMs * 1000) / 1000,
    bytes_received: bytesReceived(ex),
    bytes_sent: ex.bytesSent,
    client_aborted: ex.clientGone,
  };
}

/** Lines logged in one turn of the event loop go out in one write, so the log costs no syscall per request. */
export class AccessLog {
  /** Set per snapshot from MeshConfig.accessLog. */
  enabled = false;
  private pending: string[] = [];
  private scheduled = false;

  constructor(
    private readonly clock: Clock,
    private readonly wallNow: () => number = Date.now,
    private readonly write: (text: string) => void = (t) => { process.stdout.write(t); },
  ) {}

  record(ex: Exchange): void {
    if (!this.enabled) return;
    this.pending.push(JSON.stringify(accessRecord(ex, this.clock.now() - ex.start, this.wallNow())));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const text = this.pending.join('\n') + '\n';
    this.pending = [];
    this.write(text);
  }
}
