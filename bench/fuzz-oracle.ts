// The fuzzer's desync oracles (bench/fuzz.ts): what the client got back on the fuzzed connection, judged against the reference parse, and every upstream request judged against the input it came from.
import type { SeenRequest } from './fuzz-upstream.js';
import type { RawConnection, WireResponse } from './fuzz-wire.js';
import { forwardablePaths, type Reference } from './fuzz-reference.js';

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
}

export function attribution(index: number, ref: Reference, canaryPath: string): Attribution {
  const before = ref.requests.filter((r) => r.url !== canaryPath);
  return { index, canaryPath, allowed: forwardablePaths(before), refCount: before.length, upstreamCount: 0, canarySeen: 0 };
}

/** The upstream oracle, per request as it arrives: every request is the canary (once) or one the input really holds. */
export function judgeUpstream(a: Attribution, r: SeenRequest): Verdict {
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
