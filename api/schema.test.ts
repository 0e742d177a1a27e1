// Unit tests for the validator DSL: exact messages per combinator, every issue reported, duration parsing round trip.
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import type { Validator } from './schema.js';
import {
  MAX_TIMER_MS,
  array,
  boolean,
  createCtx,
  duration,
  enumOf,
  formatDuration,
  integer,
  map,
  number,
  object,
  parseDuration,
  record,
  string,
} from './schema.js';

function run<T>(v: Validator<T>, value: unknown): { out: T | undefined; issues: string[] } {
  const ctx = createCtx();
  const out = v(value, 'x', ctx);
  return { out, issues: ctx.issues.map((i) => `${i.path}: ${i.message}`) };
}

describe('scalar validators', () => {
  const cases: [string, Validator<unknown>, unknown, unknown, string[]][] = [
    ['string ok', string(), 'a', 'a', []],
    ['string wrong type', string(), 5, undefined, ['x: must be a string']],
    ['string too long', string({ max: 3 }), 'abcd', undefined, ['x: must be at most 3 characters']],
    ['string check', string({ check: (s) => s.startsWith('/'), message: 'must start with "/"' }), 'a', undefined, ['x: must start with "/"']],
    ['integer ok', integer(0, 100), 100, 100, []],
    ['integer above', integer(0, 100), 150, undefined, ['x: must be an integer 0..100']],
    ['integer fraction', integer(0, 100), 1.5, undefined, ['x: must be an integer 0..100']],
    ['integer as string', integer(0, 100), '5', undefined, ['x: must be an integer 0..100']],
    ['number fraction ok', number(0, 100), 12.5, 12.5, []],
    ['number negative', number(0, 100), -1, undefined, ['x: must be a number 0..100']],
    ['number NaN', number(0, 1), NaN, undefined, ['x: must be a number 0..1']],
    ['number infinity', number(0, 1e9), Infinity, undefined, ['x: must be a number 0..1000000000']],
    ['boolean ok', boolean(), false, false, []],
    ['boolean string', boolean(), 'true', undefined, ['x: must be true or false']],
    ['enum ok', enumOf(['http', 'grpc', 'tcp']), 'grpc', 'grpc', []],
    ['enum bad', enumOf(['http', 'grpc', 'tcp']), 'udp', undefined, ['x: must be one of: http, grpc, tcp']],
  ];
  it.each(cases)('%s', (_name, v, value, want, issues) => {
    const r = run(v, value);
    expect(r.out).toEqual(want);
    expect(r.issues).toEqual(issues);
  });
});

describe('duration', () => {
  const ok: [string, number][] = [
    ['250ms', 250],
    ['2s', 2000],
    ['1m', 60_000],
    ['24h', 86_400_000],
    ['1.5s', 1500],
    ['0s', 0],
    ['0ms', 0],
  ];
  it.each(ok)('parses %s', (text, ms) => expect(run(duration(), text)).toEqual({ out: ms, issues: [] }));

  const bad: unknown[] = ['2', 2, '-1s', '1 s', '1d', 's', '', '1.s', '.5s', '1e3ms', '2S', 'abc', null, true];
  it.each(bad)('rejects %j', (value) => {
    expect(run(duration(), value).issues).toEqual(['x: must be a duration like 250ms, 2s, 1m']);
  });

  it('rejects what a timer cannot wait for, and below a minimum', () => {
    expect(run(duration(), '600h').issues).toEqual(['x: must be at most 596h']);
    expect(run(duration({ min: 100 }), '10ms').issues).toEqual(['x: must be at least 100ms']);
  });

  it('round-trips every whole number of milliseconds through formatDuration', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: MAX_TIMER_MS }), (ms) => {
        expect(parseDuration(formatDuration(ms))).toBe(ms);
        expect(run(duration(), formatDuration(ms)).out).toBe(ms);
      }),
    );
  });

  it('never accepts a bare number', () => {
    fc.assert(
      fc.property(fc.double(), (n) => {
        expect(parseDuration(String(n))).toBeUndefined();
      }),
    );
  });
});

describe('object', () => {
  const v = object({ name: string(), weight: integer(0, 100), tags: array(string()) }, { required: ['name'] });

  const cases: [string, unknown, unknown, string[]][] = [
    ['valid', { name: 'a', weight: 5 }, { name: 'a', weight: 5 }, []],
    ['not a map', [1], undefined, ['x: must be a map']],
    ['unknown field', { name: 'a', wieght: 5 }, undefined, ['x.wieght: unknown field']],
    ['prototype names are unknown fields', { name: 'a', constructor: 1 }, undefined, ['x.constructor: unknown field']],
    ['missing required', { weight: 5 }, undefined, ['x.name: is required']],
    ['null counts as absent', { name: 'a', weight: null }, { name: 'a' }, []],
    [
      'every problem at once',
      { weight: 101, tags: ['ok', 3, 4], extra: true },
      undefined,
      ['x.weight: must be an integer 0..100', 'x.tags[1]: must be a string', 'x.tags[2]: must be a string', 'x.extra: unknown field', 'x.name: is required'],
    ],
  ];
  it.each(cases)('%s', (_name, value, want, issues) => {
    const r = run(v, value);
    expect(r.out).toEqual(want);
    expect(r.issues).toEqual(issues);
  });
});

describe('array and record', () => {
  it('checks the minimum length with an exact message', () => {
    expect(run(array(string(), { min: 1 }), []).issues).toEqual(['x: must have at least 1 entry']);
    expect(run(array(string(), { min: 2 }), ['a']).issues).toEqual(['x: must have at least 2 entries']);
    expect(run(array(string()), 'a').issues).toEqual(['x: must be a list']);
  });

  it('validates keys and values of a record, keeping a __proto__ key as data', () => {
    const upper = map(string(), (s) => s.toUpperCase());
    const r = run(record(integer(0, 9), upper), JSON.parse('{"a": 1, "__proto__": 2}'));
    expect(r.issues).toEqual([]);
    expect(Object.getPrototypeOf(r.out)).toBe(Object.prototype);
    expect(Object.entries(r.out ?? {})).toEqual([
      ['A', 1],
      ['__PROTO__', 2],
    ]);
    expect(run(record(string()), { a: 1, b: 'x', c: 2 }).issues).toEqual(['x.a: must be a string', 'x.c: must be a string']);
  });
});
