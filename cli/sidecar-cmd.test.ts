import { describe, expect, it } from 'vitest';
import { UsageError } from './args.js';
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
