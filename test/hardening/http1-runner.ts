// Runs HTTP/1.1 corpus cases (bench/fuzz-corpus.ts) against a live sidecar: the bytes on a fresh connection, the answer, a canary on the same connection where it stays open, and what the upstream saw.
import type tls from 'node:tls';
import { caseBytes, evalExpr, type CorpusCase, type UpstreamExpect } from '../../bench/fuzz-corpus.js';
import type { RecordingUpstream, SeenRequest } from '../../bench/fuzz-upstream.js';
import { RawConnection, type ReadResult } from '../../bench/fuzz-wire.js';
import { LIMITS } from '../../proxy/listener.js';
import { waitFor } from '../harness/wait.js';

export interface Target {
  readonly outbound: string;
  readonly inbound: string;
  /** mTLS client options for the inbound port. */
  readonly inboundTls: tls.ConnectionOptions;
  readonly upstream: RecordingUpstream;
  /** The x-forwarded-client-cert the app must see on every inbound request (the sidecar's, never the client's). */
  readonly inboundXfcc: string;
  /** A Host the outbound side routes to the upstream. */
  readonly outboundHost: string;
}

/** Longest wait for a response that should come at once. */
const ANSWER_MS = 10_000;
/** Longest wait for a close the sidecar announced. */
const CLOSE_MS = 5_000;

/** How long a `closedBy: headersTimeout` case may take: the timeout, one check interval, and slack for a busy machine. */
export const HEADERS_TIMEOUT_BOUND_MS = LIMITS.headersTimeoutMs + LIMITS.timeoutCheckIntervalMs + 5_000;

let canaries = 0;

const CANARY = /^\/canary-\d+$/;

const describeRead = (r: ReadResult): string =>
  r.kind === 'response' ? `${r.response.status}` : r.kind === 'garbage' ? `bytes that are no response: ${JSON.stringify(r.text)}` : `${r.kind} (${JSON.stringify(r.leftover)})`;

const statusOk = (got: number, want: number | readonly number[]): boolean => (typeof want === 'number' ? got === want : want.includes(got));

/** The canary: a plain GET whose answer (the upstream echoes the path) proves the connection is still in step. */
async function canary(t: Target, c: CorpusCase, conn: RawConnection | undefined): Promise<{ path: string; problem?: string }> {
  const path = `/canary-${++canaries}`;
  const host = c.port === 'inbound' ? 'web' : t.outboundHost;
  const own = conn === undefined;
  const use = conn ?? (await open(t, c));
  try {
    await use.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    const r = await use.final(ANSWER_MS);
    if (r.kind !== 'response') return { path, problem: `canary ${path} ${own ? 'on a fresh connection' : 'on the same connection'} got ${describeRead(r)}` };
    const body = r.response.body.toString('latin1');
    if (r.response.status !== 200 || !body.includes(`"path":"${path}"`)) {
      return { path, problem: `desync: canary ${path} ${own ? 'on a fresh connection' : 'on the same connection'} got ${r.response.status} ${JSON.stringify(body.slice(0, 200))}` };
    }
    return { path };
  } finally {
    if (own) use.destroy();
  }
}

function open(t: Target, c: CorpusCase): Promise<RawConnection> {
  return c.port === 'inbound' ? RawConnection.open(t.inbound, { tls: t.inboundTls }) : RawConnection.open(t.outbound);
}

const headerText = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v);

