import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { withDeadline } from '../test/harness/wait.js';
import { LONG_RUNNING_NODE_FLAGS } from './node-flags.js';

const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'mesh');

describe('bin/mesh (the installed `mesh` command)', () => {
  it("starts node with cli/node-flags.ts's flags by default", async () => {
    const text = await readFile(BIN, 'utf8');
    const defaults = /\$\{MESH_NODE_FLAGS-([^}]*)\}/.exec(text)?.[1];
    expect(defaults).toBe(LONG_RUNNING_NODE_FLAGS.join(' '));
  });

  it('runs a control plane whose node has those flags, and stops it on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bin-mesh-'));
    const env = { ...process.env };
    delete env.MESH_NODE_FLAGS;
    const cp = spawn(BIN, ['control-plane', '--dir', join(dir, '.mesh'), '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'],
      { stdio: ['ignore', 'ignore', 'pipe'], env });
    try {
      const seen: string[] = [];
      await withDeadline(new Promise<void>((resolve, reject) => {
        createInterface({ input: cp.stderr }).on('line', (line) => {
          seen.push(line);
          if (line.includes('"event":"listening"')) resolve();
        });
        cp.once('exit', (code) => reject(new Error(`exited with ${code}:\n${seen.join('\n')}`)));
      }), 20_000, 'the control plane to log "listening"');
      // The shell script exec'd node, so the pid is node's own (signals reach it directly) and its argv holds the flags.
      const argv = (await readFile(`/proc/${cp.pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
      expect(argv.slice(1, 1 + LONG_RUNNING_NODE_FLAGS.length)).toEqual(LONG_RUNNING_NODE_FLAGS);
      expect(argv.slice(1 + LONG_RUNNING_NODE_FLAGS.length, 3 + LONG_RUNNING_NODE_FLAGS.length).map((a) => a.split('/').pop()))
        .toEqual(['main.js', 'control-plane']);
      const exited = once(cp, 'exit');
      cp.kill('SIGTERM');
      const [code] = await withDeadline(exited, 10_000, 'the control plane to exit on SIGTERM') as [number | null];
      expect(code).toBe(0);
    } finally {
      if (cp.exitCode === null && cp.signalCode === null) cp.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
