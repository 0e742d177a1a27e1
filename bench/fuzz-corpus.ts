// The HTTP/1.1 attack corpus (test/hardening/corpus/http1/*.json): the case format, its validation, and the bytes a case sends. Read by the corpus test and the fuzzer.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LIMITS } from '../proxy/listener.js';

/** A number, or a named sidecar limit plus or minus a number ("bodyLimit+1"), so cases follow the code. */
export type Expr = number | string;

/** Literal text (latin1, so "\u00ff" is the byte 0xff), a run of one string repeated, or a number in hex (a chunk size). */
export type Part = string | { readonly repeat: string; readonly times: Expr } | { readonly hex: Expr };

export interface UpstreamExpect {
  /** The request target the upstream received (the normalized path and query). */
  readonly path?: string;
  readonly method?: string;
  /** Header names the upstream must not see. */
  readonly headersAbsent?: readonly string[];
  /** Header names the upstream must see (whatever their value). */
  readonly headersPresent?: readonly string[];
  /** Exact header values the upstream must see (names lower-case). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Body bytes the upstream received. */
  readonly bodyLength?: Expr;
  /** At most this many body bytes reached the upstream. */
  readonly maxBodyBytes?: Expr;
  /** Whether the body ended as framed (false: the sidecar cut it off). */
  readonly complete?: boolean;
  /** The request may not reach the upstream at all (it was refused while, or before, it was forwarded); if it does, the rest holds. */
  readonly optional?: boolean;
}

export interface CaseExpect {
  /** The first response's status, or the statuses any of which is right. */
  readonly status?: number | readonly number[];
  /** One status (or set) per response, in order, when the case sends more than one request. */
  readonly statuses?: readonly (number | readonly number[])[];
  /** x-mesh-error of the first response. */
  readonly meshError?: string;
  /** true: the sidecar closes the connection after its answer; false: it keeps it open. */
  readonly close?: boolean;
  /** The close comes from the sidecar's headers timeout (LIMITS.headersTimeoutMs in proxy/listener.ts): the runner waits that long, and no longer. */
  readonly closedBy?: 'headersTimeout';
  /** Nothing reaches the upstream. */
  readonly noUpstream?: true;
  /** What the upstream receives: one request, or several (matched by path, in any order). */
  readonly upstream?: UpstreamExpect | readonly UpstreamExpect[];
}

export interface CorpusCase {
  readonly name: string;
  /** The HTTP/1.1 row of ../shared/HARDENING.md this case exercises (1–13). */
  readonly row: number;
  readonly why: string;
  readonly send?: string | readonly Part[];
  /** Instead of `send`, for bytes that are not text. */
  readonly sendBase64?: string;
  /** The listener the bytes go to (inbound means mTLS as the service "client"). */
  readonly port?: 'outbound' | 'inbound';
  /** Write one byte every this many ms (slowloris). */
  readonly dribbleMs?: number;
  readonly expect: CaseExpect;
  /** Set when the sidecar is known to get this case wrong: the runner expects the check to fail, and says why. */
  readonly knownFailure?: string;
  /** The file the case came from. */
  readonly file: string;
}

/** The repository root: the nearest directory above this file with package.json (this file runs from bench/ and dist/bench/). */
export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('no package.json above bench/fuzz-corpus');
    dir = up;
  }
  return dir;
}

export const CORPUS_DIR = path.join(repoRoot(), 'test/hardening/corpus/http1');
export const CRASHES_DIR = path.join(repoRoot(), 'test/hardening/corpus/crashes');
export const FINDINGS_DIR = path.join(repoRoot(), 'test/hardening/corpus/findings');

/** The names an Expr may use, from the sidecar's own limits. */
export const NAMED: Readonly<Record<string, number>> = Object.freeze({
  bodyLimit: LIMITS.maxRequestBodyBytes,
  headerLimit: LIMITS.maxHeaderBytes,
  headerCount: LIMITS.maxHeaderCount,
  headersTimeout: LIMITS.headersTimeoutMs,
});

export function evalExpr(e: Expr): number {
  if (typeof e === 'number') return e;
  const m = /^([a-zA-Z]+)\s*(?:([+-])\s*(\d+))?$/.exec(e);
  const base = m ? NAMED[m[1]] : undefined;
  if (!m || base === undefined) throw new Error(`bad expression "${e}" (a number, or one of ${Object.keys(NAMED).join(', ')} ± n)`);
  const n = Number(m[3] ?? 0);
  return m[2] === '-' ? base - n : base + n;
}

