// Test harness: runs the built `mesh` CLI (dist/cli/main.js) as a child process with a deadline, without the developer's MESH_* env.
import { spawn } from 'node:child_process';
import { MAIN } from './sidecar.js';

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCli(args: string[], timeoutMs = 15_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // A developer's MESH_TOKEN / MESH_CONTROL_PLANE must not change what the test asked for.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'MESH_TOKEN' && k !== 'MESH_CONTROL_PLANE'));
    const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`mesh ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
