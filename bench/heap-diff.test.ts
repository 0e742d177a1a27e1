import { describe, expect, it } from 'vitest';
import { diffHeaps, renderHeapDiff, summarize, type HeapSnapshotJson } from './heap-diff.js';

/** A snapshot in V8's layout: each node is [type, name, id, self_size, edge_count]. */
function snapshot(nodes: [string, string, number][]): HeapSnapshotJson {
  const types = ['hidden', 'array', 'string', 'object', 'code', 'closure'];
  const strings: string[] = [];
  const str = (s: string): number => (strings.includes(s) ? strings.indexOf(s) : strings.push(s) - 1);
  return {
    snapshot: { meta: { node_fields: ['type', 'name', 'id', 'self_size', 'edge_count'], node_types: [types, 'string', 'number', 'number', 'number'] } },
    nodes: nodes.flatMap(([type, name, size], id) => [types.indexOf(type), str(name), id, size, 0]),
    strings,
  };
}

describe('heap-diff', () => {
  const before = summarize(snapshot([['object', 'Client', 100], ['object', 'Client', 100], ['code', 'f', 1000], ['string', 'abc', 40]]));
  const after = summarize(snapshot([['object', 'Client', 100], ['object', 'Client', 100], ['object', 'Client', 100], ['code', 'f', 1500], ['code', 'g', 300], ['string', 'xyz', 40]]));

  it('sums live bytes by kind: objects by constructor, code and strings by type', () => {
    expect(before.bytes).toBe(1240);
    expect(before.objects).toBe(4);
    expect(before.byKind.get('object Client')).toEqual({ count: 2, bytes: 200 });
    expect(after.byKind.get('code')).toEqual({ count: 2, bytes: 1800 });
    expect(after.byKind.get('string')).toEqual({ count: 1, bytes: 40 });
  });

  it('lists what changed, the largest growth first, and leaves out what did not', () => {
    expect(diffHeaps(before, after)).toEqual([
      { kind: 'code', countBefore: 1, countAfter: 2, bytesBefore: 1000, bytesAfter: 1800 },
      { kind: 'object Client', countBefore: 2, countAfter: 3, bytesBefore: 200, bytesAfter: 300 },
    ]);
  });

  it('separates compiled code from everything else in the headline', () => {
    const text = renderHeapDiff('client', before, after);
    expect(text).toContain('compiled code +0.8 KB');
    expect(text).toContain('everything else +0.1 KB');
    expect(text).toContain('| object Client | 2 → 3 | 0.2 → 0.3 |');
  });

  it('refuses a file that is not a heap snapshot', () => {
    expect(() => summarize({ snapshot: { meta: { node_fields: ['id'], node_types: [[]] } }, nodes: [], strings: [] })).toThrow(/not a V8 heap snapshot/);
  });
});
