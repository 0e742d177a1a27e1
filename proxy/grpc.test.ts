// gRPC pure parts: content-type recognition, grpc-timeout parsing and formatting (round trip, rounding down), statuses, message encoding, retry conditions.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeGrpcMessage, formatGrpcTimeout, grpcStatusLabel, grpcStatusOf, isGrpcContentType, parseGrpcTimeout } from './grpc.js';
import { compileRetryPolicy, retryReason, unprocessed } from './retry-policy.js';

describe('isGrpcContentType', () => {
  it.each([
    ['application/grpc', true],
    ['application/grpc+proto', true],
    ['application/grpc+json', true],
    ['Application/GRPC', true],
    ['application/grpc;charset=utf-8', true],
    ['application/grpc-web', false],
    ['application/grpc-web+proto', false],
    ['application/json', false],
    [undefined, false],
  ])('%s → %s', (ct, want) => expect(isGrpcContentType(ct)).toBe(want));
});

describe('parseGrpcTimeout', () => {
  it.each([
    ['1H', 3_600_000],
    ['2M', 120_000],
    ['3S', 3_000],
    ['250m', 250],
    ['1500u', 1.5],
    ['2000000n', 2],
    ['99999999m', 99_999_999],
  ])('%s → %d ms', (v, ms) => expect(parseGrpcTimeout(v)).toBeCloseTo(ms, 9));

  it.each([['', undefined], ['10', undefined], ['m', undefined], ['123456789m', undefined], ['-1S', undefined], ['1.5S', undefined], ['1s', undefined], [undefined, undefined]])(
    'malformed %j is ignored',
    (v, want) => expect(parseGrpcTimeout(v)).toBe(want),
  );

  it('takes the first of repeated values', () => expect(parseGrpcTimeout(['5S', '1S'])).toBe(5_000));
});

describe('formatGrpcTimeout', () => {
  it.each([
    [0, '1n'],
    [-5, '1n'],
    [0.5, '500000n'],
    [99, '99000000n'],
    [250, '250000u'],
    [1_000_000, '1000000m'],
    [100_000_000, '100000S'],
    [3_600_000 * 30_000, '1800000M'],
  ])('%d ms → %s', (ms, want) => expect(formatGrpcTimeout(ms)).toBe(want));

  it('round trip never gives the next hop more time, and loses under 0.1 % of it (values ≥ 1 ms)', () => {
    fc.assert(fc.property(fc.double({ min: 1, max: 1e9, noNaN: true }), (ms) => {
      const back = parseGrpcTimeout(formatGrpcTimeout(ms))!;
      return back <= ms && back >= ms * 0.999;
    }));
  });

  it('always fits the wire format: 1 to 8 digits and a unit', () => {
    fc.assert(fc.property(fc.double({ min: -1, max: 1e12, noNaN: true }), (ms) => /^\d{1,8}[HMSmun]$/.test(formatGrpcTimeout(ms))));
  });
});

describe('statuses and messages', () => {
  it('grpcStatusOf reads numbers, ignores junk', () => {
    expect(grpcStatusOf({ 'grpc-status': '14' })).toBe(14);
    expect(grpcStatusOf({ 'grpc-status': '0' })).toBe(0);
    expect(grpcStatusOf({ 'grpc-status': 'x' })).toBeUndefined();
    expect(grpcStatusOf({})).toBeUndefined();
  });

  it('the metric label is bounded to codes.proto', () => {
    expect(grpcStatusLabel(4)).toBe('4');
    expect(grpcStatusLabel(16)).toBe('16');
    expect(grpcStatusLabel(1234)).toBe('other');
  });

  it('grpc-message percent-encodes %, controls and non-ASCII', () => {
    expect(encodeGrpcMessage('no route for host "x"')).toBe('no route for host "x"');
    expect(encodeGrpcMessage('100% done\n')).toBe('100%25 done%0A');
    expect(encodeGrpcMessage('é')).toBe('%C3%A9');
  });
});

describe('gRPC retry conditions', () => {
  const policy = compileRetryPolicy({ attempts: 3, perTryTimeoutMs: 0, retryOn: ['unavailable', 'resource-exhausted', 'connect-failure'], backoff: { baseMs: 0, maxMs: 0 } }, false);

  it.each([
    [14, 'unavailable'],
    [8, 'resource-exhausted'],
    [4, undefined],
    [1, undefined],
    [13, undefined],
    [0, undefined],
  ])('Trailers-Only grpc-status %d → %s', (grpcStatus, want) => {
    expect(retryReason(policy, { kind: 'response', status: 200, grpcStatus })).toBe(want);
  });

  it('a gRPC status only counts when it came Trailers-Only (grpcStatus set)', () => {
    expect(retryReason(policy, { kind: 'response', status: 200 })).toBeUndefined();
  });

  it('cancelled and deadline-exceeded when listed', () => {
    const all = compileRetryPolicy({ attempts: 2, perTryTimeoutMs: 0, retryOn: ['cancelled', 'deadline-exceeded'], backoff: { baseMs: 0, maxMs: 0 } }, false);
    expect(retryReason(all, { kind: 'response', status: 200, grpcStatus: 1 })).toBe('cancelled');
    expect(retryReason(all, { kind: 'response', status: 200, grpcStatus: 4 })).toBe('deadline-exceeded');
  });

  it('only not-processed reasons may retry a non-idempotent gRPC call', () => {
    for (const r of ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'deadline-exceeded', 'resource-exhausted'] as const) expect(unprocessed(r)).toBe(true);
    for (const r of ['reset', 'gateway-error', '5xx', 'per-try-timeout', '503'] as const) expect(unprocessed(r)).toBe(false);
  });
});