/** The bytes a case sends. */
export function caseBytes(c: Pick<CorpusCase, 'send' | 'sendBase64'>): Buffer {
  if (c.sendBase64 !== undefined) return Buffer.from(c.sendBase64, 'base64');
  const parts = typeof c.send === 'string' ? [c.send] : (c.send ?? []);
  return Buffer.concat(parts.map((p) => {
    if (typeof p === 'string') return Buffer.from(p, 'latin1');
    if ('hex' in p) return Buffer.from(evalExpr(p.hex).toString(16), 'latin1');
    return Buffer.from(p.repeat.repeat(evalExpr(p.times)), 'latin1');
  }));
}

const CASE_KEYS = new Set(['name', 'row', 'why', 'send', 'sendBase64', 'port', 'dribbleMs', 'expect', 'knownFailure']);
const EXPECT_KEYS = new Set(['status', 'statuses', 'meshError', 'close', 'closedBy', 'noUpstream', 'upstream']);
const UPSTREAM_KEYS = new Set(['path', 'method', 'headersAbsent', 'headersPresent', 'headers', 'bodyLength', 'maxBodyBytes', 'complete', 'optional']);

function unknownKeys(o: object, allowed: Set<string>, where: string): string[] {
  return Object.keys(o).filter((k) => !allowed.has(k)).map((k) => `${where}: unknown field "${k}"`);
}

const isStatus = (s: unknown): boolean =>
  (typeof s === 'number' && s >= 100 && s < 600) || (Array.isArray(s) && s.length > 0 && s.every((x) => typeof x === 'number'));

/** Every problem with one parsed case file (a typo in an expectation must not pass as "nothing to check"). */
export function validateCase(raw: unknown, file: string): string[] {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return [`${file}: not a JSON object`];
  const c = raw as Record<string, unknown>;
  const errs = unknownKeys(c, CASE_KEYS, file);
  if (typeof c.name !== 'string' || !c.name) errs.push(`${file}: name missing`);
  if (typeof c.row !== 'number' || !Number.isInteger(c.row) || c.row < 1 || c.row > 13) errs.push(`${file}: row must be 1–13`);
  if (typeof c.why !== 'string' || !c.why) errs.push(`${file}: why missing`);
  if ((c.send === undefined) === (c.sendBase64 === undefined)) errs.push(`${file}: exactly one of send and sendBase64`);
  if (c.port !== undefined && c.port !== 'outbound' && c.port !== 'inbound') errs.push(`${file}: port is "outbound" or "inbound"`);
  if (c.knownFailure !== undefined && typeof c.knownFailure !== 'string') errs.push(`${file}: knownFailure is a string (why)`);
  try {
    caseBytes(c as Pick<CorpusCase, 'send' | 'sendBase64'>);
  } catch (e) {
    errs.push(`${file}: send: ${(e as Error).message}`);
  }
  const e = c.expect as Record<string, unknown> | undefined;
  if (typeof e !== 'object' || e === null) return [...errs, `${file}: expect missing`];
  errs.push(...unknownKeys(e, EXPECT_KEYS, `${file} expect`));
  if (e.status !== undefined && !isStatus(e.status)) errs.push(`${file}: expect.status is a status or a list of them`);
  if (e.statuses !== undefined && !(Array.isArray(e.statuses) && e.statuses.every(isStatus))) errs.push(`${file}: expect.statuses is a list of statuses`);
  if (e.status !== undefined && e.statuses !== undefined) errs.push(`${file}: expect.status or expect.statuses, not both`);
  if ((e.noUpstream === undefined) === (e.upstream === undefined)) errs.push(`${file}: expect says noUpstream or upstream (one of them)`);
  if (e.closedBy !== undefined && (e.closedBy !== 'headersTimeout' || e.close !== true)) errs.push(`${file}: closedBy is "headersTimeout", with close: true`);
  const ups = e.upstream === undefined ? [] : Array.isArray(e.upstream) ? e.upstream : [e.upstream];
  ups.forEach((u, i) => {
    if (typeof u !== 'object' || u === null) return void errs.push(`${file}: expect.upstream[${i}] is an object`);
    errs.push(...unknownKeys(u as object, UPSTREAM_KEYS, `${file} expect.upstream[${i}]`));
  });
  return errs;
}

/** Every case in `dir` (sorted by file name); throws listing every invalid file. */
export function loadCorpus(dir = CORPUS_DIR): CorpusCase[] {
  const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  const errs: string[] = [];
  const cases: CorpusCase[] = [];
  for (const f of files) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
    } catch (e) {
      errs.push(`${f}: ${(e as Error).message}`);
      continue;
    }
    const problems = validateCase(raw, f);
    if (problems.length) errs.push(...problems);
    else cases.push({ ...(raw as Omit<CorpusCase, 'file'>), file: f });
  }
  if (errs.length) throw new Error(`invalid corpus cases:\n${errs.join('\n')}`);
  return cases;
}
