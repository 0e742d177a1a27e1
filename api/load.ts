// YAML text → typed resources: parses multi-document YAML, remembers the line of every field path, and runs structural validation.
import { readFile, stat } from 'node:fs/promises';
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseAllDocuments } from 'yaml';
import type { Document, Node } from 'yaml';
import type { Issue, Resource, Source } from './resources.js';
import { API_VERSION } from './resources.js';
import { createCtx, join } from './schema.js';
import { validateResource } from './validate-structure.js';

/** Far above any real mesh config; refusing before parsing keeps a 10 MB upload from pinning the control plane. */
export const MAX_FILE_BYTES = 1024 * 1024;

export interface LoadResult {
  resources: Resource[];
  issues: Issue[];
}

/** The line of `path`, or of its nearest ancestor that exists (`a.b[2].c` → `a.b[2]` → `a.b` → `a` → the document). */
export function lineOf(source: Source, path: string): number {
  for (let p = path; p; p = parentPath(p)) {
    const line = source.lines.get(p);
    if (line !== undefined) return line;
  }
  return source.line;
}

function parentPath(path: string): string {
  const cut = Math.max(path.lastIndexOf('.'), path.lastIndexOf('['));
  return cut < 0 ? '' : path.slice(0, cut);
}

/** Records the line of every map key and sequence item; aliases are not followed, so an alias bomb stays small here. */
function recordLines(node: unknown, path: string, lc: LineCounter, lines: Map<string, number>): void {
  const lineAt = (n: unknown): number | undefined => {
    const range = (n as Node | null)?.range;
    return range ? lc.linePos(range[0]).line : undefined;
  };
  if (isMap(node)) {
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const p = join(path, key);
      const line = lineAt(pair.key) ?? lineAt(pair.value);
      if (line !== undefined) lines.set(p, line);
      recordLines(pair.value, p, lc, lines);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => {
      const p = `${path}[${i}]`;
      const line = lineAt(item);
      if (line !== undefined) lines.set(p, line);
      if (!isAlias(item)) recordLines(item, p, lc, lines);
    });
  }
}

/** `Kind/name` as far as the raw document tells, so even a rejected resource's issues say which one it was. */
function label(raw: unknown): string {
  const r = (raw ?? {}) as { kind?: unknown; metadata?: { name?: unknown } | null };
  const kind = typeof r.kind === 'string' ? r.kind : '';
  const name = typeof r.metadata?.name === 'string' ? r.metadata.name : '';
  return kind && name ? `${kind}/${name}` : kind;
}

/** The yaml package capitalizes its messages; ours are lowercase. */
const lowerFirst = (s: string): string => (/^[A-Z][a-z]/.test(s) ? s[0].toLowerCase() + s.slice(1) : s);

function loadDocument(doc: Document.Parsed, file: string, lc: LineCounter, out: LoadResult): void {
  const contents = doc.contents;
  if (contents === null || (isScalar(contents) && (contents.value === null || contents.value === undefined))) return;
  const lines = new Map<string, number>();
  const line = lc.linePos(contents.range[0]).line;
  lines.set('', line);
  recordLines(contents, '', lc, lines);
  const source: Source = { file, line, lines };
  let raw: unknown;
  try {
    // maxAliasCount bounds the expansion of `*ref` chains (the "billion laughs" document).
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    out.issues.push({ file, line, resource: '', path: '', message: `yaml: ${lowerFirst((err as Error).message)}` });
    return;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    out.issues.push({ file, line, resource: '', path: '', message: 'document must be a map with apiVersion, kind, metadata and spec' });
    return;
  }
  const ctx = createCtx();
  const valid = validateResource(raw, ctx);
  const resource = label(raw);
  for (const i of ctx.issues) {
    out.issues.push({ file, line: lineOf(source, i.path), resource, path: i.path, message: i.message });
  }
  if (valid) {
    out.resources.push({ apiVersion: API_VERSION, kind: valid.kind, metadata: valid.metadata, spec: valid.spec, source } as Resource);
  }
}

/** Parses every document in `text`; issues carry `file` and the line of the offending field (or its nearest parent). */
export function loadResources(text: string, file: string): LoadResult {
  const out: LoadResult = { resources: [], issues: [] };
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_FILE_BYTES) {
    out.issues.push({ file, line: 1, resource: '', path: '', message: `file is larger than 1 MiB (${bytes} bytes)` });
    return out;
  }
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false });
  // An empty stream parses to a non-array EmptyStream.
  if (!Array.isArray(docs)) return out;
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      // A document with a syntax error is skipped whole: its tree may not mean what the author wrote.
      for (const err of doc.errors) {
        const line = lc.linePos(err.pos[0]).line;
        out.issues.push({ file, line, resource: '', path: '', message: `yaml: ${lowerFirst(err.message)}` });
      }
      continue;
    }
    loadDocument(doc, file, lc, out);
  }
  return out;
}

/** Reads and loads each file in order; unreadable or oversized files become issues rather than exceptions. */
export async function loadResourceFiles(paths: readonly string[]): Promise<LoadResult> {
  const out: LoadResult = { resources: [], issues: [] };
  for (const file of paths) {
    const text = await readText(file, out.issues);
    if (text === undefined) continue;
    const r = loadResources(text, file);
    out.resources.push(...r.resources);
    out.issues.push(...r.issues);
  }
  return out;
}

async function readText(file: string, issues: Issue[]): Promise<string | undefined> {
  const fail = (message: string): undefined => {
    issues.push({ file, line: 1, resource: '', path: '', message });
    return undefined;
  };
  try {
    // Stat first so an enormous file is refused without reading it into memory.
    const st = await stat(file);
    if (!st.isFile()) return fail('is not a regular file');
    if (st.size > MAX_FILE_BYTES) return fail(`file is larger than 1 MiB (${st.size} bytes)`);
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return fail(code === 'ENOENT' ? 'file not found' : `cannot read file (${code ?? (err as Error).message})`);
  }
}
