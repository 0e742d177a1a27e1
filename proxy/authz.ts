// Inbound AccessPolicy: compiled once per snapshot for this sidecar's service; authorize() is the pure decision; authzLayer acts on it.
import { MeshError } from '../api/errors.js';
import type { AccessPolicyConfig, Snapshot } from '../api/snapshot.js';
import type { Exchange, Peer } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';
import { respondError } from './respond.js';

type PathTest = (path: string) => boolean;

interface CompiledTarget {
  /** Undefined: any method. */
  readonly methods: ReadonlySet<string> | undefined;
  /** Undefined: any path. */
  readonly paths: readonly PathTest[] | undefined;
}

interface CompiledAccessRule {
  readonly anyPeer: boolean;
  /** `namespace/service` of the callers this rule names. */
  readonly peers: ReadonlySet<string>;
  /** Empty: every method and path. */
  readonly to: readonly CompiledTarget[];
}

interface CompiledAccessPolicy {
  readonly name: string;
  readonly rules: readonly CompiledAccessRule[];
}

export interface AccessTable {
  readonly deny: readonly CompiledAccessPolicy[];
  readonly allow: readonly CompiledAccessPolicy[];
}

export type Decision = { readonly allowed: true } | { readonly allowed: false; readonly policy: string; readonly reason: string };

const ALLOWED: Decision = Object.freeze({ allowed: true });

/**
 * Deny rules are matched on a folded path (lower case, `;params` removed from every segment), allow rules on the
 * exact normalized path. Both err on the side of refusing: a backend that ignores case or path parameters cannot be
 * reached through a spelling the deny rule missed, and an allow rule never admits a spelling it did not name.
 */
export function foldPath(path: string): string {
  const lower = path.toLowerCase();
  return lower.includes(';') ? lower.split('/').map((seg) => seg.split(';')[0]).join('/') : lower;
}

function pathTest(pattern: string, fold: boolean): PathTest {
  const p = fold ? foldPath(pattern) : pattern;
  if (p === '*') return () => true;
  if (p.endsWith('*')) {
    const prefix = p.slice(0, -1);
    return fold ? (path) => foldPath(path).startsWith(prefix) : (path) => path.startsWith(prefix);
  }
  return fold ? (path) => foldPath(path) === p : (path) => path === p;
}

function compilePolicy(pc: AccessPolicyConfig): CompiledAccessPolicy {
  const fold = pc.spec.action === 'deny';
  return Object.freeze({
    name: pc.name,
    rules: pc.spec.rules.map((r) => Object.freeze({
      anyPeer: r.from.includes('*'),
      peers: new Set(r.from.filter((f) => f !== '*').map((f) => (f.includes('/') ? f : `${pc.namespace}/${f}`))),
      to: r.to.map((t) => Object.freeze({
        methods: t.methods.length ? new Set(t.methods.map((m) => m.toUpperCase())) : undefined,
        paths: t.paths.length ? t.paths.map((p) => pathTest(p, fold)) : undefined,
      })),
    })),
  });
}

/** The policies that target `service` in `namespace`, split by action. */
export function compileAccess(snapshot: Snapshot, service: string, namespace: string): AccessTable {
  const mine = snapshot.accessPolicies.filter((p) => p.spec.service === service && p.namespace === namespace);
  return Object.freeze({
    deny: mine.filter((p) => p.spec.action === 'deny').map(compilePolicy),
    allow: mine.filter((p) => p.spec.action === 'allow').map(compilePolicy),
  });
}

function ruleMatches(r: CompiledAccessRule, peer: Peer | undefined, method: string, path: string): boolean {
  // Plaintext callers (permissive mode) have no identity, so no `from` entry, not even "*", names them.
  if (!peer) return false;
  if (!r.anyPeer && !r.peers.has(`${peer.namespace}/${peer.service}`)) return false;
  if (r.to.length === 0) return true;
  return r.to.some((t) => (!t.methods || t.methods.has(method)) && (!t.paths || t.paths.some((test) => test(path))));
}

/** DESIGN.md §3: deny policies first; any allow policy makes the service default-deny for callers no rule names. */
export function authorize(table: AccessTable, peer: Peer | undefined, method: string, path: string): Decision {
  for (const p of table.deny) {
    if (p.rules.some((r) => ruleMatches(r, peer, method, path))) return { allowed: false, policy: p.name, reason: 'denied by policy' };
  }
  if (table.allow.length === 0) return ALLOWED;
  for (const p of table.allow) {
    if (p.rules.some((r) => ruleMatches(r, peer, method, path))) return ALLOWED;
  }
  return { allowed: false, policy: table.allow[0].name, reason: 'no allow rule matches' };
}

/**
 * The decision for a `protocol: tcp` connection, which has an identity but no method or path: only rules without
 * `to` can match it. Deny first; any allow policy still makes the service default-deny, so an allow policy whose
 * rules all name paths admits no TCP caller at all, while a deny rule limited to paths does not refuse one.
 */
export function authorizeConnection(table: AccessTable, peer: Peer | undefined): Decision {
  const matches = (r: CompiledAccessRule) => r.to.length === 0 && ruleMatches(r, peer, '', '');
  for (const p of table.deny) {
    if (p.rules.some(matches)) return { allowed: false, policy: p.name, reason: 'denied by policy' };
  }
  if (table.allow.length === 0) return ALLOWED;
  for (const p of table.allow) {
    if (p.rules.some(matches)) return ALLOWED;
  }
  return { allowed: false, policy: table.allow[0].name, reason: 'no allow rule without "to" names this caller' };
}

export function authzLayer(table: () => AccessTable, onDenied: (policy: string) => void): Layer {
  return (next: Handler): Handler => (ex: Exchange) => {
    const t = table();
    if (t.deny.length === 0 && t.allow.length === 0) return next(ex);
    const d = authorize(t, ex.peer, ex.method, ex.path);
    if (d.allowed) return next(ex);
    onDenied(d.policy);
    const who = ex.peer ? `"${ex.peer.namespace}/${ex.peer.service}"` : 'an unauthenticated caller';
    respondError(ex, new MeshError('access-denied', `${who} may not ${ex.method} ${ex.path}: ${d.reason} (AccessPolicy/${d.policy})`));
    return Promise.resolve();
  };
}
