import { describe, expect, it } from 'vitest';
import { MeshError } from '../api/errors.js';
import { hostOf, splitTarget } from './listener.js';

describe('splitTarget', () => {
  it.each([
    ['/x?y=1', 'billing', { host: 'billing', hostHeader: 'billing', pathAndQuery: '/x?y=1' }],
    ['/x', 'Billing:8080', { host: 'billing', hostHeader: 'Billing:8080', pathAndQuery: '/x' }],
    ['http://billing/x', undefined, { host: 'billing', hostHeader: 'billing', pathAndQuery: '/x' }],
    ['http://billing:80', 'billing:80', { host: 'billing', hostHeader: 'billing:80', pathAndQuery: '/' }],
    ['http://billing?q=1', 'billing', { host: 'billing', hostHeader: 'billing', pathAndQuery: '/?q=1' }],
    ['/x', '[::1]:9000', { host: '[::1]', hostHeader: '[::1]:9000', pathAndQuery: '/x' }],
  ])('%s with Host %s', (url, host, expected) => {
    expect(splitTarget(url, host)).toEqual(expected);
  });

  it.each([
    ['/x', undefined, 'missing Host header'],
    ['http://billing/x', 'users', 'request target authority "billing" does not match Host "users"'],
    ['http://user@billing/x', undefined, 'userinfo in request target'],
    ['https://billing/x', undefined, 'unsupported request target "https://billing/x"'],
    ['*', 'billing', 'unsupported request target "*"'],
    ['/x', 'bill ing', 'invalid authority "bill ing"'],
    ['/x', 'billing:99999', 'invalid authority "billing:99999"'],
  ])('rejects %s with Host %s', (url, host, message) => {
    const r = splitTarget(url, host);
    expect(r).toBeInstanceOf(MeshError);
    expect((r as MeshError).code).toBe('bad-request');
    expect((r as MeshError).message).toBe(message);
  });
});

describe('hostOf', () => {
  it.each([
    ['billing', 'billing'], ['BILLING.default.svc:8080', 'billing.default.svc'], ['127.0.0.1:15001', '127.0.0.1'],
    ['[::1]:80', '[::1]'], ['', undefined], ['a/b', undefined], ['billing:', undefined], ['x:-1', undefined],
  ])('%s → %s', (input, expected) => {
    expect(hostOf(input)).toBe(expected);
  });
});
