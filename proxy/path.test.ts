import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { normalizePath } from './path.js';

describe('normalizePath', () => {
  it.each([
    ['/', '/', ''],
    ['/invoices', '/invoices', ''],
    ['/a/b?x=1&y=%2F', '/a/b', '?x=1&y=%2F'],
    ['/a/../b', '/b', ''],
    ['/a/./b/.', '/a/b/', ''],
    ['/../../etc/passwd', '/etc/passwd', ''],
    ['/%2e%2e/x', '/x', ''],
    ['/%2E%2e/%2e/x', '/x', ''],
    ['//invoices//1', '/invoices/1', ''],
    ['/a/%7euser', '/a/~user', ''],
    ['/caf%c3%a9', '/caf%C3%A9', ''],
    ['/a;b/c', '/a;b/c', ''],
    ['/a/..b%3Bc/d', '/a/..b%3Bc/d', ''],
    ['/invoices/..', '/', ''],
  ])('%s → %s', (input, path, query) => {
    expect(normalizePath(input)).toEqual({ ok: true, path, query });
  });

  it.each([
    ['/a%2Fb', 'encoded "%2F" in path'],
    ['/a%2fb', 'encoded "%2F" in path'],
    ['/a%5Cb', 'encoded "%5C" in path'],
    ['/a%00b', 'encoded "%00" in path'],
    ['/a%23b', 'encoded "%23" in path'],
    ['/a\\b', 'backslash in path'],
    ['/a#frag', 'fragment in request target'],
    ['/a%zz', 'invalid percent-encoding in path'],
    ['/a%4', 'invalid percent-encoding in path'],
    ['a/b', 'path must start with "/"'],
    ['', 'path must start with "/"'],
    ['/a\u0001', 'control character in path'],
    ['/%C0%AE%C0%AE/x', 'invalid UTF-8 in path'],
    ['/a%c0%afb', 'invalid UTF-8 in path'],
    ['/%e0%80%ae', 'invalid UTF-8 in path'],
    ['/caf%c3', 'invalid UTF-8 in path'],
    ['/public/%2e%2e;/admin', 'path parameters on an empty or dot segment'],
    ['/public/..%3b/admin', 'path parameters on an empty or dot segment'],
    ['/public/%2E%2E%3B/admin', 'path parameters on an empty or dot segment'],
    ['/%3Bx/admin', 'path parameters on an empty or dot segment'],
  ])('rejects %j', (input, reason) => {
    expect(normalizePath(input)).toEqual({ ok: false, reason });
  });

  it('is idempotent and never leaves dot segments or empty segments', () => {
    const seg = fc.constantFrom('a', 'b', '.', '..', '', '%2e', '%2E%2e', '%41', 'x%20y');
    fc.assert(fc.property(fc.array(seg, { maxLength: 8 }), (parts) => {
      const once = normalizePath('/' + parts.join('/'));
      if (!once.ok) return;
      const twice = normalizePath(once.path);
      expect(twice).toEqual({ ok: true, path: once.path, query: '' });
      const segments = once.path.split('/').slice(1, -1);
      expect(segments).not.toContain('..');
      expect(segments).not.toContain('.');
      expect(segments).not.toContain('');
    }));
  });
});
