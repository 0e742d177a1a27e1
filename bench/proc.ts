// Linux /proc readers for the bench: CPU seconds (utime+stime) and peak RSS (VmHWM) of a process, and the children of a process.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

/** USER_HZ: what utime and stime in /proc/PID/stat are counted in (100 on every common Linux build). */
export function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(out.stdout?.trim());
    ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/**
 * The fields of /proc/PID/stat after the command name. The name is in parentheses and may itself
 * contain spaces or parentheses, so split after the last ")".
 */
function statFields(pid: number | 'self'): string[] | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
}

/** utime + stime of the process (all its threads) in seconds; undefined once it has gone. */
export function cpuSeconds(pid: number | 'self'): number | undefined {
  const f = statFields(pid);
  // After the name: state(0) ppid(1) … utime(11) stime(12), i.e. fields 14 and 15 of proc(5).
  if (f === undefined || f.length < 13) return undefined;
  return (Number(f[11]) + Number(f[12])) / clockTicks();
}

/** VmHWM (the resident set's high-water mark) in megabytes (MiB); undefined once it has gone. */
export function peakRssMb(pid: number | 'self'): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** PIDs whose parent is `pid` (e.g. the workers of an nginx master). */
export function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (f !== undefined && Number(f[1]) === pid) kids.push(Number(name));
  }
  return kids.sort((a, b) => a - b);
}

/** CPU seconds of several processes at one moment, for a before/after delta around a phase. */
export function sampleCpu(pids: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const pid of pids) {
    const s = cpuSeconds(pid);
    if (s !== undefined) m.set(pid, s);
  }
  return m;
}

/** Seconds of CPU per 1,000 requests between two samples; undefined if the process vanished or nothing was served. */
export function cpuPer1k(before: Map<number, number>, after: Map<number, number>, pid: number, requests: number): number | undefined {
  const a = before.get(pid);
  const b = after.get(pid);
  if (a === undefined || b === undefined || !(requests > 0)) return undefined;
  return ((b - a) / requests) * 1000;
}

/** CPU seconds the whole machine spent busy (every core, including steal), from the first line of /proc/stat. */
export function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy.
  const busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] ?? 0);
  return busy / clockTicks();
}

/**
 * This process's CPU plus that of its children that have exited and been waited for (cutime, cstime):
 * every process the bench starts, nginx workers included, once the run has stopped them all.
 */
export function ownTreeCpuSeconds(): number {
  const f = statFields('self');
  if (f === undefined) return NaN;
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / clockTicks();
}
