// The soak's load: an open loop of mixed requests through the client sidecar, with client aborts on purpose; counts every outcome.
import { Pool } from 'undici';

export interface LoadCounts {
  sent: number;
  ok: number;
  /** Failures that were not injected: any non-2xx answer, or an error on a request the load did not abort. */
  failed: number;
  /** Requests the load aborted on purpose (mid-wait or mid-body): not failures. */
  aborted: number;
  /** Requests not sent because too many were already in flight (the mesh was not keeping up). */
  skipped: number;
  byKind: Record<string, { sent: number; ok: number; failed: number }>;
  /** The first few failures, for the report. */
  failures: string[];
  /** Every failure, counted by what it was (status and x-mesh-error, or the error message). */
  byReason: Record<string, number>;
}

type Kind = 'small' | 'large' | 'echo' | 'reset-once' | 'slow-abort' | 'large-abort';

/** Per 100 requests. The reset-once requests are the upstream fault the mesh must hide (a retry on another try). */
const MIX: readonly [Kind, number][] = [['small', 55], ['large', 15], ['echo', 12], ['reset-once', 10], ['slow-abort', 5], ['large-abort', 3]];
const MAX_IN_FLIGHT = 2_000;
const ECHO_BODY = Buffer.alloc(8 * 1024, 'e');

function pickKind(n: number): Kind {
  let r = n % 100;
  for (const [k, w] of MIX) {
    if (r < w) return k;
    r -= w;
  }
  return 'small';
}

/** What an undici error says about where it happened: its code and, for a socket error, the socket's ends and byte counts. */
function describe(err: Error & { code?: string; socket?: { localPort?: number; remotePort?: number; bytesWritten?: number; bytesRead?: number } }): string {
  const s = err.socket;
  const where = s ? ` [local port ${s.localPort}, wrote ${s.bytesWritten} B, read ${s.bytesRead} B]` : '';
  return `${err.message}${err.code ? ` (${err.code})` : ''}${where}`;
}

export async function runSoakLoad(o: { target: string; rps: number; durationMs: number; onFailure?: (requestId: string) => void }): Promise<LoadCounts> {
  const pool = new Pool(`http://${o.target}`, { connections: 64, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const counts: LoadCounts = { sent: 0, ok: 0, failed: 0, aborted: 0, skipped: 0, byKind: {}, failures: [], byReason: {} };
  let inFlight = 0;
  let n = 0;
  const fail = (kind: Kind, id: number, why: string, reason: string) => {
    o.onFailure?.(`soak-${id}`);
    counts.failed++;
    counts.byReason[reason] = (counts.byReason[reason] ?? 0) + 1;
    counts.byKind[kind].failed++;
    if (counts.failures.length < 20) counts.failures.push(`${new Date().toISOString()} ${kind} soak-${id}: ${why}`);
  };
  const one = async (kind: Kind, id: number) => {
    const k = (counts.byKind[kind] ??= { sent: 0, ok: 0, failed: 0 });
    k.sent++;
    counts.sent++;
    const ac = new AbortController();
    const path = kind === 'small' ? '/small' : kind === 'large' || kind === 'large-abort' ? '/large' : kind === 'echo' ? '/echo' : kind === 'reset-once' ? '/reset-once' : '/slow';
    let abortedOnPurpose = false;
    let timer: NodeJS.Timeout | undefined;
    if (kind === 'slow-abort') timer = setTimeout(() => { abortedOnPurpose = true; ac.abort(); }, 50);
    try {
      const r = await pool.request({
        method: kind === 'echo' ? 'POST' : 'GET', path, body: kind === 'echo' ? ECHO_BODY : undefined, signal: ac.signal,
        headers: { host: 'soak', 'x-request-id': `soak-${id}`, ...(kind === 'echo' ? { 'content-type': 'application/octet-stream' } : {}) },
      });
      if (kind === 'large-abort') {
        // Read one chunk, then walk away mid-body: the sidecars must release the upstream stream and its buffers.
        for await (const _chunk of r.body) {
          abortedOnPurpose = true;
          ac.abort();
          break;
        }
        counts.aborted++;
        return;
      }
      const body = await r.body.arrayBuffer();
      const meshError = String(r.headers['x-mesh-error'] ?? '');
      if (r.statusCode !== 200) return fail(kind, id, `${r.statusCode} ${meshError} ${Buffer.from(body).toString('utf8', 0, 200)}`, `${r.statusCode} ${meshError}`.trim());
      const want = kind === 'small' ? 1024 : kind === 'large' ? 256 * 1024 : kind === 'echo' ? ECHO_BODY.length : undefined;
      if (want !== undefined && body.byteLength !== want) return fail(kind, id, `body ${body.byteLength} bytes, expected ${want}`, 'short body');
      counts.ok++;
      k.ok++;
    } catch (err) {
      if (abortedOnPurpose) counts.aborted++;
      else fail(kind, id, describe(err as Error), (err as Error).message);
    } finally {
      if (timer) clearTimeout(timer);
    }
  };
  const started = Date.now();
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = Date.now() - started;
      if (elapsed >= o.durationMs) {
        clearInterval(tick);
        resolve();
        return;
      }
      // Open loop: as many requests as are due by now, whatever happened to the earlier ones.
      const due = Math.floor((elapsed / 1000) * o.rps);
      while (n < due) {
        const id = n++;
        if (inFlight >= MAX_IN_FLIGHT) {
          counts.skipped++;
          continue;
        }
        inFlight++;
        void one(pickKind(id), id).finally(() => inFlight--);
      }
    }, 10);
  });
  const deadline = Date.now() + 30_000;
  while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  await pool.close().catch(() => undefined);
  return counts;
}
