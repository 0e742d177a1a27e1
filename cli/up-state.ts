// `mesh up`'s state file: who is running (so a second `mesh up` refuses or cleans up after a crash) and where (for tests and scripts).
import { readFileSync } from 'node:fs';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';

export interface UpProcess {
  readonly name: string;
  readonly pid: number;
  /** /proc/PID/cmdline when it started: a pid alone may have been reused by an unrelated program since. */
  readonly cmdline: string;
}

export interface UpInstance {
  readonly service: string;
  readonly instance: string;
  readonly app: string;
  readonly outbound: string;
  readonly inbound: string;
  readonly admin: string;
}

export interface UpState {
  readonly pid: number;
  readonly cmdline: string;
  readonly startedAt: string;
  readonly controlPlane: string;
  readonly controlPlaneHttp: string;
  readonly gateway?: string;
  readonly prometheus?: string;
  readonly instances: readonly UpInstance[];
  readonly processes: readonly UpProcess[];
}

/** The command line of a live process, or undefined when it is gone (or this is not Linux). */
export function cmdlineOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function readState(file: string): Promise<UpState | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as UpState;
  } catch {
    // Missing, or torn by a crash mid-write (writes are atomic, so only a hand edit): either way there is nothing to trust.
    return undefined;
  }
}

export async function writeState(file: string, state: UpState): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, file);
}

export async function removeState(file: string): Promise<void> {
  await rm(file, { force: true });
}

/** What a previous `mesh up` left behind: its supervisor when it still runs, and the programs it started that still run. */
export function leftovers(state: UpState): { supervisor?: number; processes: UpProcess[] } {
  const same = (p: { pid: number; cmdline: string }) => {
    const now = cmdlineOf(p.pid);
    return now === undefined ? alive(p.pid) && process.platform !== 'linux' : now === p.cmdline;
  };
  return {
    supervisor: state.pid !== process.pid && same(state) ? state.pid : undefined,
    processes: state.processes.filter(same),
  };
}

/** SIGKILLs the leftover programs (and their process groups) and waits, bounded, until they are gone. */
export async function killLeftovers(processes: readonly UpProcess[], timeoutMs = 10_000): Promise<UpProcess[]> {
  for (const p of processes) {
    for (const target of [-p.pid, p.pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // not a group leader, or already gone
      }
    }
  }
  const deadline = Date.now() + timeoutMs;
  // A killed process whose parent is gone can linger as a zombie where PID 1 does not reap: its cmdline is empty, so it counts as gone.
  const still = (p: UpProcess) => (process.platform === 'linux' ? cmdlineOf(p.pid) === p.cmdline : alive(p.pid));
  let left = processes.filter(still);
  while (left.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    left = left.filter(still);
  }
  return left;
}
