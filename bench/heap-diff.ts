// `node dist/bench/heap-diff.js BEFORE.heapsnapshot AFTER.heapsnapshot`: what a process's live heap gained between two V8 snapshots, by kind of object.
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The parts of V8's .heapsnapshot JSON this reads. Snapshots hold only live objects: V8 collects garbage before taking one. */
export interface HeapSnapshotJson {
  snapshot: { meta: { node_fields: string[]; node_types: unknown[] } };
  nodes: number[];
  strings: string[];
}

export interface HeapSummary {
  bytes: number;
  objects: number;
  /** Keyed by "type name" for objects, closures and native or hidden objects; by type alone for code, strings and the rest. */
  byKind: Map<string, { count: number; bytes: number }>;
}

const NAMED = new Set(['object', 'closure', 'native', 'hidden', 'regexp']);

export function summarize(s: HeapSnapshotJson): HeapSummary {
  const fields = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0] as string[];
  const width = fields.length;
  const [ti, ni, si] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  if (ti < 0 || ni < 0 || si < 0) throw new Error('not a V8 heap snapshot: node_fields lacks type, name or self_size');
  const byKind = new Map<string, { count: number; bytes: number }>();
  let bytes = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + ti]] ?? 'unknown';
    const kind = NAMED.has(type) ? `${type} ${(s.strings[s.nodes[i + ni]] ?? '').slice(0, 60)}` : type;
    const size = s.nodes[i + si];
    const entry = byKind.get(kind);
    if (entry) {
      entry.count++;
      entry.bytes += size;
    } else {
      byKind.set(kind, { count: 1, bytes: size });
    }
    bytes += size;
  }
  return { bytes, objects: s.nodes.length / width, byKind };
}

export interface KindChange { kind: string; countBefore: number; countAfter: number; bytesBefore: number; bytesAfter: number }

/** Every kind whose bytes or count changed, the largest growth in bytes first. */
export function diffHeaps(before: HeapSummary, after: HeapSummary): KindChange[] {
  const kinds = new Set([...before.byKind.keys(), ...after.byKind.keys()]);
  const rows: KindChange[] = [];
  for (const kind of kinds) {
    const a = before.byKind.get(kind) ?? { count: 0, bytes: 0 };
    const b = after.byKind.get(kind) ?? { count: 0, bytes: 0 };
    if (a.count !== b.count || a.bytes !== b.bytes) rows.push({ kind, countBefore: a.count, countAfter: b.count, bytesBefore: a.bytes, bytesAfter: b.bytes });
  }
  return rows.sort((x, y) => (y.bytesAfter - y.bytesBefore) - (x.bytesAfter - x.bytesBefore) || x.kind.localeCompare(y.kind));
}

const kb = (n: number): string => (n / 1024).toFixed(1);

export function renderHeapDiff(name: string, before: HeapSummary, after: HeapSummary, top = 8): string {
  const rows = diffHeaps(before, after);
  const code = rows.find((r) => r.kind === 'code');
  const rest = (after.bytes - before.bytes) - (code ? code.bytesAfter - code.bytesBefore : 0);
  const signed = (n: number): string => `${n >= 0 ? '+' : ''}${kb(n)} KB`;
  return [
    `**${name}**: live heap ${(before.bytes / 1048576).toFixed(2)} → ${(after.bytes / 1048576).toFixed(2)} MB ` +
      `(${before.objects} → ${after.objects} objects); compiled code ${signed(code ? code.bytesAfter - code.bytesBefore : 0)}, ` +
      `everything else ${signed(rest)}.`,
    '',
    '| kind | count | KB |',
    '| --- | --- | --- |',
    ...rows.slice(0, top).map((r) => `| ${r.kind} | ${r.countBefore} → ${r.countAfter} | ${kb(r.bytesBefore)} → ${kb(r.bytesAfter)} |`),
    '',
  ].join('\n');
}

async function main(argv: string[]): Promise<void> {
  if (argv.length !== 2) throw new Error('usage: node dist/bench/heap-diff.js BEFORE.heapsnapshot AFTER.heapsnapshot');
  const [before, after] = await Promise.all(argv.map(async (f) => summarize(JSON.parse(await readFile(f, 'utf8')) as HeapSnapshotJson)));
  process.stdout.write(renderHeapDiff(`${basename(argv[0])} → ${basename(argv[1])}`, before, after, 12));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
