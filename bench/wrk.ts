// Saturation throughput: runs wrk (closed loop, fixed connections) against one URL and parses its report.
import { spawnChild } from './processes.js';

export interface WrkOptions {
  readonly bin: string;
  readonly url: string;
  readonly host: string;
  readonly connections: number;
  readonly seconds: number;
  readonly threads?: number;
}

export interface WrkResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Connect, read, write and timeout errors added up. */
  readonly socketErrors: number;
  readonly non2xx: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function toMs(text: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text ?? '');
  return m ? Number(m[1]) * UNIT_MS[m[2]] : NaN;
}

/** Reads wrk's text report (run with --latency). Throws if it holds no result. */
export function parseWrk(out: string): WrkResult {
  const total = /(\d+) requests in ([\d.]+)(us|ms|s|m)/.exec(out);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  if (!total || !Number.isFinite(rps)) throw new Error(`wrk printed no result:\n${out}`);
  const pct = (p: string): number => toMs(new RegExp(`^[ \\t]+${p}%[ \\t]+(\\S+)`, 'm').exec(out)?.[1]);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(total[1]),
    seconds: toMs(`${total[2]}${total[3]}`) / 1000,
    rps,
    p50Ms: pct('50'),
    p90Ms: pct('90'),
    p99Ms: pct('99'),
    maxMs: toMs(/^[ \t]+Latency[ \t]+\S+[ \t]+\S+[ \t]+(\S+)/m.exec(out)?.[1]),
    socketErrors: socket ? socket.slice(1, 5).reduce((a, b) => a + Number(b), 0) : 0,
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
  };
}

/** Runs wrk once; killed if it outlives its own duration by 15 s. */
export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = [`-t${o.threads ?? 1}`, `-c${o.connections}`, `-d${Math.max(1, Math.round(o.seconds))}s`, '--latency', '-H', `Host: ${o.host}`, o.url];
  const child = spawnChild('wrk', o.bin, args);
  let out = '';
  child.proc.stdout?.on('data', (c: Buffer) => {
    out += c.toString();
  });
  const timer = setTimeout(() => void child.stop('SIGKILL', 1_000), (o.seconds + 15) * 1000);
  const { code, signal } = await child.exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`wrk exited with code ${code} signal ${signal}:\n${child.output()}`);
  return parseWrk(out);
}
