// npm run fuzz -- --seconds N [--seed S] [--concurrency C]: mutates the HTTP/1.1 attack corpus and sends it to a real sidecar, watching for crashes, desync, requests the upstream should never see, and memory growth.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CRASHES_DIR, FINDINGS_DIR, caseBytes, loadCorpus, repoRoot } from './fuzz-corpus.js';
import { mutate, rngFor } from './fuzz-mutate.js';
import { attribution, judge, judgeAnswers, judgeUpstream, readOutcome, type Attribution, type Verdict } from './fuzz-oracle.js';
import { startReference } from './fuzz-reference.js';
import { renderReport, type FuzzStats } from './fuzz-report.js';
import { startTarget, rssBytes, type FuzzTarget } from './fuzz-target.js';
import { startRecordingUpstream, type SeenRequest } from './fuzz-upstream.js';
import { RawConnection } from './fuzz-wire.js';
import { stopAll } from './processes.js';

/** Inputs are capped so that one slow input cannot hold a worker: large corpus cases (16 MiB bodies) are cut. */
const MAX_INPUT = 64 * 1024;
const RSS_LIMIT = 300 * 1024 * 1024;
/** Findings saved per kind, so one systematic problem does not fill the disk. */
const SAVE_PER_KIND = 20;
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    seed: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
    out: { type: 'string', default: join(repoRoot(), 'bench/results/fuzz-latest.md') },
    // Another build of the mesh CLI to fuzz (as MESH_E2E_MAIN does for the tests).
    main: { type: 'string', default: join(repoRoot(), 'dist/cli/main.js') },
  },
});
const seconds = Number(values.seconds);
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const concurrency = Number(values.concurrency);
if (!(seconds > 0) || !Number.isInteger(seed) || !(concurrency >= 1)) {
  console.error('usage: npm run fuzz -- --seconds N [--seed S] [--concurrency C] [--out FILE] [--main dist/cli/main.js]');
  process.exit(2);
}

const stats: FuzzStats = {
  seed, seconds, concurrency, inputs: 0, skipped: 0, lost: 0, crashes: 0, restarts: 0, maxRssBytes: 0, elapsedMs: 0,
  statuses: new Map(), findings: [], seeds: 0,
};
const saved = new Map<string, number>();

function save(kind: string, category: 'crash' | 'desync' | 'other', what: string, bytes: Buffer | undefined, extra: Record<string, unknown> = {}): void {
  const sha = createHash('sha256').update(bytes ?? Buffer.from(what)).digest('hex').slice(0, 16);
  let file: string | undefined;
  if ((saved.get(kind) ?? 0) < SAVE_PER_KIND) {
    saved.set(kind, (saved.get(kind) ?? 0) + 1);
    const dir = category === 'crash' ? CRASHES_DIR : FINDINGS_DIR;
    mkdirSync(dir, { recursive: true });
    mkdirSync(FINDINGS_DIR, { recursive: true });
    if (bytes) writeFileSync(join(dir, `${sha}.bin`), bytes);
    writeFileSync(join(FINDINGS_DIR, `${sha}.json`), `${JSON.stringify({ kind, category, what, seed, ...extra }, null, 2)}\n`);
    file = bytes ? join(category === 'crash' ? 'crashes' : 'findings', `${sha}.bin`) : join('findings', `${sha}.json`);
  }
  stats.findings.push({ kind, category, what, file, index: extra.index as number | undefined });
  console.log(`finding (${category}) ${kind}: ${what}${file ? ` -> ${file}` : ''}`);
}

interface InFlight {
  readonly index: number;
  readonly bytes: Buffer;
  readonly ops: readonly string[];
}

