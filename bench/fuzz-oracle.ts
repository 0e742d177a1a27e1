// The fuzzer's desync oracles (bench/fuzz.ts): what the client got back on the fuzzed connection, judged against the reference parse, and every upstream request judged against the input it came from.
import type { SeenRequest } from './fuzz-upstream.js';
import type { RawConnection, WireResponse } from './fuzz-wire.js';
import { forwardablePath, forwardablePaths, type Reference } from './fuzz-reference.js';

/** How the fuzzed connection ended, from the client's side. */
export interface Outcome {
  /** Final responses in order (1xx skipped). */
  readonly responses: readonly WireResponse[];
  /** Index of the canary's answer in `responses`, or -1. */
  readonly canaryAt: number;
  readonly end: 'canary' | 'closing-response' | 'closed' | 'timeout' | 'garbage' | 'too-many';
  readonly garbage?: string;
}

/** Reads answers until the canary's, a close, bytes that are no response, or the deadline (longer when the canary is owed). */
export async function readOutcome(conn: RawConnection, ref: Reference, canaryPath: string): Promise<Outcome> {
  const responses: WireResponse[] = [];
  const marker = `"path":"${canaryPath}"`;
  let deadline = Date.now() + (ref.canaryAnswered ? 3_000 : 700);
  let extended = false;
  for (;;) {
    const head = ref.requests[responses.length]?.method === 'HEAD';
    const r = await conn.next(Math.max(0, deadline - Date.now()), head);
    if (r.kind === 'response') {
      const res = r.response;
      if (res.status < 200 && res.status !== 101) continue;
      responses.push(res);
      if (res.body.toString('latin1').includes(marker)) return { responses, canaryAt: responses.length - 1, end: 'canary' };
      if (res.closing) return { responses, canaryAt: -1, end: 'closing-response' };
      if (responses.length > ref.requests.length + 4) return { responses, canaryAt: -1, end: 'too-many' };
      continue;
    }
    if (r.kind === 'garbage') return { responses, canaryAt: -1, end: 'garbage', garbage: r.text };
    if (r.kind === 'closed') return { responses, canaryAt: -1, end: 'closed' };
    // A busy machine is not a desync: an owed canary gets one long second chance before it counts as a stall.
    if (ref.canaryAnswered && !extended) {
      extended = true;
      deadline = Date.now() + 10_000;
      continue;
    }
    return { responses, canaryAt: -1, end: 'timeout' };
  }
}

export interface Verdict {
  /** A desync-class finding (the run fails), another finding (reported), or nothing. */
  readonly kind: 'desync' | 'other' | undefined;
  readonly what: string;
}

const OK: Verdict = { kind: undefined, what: '' };

/**
 * The client-side oracle. The reference parse says where the input's requests end; if it reached the canary, the
 * sidecar must answer it in the same place, or have closed with an announced close (it refuses more than Node does).
 */
export function judge(ref: Reference, out: Outcome): Verdict {
  const canaryIndex = ref.requests.length - 1;
  switch (out.end) {
    case 'garbage':
      return { kind: 'desync', what: `bytes that are no HTTP response: ${JSON.stringify(out.garbage)}` };
    case 'too-many':
      return { kind: 'desync', what: `${out.responses.length} responses for ${ref.requests.length} requests` };
    case 'canary':
      if (!ref.canaryAnswered) return { kind: 'desync', what: 'the sidecar answered a canary that Node\'s parser reads as part of the input' };
      if (out.canaryAt !== canaryIndex) return { kind: 'desync', what: `the canary's answer came as response ${out.canaryAt + 1}, Node's parser puts it at ${canaryIndex + 1}` };
      return OK;
    case 'timeout':
      return ref.canaryAnswered ? { kind: 'desync', what: `stall: no answer to the canary (Node's parser delimits it as request ${canaryIndex + 1})` } : OK;
    case 'closed':
      return ref.canaryAnswered
        ? { kind: 'other', what: `silent close after ${out.responses.length} responses, before the canary (request ${canaryIndex + 1})` }
        : OK;
    case 'closing-response':
      return OK;
  }
}