/** What every forwarded request must look like: one framing, no hop-by-hop fields, no client-made mesh identity. */
export function hygiene(r: SeenRequest, inbound: boolean, xfcc: string): string[] {
  const out: string[] = [];
  const h = r.headers;
  const websocket = r.method === 'GET' && String(h.upgrade ?? '').toLowerCase() === 'websocket';
  if (h['content-length'] !== undefined && h['transfer-encoding'] !== undefined) out.push('both Content-Length and Transfer-Encoding');
  if (h['transfer-encoding'] !== undefined && h['transfer-encoding'] !== 'chunked') out.push(`transfer-encoding "${h['transfer-encoding']}"`);
  for (const name of ['keep-alive', 'proxy-connection', 'te', 'trailer', 'http2-settings', 'expect']) if (h[name] !== undefined) out.push(`hop-by-hop "${name}"`);
  if (h.upgrade !== undefined && !websocket) out.push(`upgrade "${String(h.upgrade)}"`);
  const conn = (headerText(h.connection) ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
  for (const tok of conn) if (tok !== 'keep-alive' && tok !== 'close' && !(websocket && tok === 'upgrade')) out.push(`connection token "${tok}"`);
  for (let i = 0; i < r.rawHeaders.length; i += 2) {
    const name = r.rawHeaders[i].toLowerCase();
    if (name.startsWith('x-mesh-')) out.push(`client-sent "${name}"`);
    if (name.includes('_')) out.push(`underscore name "${name}"`);
  }
  const got = headerText(h['x-forwarded-client-cert']);
  if (inbound ? got !== xfcc : got !== undefined) out.push(`x-forwarded-client-cert ${JSON.stringify(got)}`);
  if (h.host === undefined) out.push('no Host');
  return out.map((p) => `upstream ${r.method} ${r.url}: ${p}`);
}

function checkUpstream(u: UpstreamExpect, r: SeenRequest): string[] {
  const out: string[] = [];
  const at = `upstream ${r.method} ${r.url}`;
  if (u.path !== undefined && r.url !== u.path) out.push(`${at}: path, want ${u.path}`);
  if (u.method !== undefined && r.method !== u.method) out.push(`${at}: method, want ${u.method}`);
  for (const n of u.headersAbsent ?? []) if (r.headers[n.toLowerCase()] !== undefined) out.push(`${at}: has "${n}": ${JSON.stringify(r.headers[n.toLowerCase()])}`);
  for (const n of u.headersPresent ?? []) if (r.headers[n.toLowerCase()] === undefined) out.push(`${at}: lacks "${n}"`);
  for (const [n, v] of Object.entries(u.headers ?? {})) {
    const got = headerText(r.headers[n.toLowerCase()]);
    if (got !== v) out.push(`${at}: "${n}" is ${JSON.stringify(got)}, want ${JSON.stringify(v)}`);
  }
  if (u.bodyLength !== undefined && r.bodyBytes !== evalExpr(u.bodyLength)) out.push(`${at}: ${r.bodyBytes} body bytes, want ${evalExpr(u.bodyLength)}`);
  if (u.maxBodyBytes !== undefined && r.bodyBytes > evalExpr(u.maxBodyBytes)) out.push(`${at}: ${r.bodyBytes} body bytes, over ${evalExpr(u.maxBodyBytes)}`);
  if (u.complete !== undefined && r.complete !== u.complete) out.push(`${at}: body ${r.complete ? 'complete' : 'cut off'}, want ${u.complete ? 'complete' : 'cut off'}`);
  return out;
}

/** Pairs expectations with requests (by path when given), then checks each pair; unpaired requests are unexpected. */
function matchUpstream(want: readonly UpstreamExpect[], seen: SeenRequest[]): string[] {
  const left = [...seen];
  const out: string[] = [];
  for (const u of want) {
    const i = u.path !== undefined ? left.findIndex((r) => r.url === u.path) : left.length > 0 ? 0 : -1;
    if (i < 0) {
      if (!u.optional) out.push(`upstream never saw ${u.path ?? 'the request'}`);
      continue;
    }
    out.push(...checkUpstream(u, left[i]));
    left.splice(i, 1);
  }
  for (const r of left) out.push(`unexpected upstream request ${r.method} ${r.url}`);
  return out;
}

/**
 * Runs one case and returns what went wrong (empty: it passed). Requests the upstream sees while the case runs are
 * attributed to it, except other cases' canaries, so cases expecting no upstream request may run side by side.
 */
export async function runCase(t: Target, c: CorpusCase): Promise<string[]> {
  const problems: string[] = [];
  const started = Date.now();
  const mark = t.upstream.seen.length;
  const bytes = caseBytes(c);
  const e = c.expect;
  const responseMs = e.closedBy ? HEADERS_TIMEOUT_BOUND_MS : ANSWER_MS;
  if (e.closedBy && c.dribbleMs && bytes.length * c.dribbleMs <= HEADERS_TIMEOUT_BOUND_MS) {
    problems.push(`dribbling ${bytes.length} bytes at ${c.dribbleMs} ms ends before the headers timeout could be seen`);
  }
  const conn = await open(t, c);
  try {
    const sending = c.dribbleMs ? conn.dribble(bytes, c.dribbleMs) : conn.write(bytes);
    const want = e.statuses ?? (e.status !== undefined ? [e.status] : []);
    let last: ReadResult | undefined;
    for (let i = 0; i < want.length; i++) {
      last = await conn.next(responseMs);
      if (last.kind !== 'response') {
        problems.push(`response ${i + 1}: got ${describeRead(last)}`);
        break;
      }
      const got = last.response;
      if (!statusOk(got.status, want[i])) problems.push(`response ${i + 1}: status ${got.status}, want ${JSON.stringify(want[i])}: ${JSON.stringify(got.body.toString('latin1').slice(0, 200))}`);
      if (i === 0 && e.meshError !== undefined && got.headers['x-mesh-error'] !== e.meshError) {
        problems.push(`x-mesh-error ${JSON.stringify(got.headers['x-mesh-error'])}, want ${e.meshError}`);
      }
    }
    const closing = conn.isClosed || (last?.kind === 'response' && last.response.closing);
    if (e.close === true) {
      if (!(await conn.waitClosed(want.length ? CLOSE_MS : responseMs))) problems.push('the connection stayed open');
      else if (e.closedBy && conn.closedAtMs - started > HEADERS_TIMEOUT_BOUND_MS) problems.push(`closed after ${conn.closedAtMs - started} ms, past ${HEADERS_TIMEOUT_BOUND_MS} ms`);
    } else if (e.close === false && closing) {
      problems.push('the connection was closed');
    }
    if (c.dribbleMs) conn.destroy();
    else await sending;

    // The canary goes on the same connection when the sidecar kept it; on a fresh one (liveness only) otherwise.
    const same = !closing && !conn.isClosed && !problems.some((p) => p.startsWith('response '));
    const cn = await canary(t, c, same ? conn : undefined);
    if (cn.problem) problems.push(cn.problem);
    else await waitFor(() => t.upstream.seen.slice(mark).some((r) => r.url === cn.path), { timeoutMs: 5_000, what: `the upstream to see ${cn.path}` });

    const seen = t.upstream.seen.slice(mark).filter((r) => !CANARY.test(r.url) || r.url === cn.path);
    const canarySeen = seen.filter((r) => r.url === cn.path).length;
    if (!cn.problem && canarySeen !== 1) problems.push(`the upstream saw ${cn.path} ${canarySeen} times`);
    const mine = seen.filter((r) => r.url !== cn.path);
    if (e.noUpstream) for (const r of mine) problems.push(`nothing should reach the upstream, but it saw ${r.method} ${r.url}`);
    if (e.upstream) problems.push(...matchUpstream(Array.isArray(e.upstream) ? e.upstream : [e.upstream as UpstreamExpect], mine));
    for (const r of mine) problems.push(...hygiene(r, c.port === 'inbound', t.inboundXfcc));
  } finally {
    conn.destroy();
  }
  return problems;
}

/** Sends raw bytes (a saved fuzzer input) on a fresh connection and reads whatever comes back, bounded; never throws. */
export async function replay(addr: string, bytes: Buffer, timeoutMs = 1_000): Promise<void> {
  const conn = await RawConnection.open(addr).catch(() => undefined);
  if (!conn) return;
  try {
    await conn.write(bytes);
    for (let i = 0; i < 16; i++) {
      const r = await conn.next(timeoutMs);
      if (r.kind !== 'response') break;
    }
  } finally {
    conn.destroy();
  }
}

/** A plain GET on a fresh connection must be answered by the upstream: the sidecar is alive and serving. */
export async function freshCanary(t: Target): Promise<string | undefined> {
  const c = { port: 'outbound' } as CorpusCase;
  return (await canary(t, c, undefined)).problem;
}
