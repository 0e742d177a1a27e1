// Apply, Delete, Get and Diff over the store: every write validated with the same api/ code as `mesh validate`, all or nothing.
import { parseAllDocuments, stringify } from 'yaml';
import { lineOf, loadResources } from '../api/load.js';
import { formatIssue, KINDS, type Kind, type Resource } from '../api/resources.js';
import { validateMeaning } from '../api/validate-meaning.js';
import type { ApplyResponse, DiffResponse } from '../api/protocol.js';
import { RESOURCES, resourceKey, type MeshState } from './state.js';
import type { Store, TxnCompare, TxnOp } from './store.js';

interface RawDoc {
  readonly key: string;
  readonly id: string;
  readonly json: string;
}

/** Kind names as users type them: `route`, `routes`, `Route`. */
export function canonicalKind(kind: string): Kind | undefined {
  const k = kind.toLowerCase().replace(/s$/, '').replace(/ie$/, 'y');
  return KINDS.find((x) => x.toLowerCase() === k || x.toLowerCase() === kind.toLowerCase());
}

/** The raw documents of a YAML text, keyed like the store, so what is stored is what the user wrote. */
function rawDocs(yaml: string): RawDoc[] {
  const out: RawDoc[] = [];
  for (const doc of parseAllDocuments(yaml)) {
    const js = doc.toJS() as { kind?: unknown; metadata?: { name?: unknown; namespace?: unknown } } | null;
    if (!js || typeof js !== 'object') continue;
    const kind = String(js.kind);
    const ns = typeof js.metadata?.namespace === 'string' ? js.metadata.namespace : 'default';
    const name = String(js.metadata?.name);
    out.push({ key: resourceKey(kind, ns, name), id: `${kind}/${name}`, json: JSON.stringify(js) });
  }
  return out;
}

/** Stored documents parsed back into validated resources (they were valid when written). */
export function storedResources(values: Iterable<string>): { resources: Resource[]; issues: string[] } {
  const text = [...values].join('\n---\n');
  const r = loadResources(text, 'store');
  return { resources: r.resources, issues: r.issues.map(formatIssue) };
}

/**
 * A MeshConfig may only name the CA's trust domain: sidecars check peers against it, so any other value would be
 * NACKed by every sidecar. Left out, the control plane fills in the CA's (control-plane/snapshots.ts).
 */
export function trustDomainIssues(resources: readonly Resource[], caTrustDomain: string): string[] {
  return resources
    .filter((r) => r.kind === 'MeshConfig' && r.source.lines.has('spec.trustDomain') && r.spec.trustDomain !== caTrustDomain)
    .map((r) => formatIssue({
      file: r.source.file, line: lineOf(r.source, 'spec.trustDomain'), resource: `MeshConfig/${r.metadata.name}`, path: 'spec.trustDomain',
      message: `must be "${caTrustDomain}", the trust domain of the control plane's CA (or left out)`,
    }));
}

export class ResourcesApi {
  constructor(private readonly store: Store, private readonly state: MeshState, private readonly caTrustDomain: string) {}

  private async current(): Promise<Map<string, { value: string; modRevision: number }>> {
    const range = await this.store.get(RESOURCES);
    return new Map(range.kvs.map((kv) => [kv.key, { value: kv.value, modRevision: kv.modRevision }]));
  }

  /** Checks the stored set with `replace` applied; returns issues (empty = valid). */
  private validateUnion(stored: Map<string, { value: string }>, replace: Map<string, string | undefined>, file: string, yaml: string): string[] {
    const given = yaml ? loadResources(yaml, file) : { resources: [], issues: [] };
    if (given.issues.length) return given.issues.map(formatIssue);
    const keep = [...stored].filter(([k]) => !replace.has(k)).map(([, v]) => v.value);
    const rest = storedResources(keep);
    if (rest.issues.length) return rest.issues;
    const meaning = validateMeaning([...rest.resources, ...given.resources]).map(formatIssue);
    return [...meaning, ...trustDomainIssues(given.resources, this.caTrustDomain)];
  }