/** One input as the upstream oracle knows it. */
export interface Attribution {
  readonly index: number;
  readonly canaryPath: string;
  readonly allowed: ReadonlySet<string>;
  /** Requests before the canary in the reference parse. */
  readonly refCount: number;
  upstreamCount: number;
  canarySeen: number;
  /** What the upstream received for this input (live records: a body may still be arriving). */
  readonly seen: SeenRequest[];
}

export function attribution(index: number, ref: Reference, canaryPath: string): Attribution {
  const before = ref.requests.filter((r) => r.url !== canaryPath);
  return { index, canaryPath, allowed: forwardablePaths(before), refCount: before.length, upstreamCount: 0, canarySeen: 0, seen: [] };
}

/** The upstream oracle, per request as it arrives: every request is the canary (once) or one the input really holds. */
export function judgeUpstream(a: Attribution, r: SeenRequest): Verdict {
  if (a.seen.length < 64) a.seen.push(r);
  if (r.url === a.canaryPath) {
    return ++a.canarySeen > 1 ? { kind: 'desync', what: `the upstream saw the canary ${a.canarySeen} times` } : OK;
  }
  a.upstreamCount++;
  if (!a.allowed.has(r.url)) {
    return { kind: 'desync', what: `the upstream saw ${r.method} ${r.url}, which is no request of the input as Node parses it (${[...a.allowed].join(' ') || 'none'})` };
  }
  if (a.upstreamCount > a.refCount) return { kind: 'desync', what: `the upstream saw ${a.upstreamCount} requests; the input holds ${a.refCount}` };
  return OK;
}

/** The path an upstream answer names (the recording upstream echoes it), or undefined for any other response. */
function echoPath(res: WireResponse | undefined): string | undefined {
  if (!res || res.headers['x-mesh-error'] !== undefined) return undefined;
  const m = /^\{"path":("(?:[^"\\]|\\.)*")/.exec(res.body.toString('latin1'));
  if (!m) return undefined;
  try {
    return JSON.parse(m[1]) as string;
  } catch {
    return undefined;
  }
}

/**
 * Answers in their places: every request the upstream received in full must be accounted for by an upstream answer
 * in a place Node's parse gives its path, up to the last answer the client got (that one included); past it, a request
 * may have been forwarded while the connection was closing. A refusal in its place tells the client "refused" about a
 * request the upstream served; a missing answer leaves the responses out of step.
 */
export function judgeAnswers(ref: Reference, out: Outcome, a: Attribution): Verdict {
  if (out.end !== 'closing-response' && out.end !== 'canary') return OK;
  const last = out.end === 'canary' ? out.canaryAt : out.responses.length - 1;
  const paths = ref.requests.map(forwardablePath);
  const served = new Map<string, number>();
  for (const x of a.seen) {
    if (x.complete && x.method !== 'HEAD' && x.url !== a.canaryPath) served.set(x.url, (served.get(x.url) ?? 0) + 1);
  }
  for (const [path, n] of served) {
    const places = paths.flatMap((p, j) => (p === path ? [j] : []));
    const answered = places.filter((j) => j <= last && echoPath(out.responses[j]) === path).length;
    const later = places.filter((j) => j > last).length;
    if (n <= answered + later) continue;
    const j = places.find((k) => k <= last && echoPath(out.responses[k]) !== path);
    const got = j === undefined ? undefined : out.responses[j];
    return {
      kind: 'desync',
      what: `the upstream served ${path} ${n} time(s), but the client got ${answered} answer(s) for it` +
        (got ? `; in its place (response ${(j ?? 0) + 1}): ${got.status} ${got.headers['x-mesh-error'] ?? ''} ${got.body.toString('latin1').slice(0, 80)}` : ''),
    };
  }
  return OK;
}