async function main(): Promise<void> {
  const seeds = loadCorpus().filter((c) => c.port !== 'inbound').map((c) => caseBytes(c).subarray(0, MAX_INPUT));
  stats.seeds = seeds.length;
  const tmp = await mkdtemp(join(os.tmpdir(), 'trellis-fuzz-'));
  const upstream = await startRecordingUpstream({ keep: 64 });
  const reference = await startReference();
  let target: FuzzTarget = await startTarget(tmp, upstream.address, values.main);
  const byId = new Map<number, Attribution>();
  const inflight = new Set<InFlight>();
  let restarting: Promise<void> | undefined;
  let stopping = false;

  upstream.onRequest((r: SeenRequest) => {
    const host = String(r.headers.host ?? '');
    if (host === 'echo' && /^\/health-\d+$/.test(r.url)) return;
    // The tag is the first five digits: a mutated input may put digits right after its own `echo` ("echo6" became
    // "echo:36296" when the tag was unpadded, and was taken for input 36296's).
    const m = /^echo:(\d{5})/i.exec(host);
    const a = m ? byId.get(Number(m[1])) : undefined;
    if (!a) return save('unattributed-upstream-request', 'desync', `the upstream saw ${r.method} ${r.url} with Host ${JSON.stringify(host)}, from no input`, undefined);
    const v: Verdict = judgeUpstream(a, r);
    // No bytes saved: input `index` is rebuilt from the seed (`mutate(seeds, rngFor(seed, index))`).
    if (v.kind) save(v.kind === 'desync' ? 'upstream' : 'upstream-other', v.kind, `${v.what}, Host ${JSON.stringify(host)}`, undefined, { index: a.index });
  });

  upstream.onParseError((code, packet) => {
    // A head just within the sidecar's 16 KiB, plus the headers it adds, can be over an upstream's own 16 KiB: a 502, not a desync.
    const category = code === 'HPE_HEADER_OVERFLOW' ? 'other' : 'desync';
    save(`upstream-parse-error-${code}`, category, `the upstream's parser refused what the sidecar sent it (${code}): ${JSON.stringify(packet.slice(0, 300))}`, undefined);
  });

  const watch = (t: FuzzTarget): void => {
    void t.child.exited.then(({ code, signal }) => {
      if (stopping) return;
      stats.crashes++;
      const tail = t.child.output().slice(-4_000);
      for (const f of inflight) save('crash', 'crash', `sidecar exited (code ${code}, signal ${signal}) with this input in flight`, f.bytes, { index: f.index, ops: f.ops, stderr: tail });
      restarting = (async () => {
        target = await startTarget(tmp, upstream.address, values.main);
        stats.restarts++;
        watch(target);
        restarting = undefined;
      })();
    });
  };
  watch(target);

  const rssTimer = setInterval(() => {
    const rss = rssBytes(target.child.pid);
    if (rss === undefined) return;
    if (rss > stats.maxRssBytes) stats.maxRssBytes = rss;
    if (rss > RSS_LIMIT && !stats.findings.some((f) => f.kind === 'memory')) save('memory', 'other', `sidecar RSS ${(rss / 2 ** 20).toFixed(0)} MB, over ${RSS_LIMIT / 2 ** 20} MB`, undefined);
  }, 1_000);

  let health = 0;
  const healthTimer = setInterval(() => {
    if (restarting) return;
    const n = ++health;
    void (async () => {
      const conn = await RawConnection.open(target.outbound).catch(() => undefined);
      if (!conn) return;
      await conn.write(`GET /health-${n} HTTP/1.1\r\nHost: echo\r\n\r\n`);
      const r = await conn.final(10_000);
      conn.destroy();
      if (!stopping && !restarting && (r.kind !== 'response' || r.response.status !== 200)) {
        save('unresponsive', 'other', `a plain GET on a fresh connection got ${r.kind === 'response' ? r.response.status : r.kind}`, undefined);
      }
    })();
  }, 2_000);

  const started = Date.now();
  const deadline = started + seconds * 1_000;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      if (restarting) await restarting;
      await runInput(next++);
    }
  };

  async function runInput(index: number): Promise<void> {
    const m = mutate(seeds, rngFor(seed, index), MAX_INPUT);
    const id = (index % 65_000) + 1;
    const tag = String(id).padStart(5, '0');
    const bytes = Buffer.from(m.bytes.toString('latin1').replace(/echo/gi, `echo:${tag}`), 'latin1');
    // The preface (or what could still become it) is HTTP/2's business, not this fuzzer's.
    if (bytes.length === 0 || PREFACE.startsWith(bytes.subarray(0, 24).toString('latin1'))) {
      stats.skipped++;
      return;
    }
    const canaryPath = `/canary-${index}`;
    const canary = Buffer.from(`GET ${canaryPath} HTTP/1.1\r\nHost: echo:${tag}\r\n\r\n`, 'latin1');
    const ref = await reference.read(bytes, canary, canaryPath);
    byId.set(id, attribution(index, ref, canaryPath));
    const f: InFlight = { index, bytes, ops: m.ops };
    const t = target;
    const conn = await RawConnection.open(t.outbound).catch(() => undefined);
    if (!conn) {
      stats.lost++;
      return;
    }
    inflight.add(f);
    try {
      if (m.fragments) await conn.writeFragments(bytes, m.fragments);
      else await conn.write(bytes);
      await conn.write(canary);
      const out = await readOutcome(conn, ref, canaryPath);
      stats.inputs++;
      if (t !== target || !t.child.running()) return;
      const first = out.responses[0] ? String(out.responses[0].status) : out.end;
      stats.statuses.set(first, (stats.statuses.get(first) ?? 0) + 1);
      let v = judge(ref, out);
      const a = byId.get(id);
      if (!v.kind && a?.index === index) {
        // A request forwarded just before a refusal reaches the upstream a moment after the client read that refusal.
        if (out.end === 'closing-response' && a.allowed.size > 0) await new Promise((r) => setTimeout(r, 30));
        v = judgeAnswers(ref, out, a);
      }
      if (v.kind) {
        save(v.kind === 'desync' ? `client-${out.end}` : `client-${out.end}-other`, v.kind, v.what, bytes, {
          index, ops: m.ops, fragments: m.fragments, reference: ref.requests, responses: out.responses.map((r) => `${r.status} ${r.body.toString('latin1').slice(0, 120)}`),
        });
      }
    } finally {
      conn.destroy();
      inflight.delete(f);
    }
  }

  console.log(`fuzzing ${target.outbound} for ${seconds} s: seed ${seed}, ${seeds.length} seeds, concurrency ${concurrency}`);
  await Promise.all(Array.from({ length: concurrency }, worker));
  stats.elapsedMs = Date.now() - started;
  // Late upstream arrivals and a crash in the last moment still count.
  await new Promise((r) => setTimeout(r, 500));
  if (restarting) await restarting;
  stopping = true;
  clearInterval(rssTimer);
  clearInterval(healthTimer);
  await target.child.stop('SIGTERM', 5_000);
  await stopAll();
  await reference.close();
  await upstream.close();
  await rm(tmp, { recursive: true, force: true });

  const report = renderReport(stats);
  mkdirSync(join(values.out!, '..'), { recursive: true });
  writeFileSync(values.out!, report);
  console.log(`\n${report}`);
  const desync = stats.findings.filter((f) => f.category === 'desync').length;
  process.exitCode = stats.crashes > 0 || desync > 0 ? 1 : 0;
}

main().catch(async (err: unknown) => {
  console.error(err);
  await stopAll();
  process.exit(2);
});