  async apply(yaml: string, file: string, dryRun: boolean): Promise<ApplyResponse> {
    const stored = await this.current();
    const docs = rawDocs(yaml);
    const replace = new Map(docs.map((d) => [d.key, d.json]));
    const issues = this.validateUnion(stored, replace, file, yaml);
    if (issues.length) return { results: [], issues, revision: this.state.revision };
    const results: string[] = [];
    const ops: TxnOp[] = [];
    const compares: TxnCompare[] = [];
    for (const d of docs) {
      const before = stored.get(d.key);
      compares.push({ key: d.key, modRevision: before?.modRevision ?? 0 });
      if (before && sameJson(before.value, d.json)) {
        results.push(`unchanged ${d.id}`);
        continue;
      }
      ops.push({ type: 'put', key: d.key, value: d.json });
      results.push(`${before ? 'configured' : 'created'} ${d.id}${dryRun ? ' (dry run)' : ''}`);
    }
    if (dryRun || ops.length === 0) return { results, issues: [], revision: this.state.revision };
    const r = await this.store.txn(compares, ops);
    if (!r.succeeded) return { results: [], issues: ['resources changed while applying (a concurrent write); nothing was written, try again'], revision: this.state.revision };
    return { results, issues: [], revision: r.revision };
  }

  async delete(target: { kind: string; name: string; namespace: string } | { yaml: string; file: string }): Promise<ApplyResponse> {
    const stored = await this.current();
    let keys: { key: string; id: string }[];
    if ('yaml' in target) {
      keys = rawDocs(target.yaml).map((d) => ({ key: d.key, id: d.id }));
    } else {
      const kind = canonicalKind(target.kind);
      if (!kind) return { results: [], issues: [`unknown kind "${target.kind}" (one of ${KINDS.join(', ')})`], revision: this.state.revision };
      keys = [{ key: resourceKey(kind, target.namespace || 'default', target.name), id: `${kind}/${target.name}` }];
    }
    const present = keys.filter((k) => stored.has(k.key));
    const missing = keys.filter((k) => !stored.has(k.key)).map((k) => `not found ${k.id}`);
    if (present.length === 0) return { results: missing, issues: [], revision: this.state.revision };
    const issues = this.validateUnion(stored, new Map(present.map((k) => [k.key, undefined])), '', '');
    if (issues.length) return { results: [], issues: issues.map((i) => `deleting would leave: ${i}`), revision: this.state.revision };
    const r = await this.store.txn(
      present.map((k) => ({ key: k.key, modRevision: stored.get(k.key)?.modRevision ?? 0 })),
      present.map((k) => ({ type: 'delete', key: k.key })),
    );
    if (!r.succeeded) return { results: [], issues: ['resources changed while deleting; nothing was deleted, try again'], revision: this.state.revision };
    return { results: [...present.map((k) => `deleted ${k.id}`), ...missing], issues: [], revision: r.revision };
  }

  async get(kind: string, name: string, namespace: string): Promise<{ resources: unknown[]; revision: number; error?: string }> {
    const k = kind ? canonicalKind(kind) : undefined;
    if (kind && !k) return { resources: [], revision: this.state.revision, error: `unknown kind "${kind}" (one of ${KINDS.join(', ')})` };
    const range = await this.store.get(k ? `${RESOURCES}${k}/` : RESOURCES);
    const out = range.kvs
      .filter((kv) => {
        const [, , , , ns, n] = kv.key.split('/');
        return (!namespace || ns === namespace) && (!name || n === name);
      })
      .map((kv) => JSON.parse(kv.value) as unknown);
    return { resources: out, revision: range.revision };
  }

  async diff(yaml: string, file: string): Promise<DiffResponse> {
    const stored = await this.current();
    const docs = rawDocs(yaml);
    const issues = this.validateUnion(stored, new Map(docs.map((d) => [d.key, d.json])), file, yaml);
    if (issues.length) return { changes: [], issues };
    const changes: string[] = [];
    for (const d of docs) {
      const before = stored.get(d.key);
      if (before && sameJson(before.value, d.json)) continue;
      changes.push(lineDiff(d.id, before ? stringify(JSON.parse(before.value)) : '', stringify(JSON.parse(d.json))));
    }
    return { changes, issues: [] };
  }
}

function sameJson(a: string, b: string): boolean {
  return a === b || JSON.stringify(JSON.parse(a)) === JSON.stringify(JSON.parse(b));
}

/** A small line diff (LCS), enough to show what `mesh apply` would change. */
export function lineDiff(id: string, before: string, after: string): string {
  const a = before ? before.trimEnd().split('\n') : [];
  const b = after.trimEnd().split('\n');
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) for (let j = b.length - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [`${before ? '~' : '+'} ${id}`];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) { out.push(`    ${a[i]}`); i++; j++; }
    else if (j < b.length && (i >= a.length || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(`  + ${b[j++]}`);
    else out.push(`  - ${a[i++]}`);
  }
  return out.join('\n');
}
