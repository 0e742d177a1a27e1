// The sidecar under fuzzing: a real `mesh sidecar` child (bench/processes.ts) in standalone mode in front of the recording upstream, restartable after a crash, with its RSS readable.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { initCa } from '../certs/ca.js';
import { repoRoot } from './fuzz-corpus.js';
import { startListening, type Child } from './processes.js';
import { LONG_RUNNING_NODE_FLAGS } from '../cli/node-flags.js';

export interface FuzzTarget {
  readonly child: Child;
  /** "127.0.0.1:PORT" */
  readonly outbound: string;
  readonly admin: string;
}

const doc = (kind: string, name: string, spec: string): string => `apiVersion: mesh/v1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec: ${spec}`;

/**
 * Host `echo` goes to the upstream with one try (a retry would show as a second upstream request the input did not
 * send) and no ejection (an upstream ejected after a run of cut-off bodies would turn every later answer into a 503).
 */
function resources(upstream: string): string {
  return [
    doc('Service', 'web', '{ protocol: http }'),
    doc('Service', 'echo', '{ protocol: http }'),
    doc('Endpoints', 'echo', `{ service: echo, endpoints: [ { address: "${upstream}" } ] }`),
    doc('TrafficPolicy', 'echo', '{ service: echo, tls: { mode: disable }, outlierDetection: { maxEjectionPercent: 0 } }'),
    doc('Route', 'echo', '{ hosts: [echo], rules: [ { backends: [ { service: echo } ], retries: { attempts: 1 } } ] }'),
  ].join('\n---\n');
}

/** Starts the sidecar (`main`: the mesh CLI entry point) and waits for /ready; `tmp` holds its CA and resources file. */
export async function startTarget(tmp: string, upstream: string, main = join(repoRoot(), 'dist/cli/main.js')): Promise<FuzzTarget> {
  await initCa(tmp, 'mesh.local');
  const file = join(tmp, 'resources.yaml');
  await writeFile(file, resources(upstream));
  const { child, line } = await startListening('sidecar', process.execPath, [
    ...LONG_RUNNING_NODE_FLAGS, main, 'sidecar', '--service', 'web', '--app', upstream, '--resources', file, '--dir', tmp,
    '--inbound', '127.0.0.1:0', '--outbound', '127.0.0.1:0', '--admin', '127.0.0.1:0', '--drain-timeout', '1s', '--tracing', 'off',
  ], 'stderr');
  const admin = line.admin as string;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await request(`http://${admin}/ready`, { headersTimeout: 2_000 }).then(async (r) => {
      await r.body.dump();
      return r.statusCode === 200;
    }, () => false);
    if (ok) break;
    if (Date.now() > deadline) {
      await child.stop('SIGKILL', 1_000);
      throw new Error(`sidecar not ready within 15 s\n${child.output().slice(-2_000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, outbound: line.outbound as string, admin };
}

/** Resident set size in bytes from /proc/PID/status; undefined once the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
