// End-to-end: workload certificate rotation under load on an mTLS pair (certificateTTL 12s): 0 failed requests, 0 failed handshakes, new connections see the new certificate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, request, runSteady } from './harness/client.js';
import { certsOf, handshakeErrorSeries, issueClientCert, meshService, sameSerial, tlsProbe, type CertsInfo, type ClientCert } from './harness/mtls.js';
import { meshConfig, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';

const TTL_S = 12;
const LOAD_S = 45;
const RATE = 50;

let app: Upstream;
let billing: Sidecar;
let gateway: Sidecar;
let probeCert: ClientCert;

beforeAll(async () => {
  app = await startUpstream({ name: 'billing-app' });
  const mesh = meshConfig({ certificateTTL: `${TTL_S}s` });
  billing = await startSidecar({ service: 'billing', app: app.address, resources: toYaml([mesh, ...meshService({ name: 'billing' })]) });
  gateway = await startSidecar({
    service: 'gateway',
    resources: toYaml([mesh, ...meshService({ name: 'gateway' }), ...meshService({ name: 'billing', endpoints: [billing.inbound] })]),
  });
  probeCert = await issueClientCert('gateway');
}, 45_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

interface Observed {
  at: number;
  certs: CertsInfo;
}

describe('certificate rotation under load', () => {
  it(`rotates ≥ 3 times per sidecar in ${LOAD_S}s of ${RATE} req/s with 0 failures; new handshakes present the new serial`, async () => {
    const first = await Promise.all([certsOf(billing), certsOf(gateway)]);
    const lifetimeMs = Date.parse(first[0].notAfter) - Date.parse(first[0].notBefore);
    // The TTL reached the issuer (a backdated notBefore for clock skew may lengthen the stated window, never shorten it).
    expect(Date.parse(first[0].notAfter) - Date.now()).toBeLessThanOrEqual(TTL_S * 1000);
    expect(lifetimeMs).toBeGreaterThanOrEqual(TTL_S * 1000);

    const seen: Record<'billing' | 'gateway', Observed[]> = { billing: [{ at: Date.now(), certs: first[0] }], gateway: [{ at: Date.now(), certs: first[1] }] };
    const serialProblems: string[] = [];
    let probes = 0;
    let probedSerial: string | undefined;
    let loadDone = false;

    // Polls both /certs; after each rotation of the server, a fresh direct handshake must present the new serial.
    const poller = (async () => {
      while (!loadDone) {
        const [b, g] = await Promise.all([certsOf(billing), certsOf(gateway)]);
        for (const [name, c] of [['billing', b], ['gateway', g]] as const) {
          const last = seen[name][seen[name].length - 1].certs;
          if (c.serial !== last.serial) seen[name].push({ at: Date.now(), certs: c });
        }
        if (b.serial !== first[0].serial && b.serial !== probedSerial) {
          probedSerial = b.serial;
          probes++;
          const p = await tlsProbe(billing.inbound, { cert: probeCert, host: 'billing', path: '/probe' });
          const after = await certsOf(billing);
          // A rotation between the /certs read and the handshake is allowed to show the next serial.
          const expected = after.serial === b.serial ? [b.serial] : [b.serial, after.serial];
          if (!p.handshake || p.response?.status !== 200) serialProblems.push(`probe ${probes}: handshake=${p.handshake} status=${p.response?.status} error=${p.error}`);
          else if (!expected.some((x) => sameSerial(x, p.serverSerial))) serialProblems.push(`probe ${probes}: server presented ${p.serverSerial}, /certs says ${expected.join(' then ')}`);
        }
        // Pacing the poll, not waiting for a condition.
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    const pool = createPool(gateway.outbound, 16);
    let run: Awaited<ReturnType<typeof runSteady<number>>>;
    try {
      run = await runSteady({
        rate: RATE,
        total: RATE * LOAD_S,
        concurrency: 32,
        maxDurationMs: (LOAD_S + 10) * 1000,
        send: async (i) => (await request(gateway.outbound, { host: 'billing', path: `/r/${i}`, dispatcher: pool, timeoutMs: 10_000 })).status,
      });
    } finally {
      loadDone = true;
      await poller;
      await pool.close();
    }

    expect(run.notStarted).toBe(0);
    const failed = run.outcomes.filter((o) => !o.ok || o.value !== 200);
    expect(failed.length, `failed requests: ${JSON.stringify(failed.slice(0, 5).map((o) => (o.ok ? o.value : o.error.message)))}`).toBe(0);
    expect(app.requests.filter((r) => r.url.startsWith('/r/')).length).toBe(RATE * LOAD_S);

    const end = await Promise.all([certsOf(billing), certsOf(gateway)]);
    expect(end[0].rotations, 'billing rotations').toBeGreaterThanOrEqual(3);
    expect(end[1].rotations, 'gateway rotations').toBeGreaterThanOrEqual(3);
    expect(seen.billing.length - 1, 'distinct billing serials observed').toBeGreaterThanOrEqual(3);
    expect(probes).toBeGreaterThanOrEqual(3);
    expect(serialProblems).toEqual([]);

    const errors = [...(await handshakeErrorSeries(billing)).map((s) => `billing ${s}`), ...(await handshakeErrorSeries(gateway)).map((s) => `gateway ${s}`)];
    expect(errors, 'mesh_tls_handshake_errors_total').toEqual([]);

    // The expiry gauge follows the current certificate.
    const expiry = (await billing.samples('mesh_certificate_expiry_timestamp_seconds'))[0]?.value;
    const now = await certsOf(billing);
    expect(Math.abs((expiry ?? 0) - Date.parse(now.notAfter) / 1000)).toBeLessThanOrEqual(1);

    // Renewal at 70 % of the lifetime: about every 0.7 × TTL_S, so no more than ~LOAD_S / 14 + 2 renewals, not one a second.
    const intervals = seen.billing.slice(1).map((o, i) => o.at - seen.billing[i].at);
    const maxRotations = Math.ceil(LOAD_S / (0.7 * TTL_S)) + 2;
    expect(end[0].rotations, `billing rotated ${end[0].rotations} times in ${LOAD_S}s (observed intervals ms: ${intervals.join(', ')}); lifetime as issued ${lifetimeMs} ms`).toBeLessThanOrEqual(maxRotations);
  }, 150_000);
});
