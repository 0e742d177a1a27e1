import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock, seededRandom } from '../api/clock.js';
import { createLogger } from '../api/log.js';
import { createCa } from '../certs/ca.js';
import { CertificateManager, localCaSource, type CertificateSource } from './credentials.js';
import { Telemetry } from './telemetry.js';

const id = { trustDomain: 'mesh.local', namespace: 'default', service: 'billing' };
const ca = createCa({ trustDomain: 'mesh.local' });

/** Runs pending promise work (key generation happens on the thread pool) until `cond` holds. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('CertificateManager', () => {
  const managers: CertificateManager[] = [];
  afterEach(() => managers.splice(0).forEach((m) => m.stop()));

  function make(source: CertificateSource, clock: FakeClock, start: number) {
    const telemetry = new Telemetry();
    const m = new CertificateManager(source, id, { clock, wallNow: () => start + clock.now(), random: seededRandom(1), log: createLogger('error'), telemetry });
    managers.push(m);
    return { m, telemetry };
  }

  it('loads a certificate for its identity, exports its expiry, and renews at 70 % of the TTL with a new key', async () => {
    const clock = new FakeClock();
    const { m, telemetry } = make(localCaSource(ca, () => 20_000), clock, Date.now());
    await m.start();
    const first = m.credentials.get();
    expect(first?.uri).toBe('spiffe://mesh.local/ns/default/sa/billing');
    expect((await telemetry.certificateExpiry.get()).values[0].value).toBe((first?.notAfter ?? 0) / 1000);
    clock.advance(13_000);
    expect(m.rotations).toBe(0);
    clock.advance(1_500);
    await until(() => m.rotations === 1);
    const second = m.credentials.get();
    expect(second?.serial).not.toBe(first?.serial);
    expect(second?.keyPem).not.toBe(first?.keyPem);
  });

  it('keeps the old credentials while renewal fails, and retries', async () => {
    const clock = new FakeClock();
    let fail = false;
    let calls = 0;
    const real = localCaSource(ca, () => 20_000);
    const flaky: CertificateSource = { sign: (csr, who) => { calls++; return fail ? Promise.reject(new Error('ca down')) : real.sign(csr, who); } };
    const { m } = make(flaky, clock, Date.now());
    await m.start();
    const first = m.credentials.get();
    fail = true;
    clock.advance(14_500);
    await until(() => calls === 2);
    expect(m.credentials.get()).toBe(first);
    fail = false;
    clock.advance(2_000);
    await until(() => m.rotations === 1);
    expect(m.credentials.get()?.serial).not.toBe(first?.serial);
  });

  it('refuses to start when the first certificate cannot be had', async () => {
    const { m } = make({ sign: () => Promise.reject(new Error('no ca')) }, new FakeClock(), Date.now());
    await expect(m.start()).rejects.toThrow('no ca');
    expect(m.credentials.get()).toBeUndefined();
  });
});
