import { describe, expect, it } from 'vitest';
import { loadResources } from '../api/load.js';
import { compileSnapshot } from '../control-plane/compiler.js';
import { authorize, authorizeConnection, compileAccess, foldPath } from './authz.js';
import type { Peer } from './exchange.js';
import { normalizePath } from './path.js';
import { denyBypassCandidates } from '../test/harness/bypass.js';

const base = `
apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
---
apiVersion: mesh/v1
kind: Service
metadata: { name: users }
---
apiVersion: mesh/v1
kind: Service
metadata: { name: gateway }
`;

function table(policies: string) {
  const { resources, issues } = loadResources(base + policies, 'authz.yaml');
  expect(issues).toEqual([]);
  return compileAccess(compileSnapshot(resources), 'billing', 'default');
}

const peer = (service: string, namespace = 'default'): Peer => ({ service, namespace, uri: `spiffe://mesh.local/ns/${namespace}/sa/${service}` });

const ALLOW = `---
apiVersion: mesh/v1
kind: AccessPolicy
metadata: { name: billing-callers }
spec:
  service: billing
  action: allow
  rules:
    - from: [users, gateway]
      to: [ { methods: [GET, POST], paths: ["/invoices", "/invoices/*"] } ]
    - from: ["*"]
      to: [ { methods: [GET], paths: ["/health"] } ]
`;

const DENY = `---
apiVersion: mesh/v1
kind: AccessPolicy
metadata: { name: no-admin }
spec:
  service: billing
  action: deny
  rules:
    - from: ["*"]
      to: [ { paths: ["/admin", "/admin/*"] } ]
`;

describe('authorize', () => {
  it('no policy: everyone, even unauthenticated callers', () => {
    expect(authorize(table(''), undefined, 'DELETE', '/x')).toEqual({ allowed: true });
  });

  it.each([
    ['users GET /invoices', peer('users'), 'GET', '/invoices', true],
    ['gateway POST /invoices/7', peer('gateway'), 'POST', '/invoices/7', true],
    ['users DELETE /invoices/7 (method not listed)', peer('users'), 'DELETE', '/invoices/7', false],
    ['users GET /invoicesX (not under the wildcard)', peer('users'), 'GET', '/invoicesX', false],
    ['users GET /INVOICES (allow is exact-case)', peer('users'), 'GET', '/INVOICES', false],
    ['billing itself is not named', peer('billing'), 'GET', '/invoices', false],
    ['users from another namespace', peer('users', 'other'), 'GET', '/invoices', false],
    ['any mesh identity GET /health', peer('billing'), 'GET', '/health', true],
    ['unauthenticated GET /health ("*" means any mesh identity)', undefined, 'GET', '/health', false],
  ])('allow policy (default-deny): %s', (_n, who, method, path, allowed) => {
    const d = authorize(table(ALLOW), who, method, path);
    expect(d.allowed).toBe(allowed);
    if (!d.allowed) expect(d.policy).toBe('billing-callers');
  });

  it.each([
    ['/admin', false], ['/admin/users', false], ['/ADMIN', false], ['/Admin/x', false], ['/admin;jsessionid=1', false],
    ['/admin;x/y', false], ['/administrator', true], ['/invoices', true], ['/', true],
  ])('deny policy first, folded: %s → allowed %s', (path, allowed) => {
    const d = authorize(table(DENY), peer('users'), 'GET', path);
    expect(d.allowed).toBe(allowed);
    if (!d.allowed) expect(d.policy).toBe('no-admin');
  });

  it('deny wins over allow', () => {
    const t = table(ALLOW + DENY.replace('"/admin", "/admin/*"', '"/invoices/secret"'));
    expect(authorize(t, peer('users'), 'GET', '/invoices/1').allowed).toBe(true);
    expect(authorize(t, peer('users'), 'GET', '/invoices/secret')).toEqual({ allowed: false, policy: 'no-admin', reason: 'denied by policy' });
  });

  it('policies for other services do not apply', () => {
    const t = table(ALLOW.replace('service: billing', 'service: users'));
    expect(authorize(t, undefined, 'GET', '/anything').allowed).toBe(true);
  });
});

describe('authorizeConnection (protocol: tcp, identity only)', () => {
  const IDENTITY = `---
apiVersion: mesh/v1
kind: AccessPolicy
metadata: { name: db-clients }
spec:
  service: billing
  action: allow
  rules:
    - from: [users]
`;
  const DENY_GATEWAY = `---
apiVersion: mesh/v1
kind: AccessPolicy
metadata: { name: no-gateway }
spec:
  service: billing
  action: deny
  rules:
    - from: [gateway]
`;

  it('no policy: every caller', () => {
    expect(authorizeConnection(table(''), peer('gateway')).allowed).toBe(true);
  });

  it.each([
    ['users is named', peer('users'), true],
    ['gateway is not', peer('gateway'), false],
    ['users from another namespace', peer('users', 'other'), false],
    ['an unauthenticated caller', undefined, false],
  ])('allow by identity: %s', (_n, who, allowed) => {
    expect(authorizeConnection(table(IDENTITY), who).allowed).toBe(allowed);
  });

  it('rules with `to` never match a connection: path-limited allow rules admit nobody', () => {
    const d = authorizeConnection(table(ALLOW), peer('users'));
    expect(d).toEqual({ allowed: false, policy: 'billing-callers', reason: 'no allow rule without "to" names this caller' });
  });

  it('deny by identity first; a path-limited deny rule does not refuse a connection', () => {
    expect(authorizeConnection(table(IDENTITY + DENY_GATEWAY.replace('[gateway]', '[users]')), peer('users'))).toMatchObject({ allowed: false, policy: 'no-gateway' });
    expect(authorizeConnection(table(DENY), peer('users')).allowed).toBe(true);
    expect(authorizeConnection(table(DENY_GATEWAY), peer('gateway')).allowed).toBe(false);
    expect(authorizeConnection(table(DENY_GATEWAY), peer('users')).allowed).toBe(true);
  });
});

describe('foldPath', () => {
  it.each([['/A/B', '/a/b'], ['/a;x=1/b;y', '/a/b'], ['/plain', '/plain']])('%s → %s', (a, b) => expect(foldPath(a)).toBe(b));
});

describe('encodings of a denied path', () => {
  const t = table(DENY);
  const candidates = denyBypassCandidates();

  it('has at least 80 candidates', () => {
    expect(candidates.length).toBeGreaterThanOrEqual(80);
  });

  it.each(candidates)('%s is rejected by normalization or denied', (raw) => {
    const n = normalizePath(raw);
    if (!n.ok) return;
    // Whatever normalization made of it is what authorization sees and what would be forwarded.
    expect(authorize(t, peer('users'), 'GET', n.path).allowed, `normalized to ${n.path}`).toBe(false);
  });
});
