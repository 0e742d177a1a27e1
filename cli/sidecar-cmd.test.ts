import { describe, expect, it } from 'vitest';
import { parseSizeFlag, UsageError } from './args.js';
import { parseTcpFlag } from './sidecar-cmd.js';

describe('parseTcpFlag (--tcp)', () => {
  it('parses one listener per service', () => {
    expect(parseTcpFlag('db=127.0.0.1:5432, cache=[::1]:6379')).toEqual([
      { service: 'db', listen: { host: '127.0.0.1', port: 5432 } },
      { service: 'cache', listen: { host: '::1', port: 6379 } },
    ]);
    expect(parseTcpFlag(undefined)).toEqual([]);
  });

  it.each([
    ['db=0.0.0.0:5432', 'must listen on a loopback address'],
    ['db', 'expected SERVICE=HOST:PORT'],
    ['=127.0.0.1:1', 'expected SERVICE=HOST:PORT'],
    ['db=127.0.0.1', 'expected HOST:PORT'],
    ['db=127.0.0.1:1,db=127.0.0.1:2', 'listed twice'],
  ])('refuses %s', (value, message) => {
    expect(() => parseTcpFlag(value)).toThrow(UsageError);
    expect(() => parseTcpFlag(value)).toThrow(message);
  });
});

describe('parseSizeFlag (--max-request-body)', () => {
  it('reads bytes and binary units', () => {
    expect(parseSizeFlag('max-request-body', '1048576')).toBe(1_048_576);
    expect(parseSizeFlag('max-request-body', '512Ki')).toBe(512 * 1024);
    expect(parseSizeFlag('max-request-body', '16Mi')).toBe(16 * 1024 * 1024);
    expect(parseSizeFlag('max-request-body', '1Gi')).toBe(1024 ** 3);
  });

  it.each(['', '0', '-1', '1.5Mi', '16MB', '16 Mi', 'lots'])('refuses %j with a usage error that names the flag', (v) => {
    expect(() => parseSizeFlag('max-request-body', v)).toThrow(UsageError);
    expect(() => parseSizeFlag('max-request-body', v)).toThrow(/--max-request-body: expected a size like/);
  });
});
