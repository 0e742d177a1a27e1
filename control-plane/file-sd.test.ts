// Tests for the Prometheus file_sd: targets and labels from registrations and replica records, atomic rewrites only on
// change, debounced bursts.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../api/log.js';
import { waitFor } from '../test/harness/wait.js';
import { buildTargets, FileSdWriter, writeAtomically } from './file-sd.js';
import type { MeshState, Registration, ReplicaRecord } from './state.js';

const quiet = createLogger('error', {}, () => undefined);

const reg = (service: string, instance: string, adminAddress?: string, namespace = 'default'): Registration => ({
  service, namespace, instance, address: '127.0.0.1:1', labels: {}, ...(adminAddress ? { adminAddress } : {}),
});
const replica = (name: string, http?: string): ReplicaRecord => ({ session: name, name, address: '127.0.0.1:15010', startedAtUnix: 0, ...(http ? { http } : {}) });

describe('buildTargets', () => {
  it('one group per sidecar admin address and per replica --http address, with job and mesh_* labels, sorted', () => {
    const groups = buildTargets(
      [reg('web', 'w-1', '127.0.0.1:9002'), reg('api', 'a-2', '127.0.0.1:9001'), reg('api', 'a-1', '127.0.0.1:9000', 'shop'), reg('old', 'o-1')],
      [replica('cp-b', '127.0.0.1:15114'), replica('cp-a', '127.0.0.1:15014'), replica('cp-old')],
    );
    expect(groups).toEqual([
      { targets: ['127.0.0.1:15014'], labels: { job: 'mesh-control-plane', mesh_control_plane: 'cp-a' } },
      { targets: ['127.0.0.1:15114'], labels: { job: 'mesh-control-plane', mesh_control_plane: 'cp-b' } },
      { targets: ['127.0.0.1:9001'], labels: { job: 'mesh-sidecar', mesh_service: 'api', mesh_namespace: 'default', mesh_instance: 'a-2' } },
      { targets: ['127.0.0.1:9002'], labels: { job: 'mesh-sidecar', mesh_service: 'web', mesh_namespace: 'default', mesh_instance: 'w-1' } },
      { targets: ['127.0.0.1:9000'], labels: { job: 'mesh-sidecar', mesh_service: 'api', mesh_namespace: 'shop', mesh_instance: 'a-1' } },
    ]);
  });
});

/** Just what the writer reads of MeshState. */
function fakeState(): MeshState & { regs: Registration[]; fire(): void } {
  const listeners = new Set<() => void>();
  const s = {
    regs: [] as Registration[],
    registrations: () => s.regs.map((r) => ({ ...r, key: r.instance, modRevision: 1 })),
    liveReplicas: () => new Map([['cp-a', replica('cp-a', '127.0.0.1:15014')]]),
    onChange: (fn: () => void) => {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
    fire: () => { for (const fn of listeners) fn(); },
  };
  return s as unknown as MeshState & { regs: Registration[]; fire(): void };
}

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), 'trellis-filesd-'));
  dirs.push(d);
  return d;
}

describe('FileSdWriter', () => {
  it('writes at start (creating the directory), rewrites after a burst of changes once the debounce passes, leaves no temp files', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'prometheus', 'targets.json');
    const state = fakeState();
    const writer = new FileSdWriter(file, state, quiet, 20);
    await writer.start();
    const first = JSON.parse(await readFile(file, 'utf8')) as { targets: string[] }[];
    expect(first.map((g) => g.targets[0])).toEqual(['127.0.0.1:15014']);

    state.regs.push(reg('api', 'a-1', '127.0.0.1:9000'));
    state.fire();
    state.regs.push(reg('api', 'a-2', '127.0.0.1:9001'));
    state.fire();
    let targets: string[] = [];
    await waitFor(async () => {
      targets = (JSON.parse(await readFile(file, 'utf8')) as { targets: string[] }[]).map((g) => g.targets[0]);
      return targets.length === 3;
    }, { what: 'the two new sidecars in the file' });
    expect(targets).toEqual(['127.0.0.1:15014', '127.0.0.1:9000', '127.0.0.1:9001']);
    await writer.close();
    expect(await readdir(path.dirname(file))).toEqual(['targets.json']);
  });

  it('writeAtomically replaces the file whole', async () => {
    const file = path.join(await tempDir(), 't.json');
    await writeAtomically(file, 'one');
    await writeAtomically(file, 'two');
    expect(await readFile(file, 'utf8')).toBe('two');
    expect(await readdir(path.dirname(file))).toEqual(['t.json']);
  });
});
