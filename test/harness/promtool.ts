// Test harness: runs Prometheus's `promtool check metrics` (Debian package `prometheus`) on an exposition text.
import { spawn } from 'node:child_process';
import { which } from '../../cli/which.js';

/** Under CI a missing promtool fails the suite; on a developer machine the check is skipped with a reason. */
export const REQUIRE_PROMTOOL = process.env.CI === 'true';

/** $PROMTOOL, else the first `promtool` on PATH (or in /usr/bin, where Debian's prometheus package puts it). */
export function promtoolBinary(): string | undefined {
  return which('promtool', process.env.PROMTOOL);
}

/** Pipes `text` into `promtool check metrics`; code 0 means it parsed and passed every lint rule. */
export function checkMetrics(bin: string, text: string, timeoutMs = 10_000): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    // promtool may exit before reading everything (a parse error); the exit code says what happened.
    child.stdin.on('error', () => undefined);
    child.stdin.end(text);
  });
}
