import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseSnapshot, reconnectDelay } from './config-client.js';

describe('reconnectDelay', () => {
  it.each([[0, 1000], [1, 1600], [2, 2560], [5, 10485.76], [10, 30000], [50, 30000]])('attempt %i centres on %f ms', (n, centre) => {
    expect(reconnectDelay(n, () => 0.5)).toBeCloseTo(centre, 5);
  });
  it('stays within ±20 % and under 30 s', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 60 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (n, r) => {
      const base = Math.min(30_000, 1000 * 1.6 ** n);
      const d = reconnectDelay(n, () => r);
      expect(d).toBeGreaterThanOrEqual(base * 0.8 - 1e-6);
      expect(d).toBeLessThanOrEqual(Math.min(30_000, base * 1.2) + 1e-6);
    }));
  });
});

describe('parseSnapshot', () => {
  const good = { version: 'x', meshConfig: { trustDomain: 'mesh.local' }, services: [], routes: [], accessPolicies: [] };
  it('takes the version from the message and freezes the result', () => {
    const s = parseSnapshot({ version: '7', nonce: 'n', hash: 'h', snapshotJson: JSON.stringify(good) });
    expect(s.version).toBe('7');
    expect(Object.isFrozen(s.services)).toBe(true);
  });
  it.each([
    [{ ...good, routes: undefined }, 'snapshot 7: routes is missing'],
    [{ ...good, meshConfig: undefined }, 'snapshot 7: meshConfig is missing'],
  ])('refuses a malformed snapshot (%#)', (body, message) => {
    expect(() => parseSnapshot({ version: '7', nonce: 'n', hash: 'h', snapshotJson: JSON.stringify(body) })).toThrow(message);
  });
  it('refuses JSON that does not parse', () => {
    expect(() => parseSnapshot({ version: '7', nonce: 'n', hash: 'h', snapshotJson: '{' })).toThrow();
  });
});
