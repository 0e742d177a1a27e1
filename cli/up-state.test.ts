// mesh up's state file: a previous run's programs are found by pid AND command line (a reused pid is left alone), and stopped.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cmdlineOf, killLeftovers, leftovers, readState, writeState, type UpState } from './up-state.js';

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

/** A long-lived harmless process, detached like mesh up's children. */
function sleeper(): number {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'trellis-up-state-test'], { detached: true, stdio: 'ignore' });
  child.unref();
  started.push(child.pid!);
  return child.pid!;
}

async function waitCmdline(pid: number): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const c = cmdlineOf(pid);
    if (c?.includes('trellis-up-state-test')) return c;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no command line for ${pid}`);
}

const state = (processes: UpState['processes'], pid = 2 ** 22 + 1): UpState => ({
  pid, cmdline: 'node mesh up', startedAt: '', controlPlane: '', controlPlaneHttp: '', instances: [], processes,
});

describe.skipIf(process.platform !== 'linux')('mesh up state', () => {
  it('finds a live program by pid and command line, and stops it', async () => {
    const pid = sleeper();
    const cmdline = await waitCmdline(pid);
    const left = leftovers(state([{ name: 'users-1', pid, cmdline }]));
    expect(left.supervisor).toBeUndefined();
    expect(left.processes.map((p) => p.name)).toEqual(['users-1']);
    expect(await killLeftovers(left.processes, 5_000)).toEqual([]);
    expect(leftovers(state([{ name: 'users-1', pid, cmdline }])).processes).toEqual([]);
  });

  it('leaves alone a pid that now runs something else (reused pid)', async () => {
    const pid = sleeper();
    await waitCmdline(pid);
    expect(leftovers(state([{ name: 'users-1', pid, cmdline: 'node dist/examples/shop/users.js --listen 127.0.0.1:1' }])).processes).toEqual([]);
  });

  it('reports a live supervisor, so a second mesh up refuses', async () => {
    const pid = sleeper();
    const cmdline = await waitCmdline(pid);
    expect(leftovers({ ...state([]), pid, cmdline }).supervisor).toBe(pid);
  });

  it('round-trips through the file, and a torn or missing file reads as nothing', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'trellis-up-state-'));
    try {
      const file = path.join(dir, 'up.json');
      expect(await readState(file)).toBeUndefined();
      const s = state([{ name: 'gateway-1', pid: 1234, cmdline: 'x' }]);
      await writeState(file, s);
      expect(await readState(file)).toEqual(s);
      await import('node:fs/promises').then((fs) => fs.writeFile(file, '{"pid":'));
      expect(await readState(file)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
