// End-to-end: mutual TLS between sidecars: XFCC across a pair, the inbound refusal matrix with its handshake-error reasons, direct valid clients, permissive mode, the outbound peer-identity check.
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { header, rawRequest, request, splitAddr } from './harness/client.js';
import { handshakeErrorSeries, handshakeErrors, issueClientCert, meshCa, meshService, spiffeOf, tlsProbe, type ClientCert, type TlsProbe } from './harness/mtls.js';
import { badCertificates, type BadCertificates } from './harness/pki.js';
import { sumWhere } from './harness/prom.js';
import { meshConfig, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor, withDeadline } from './harness/wait.js';

let billingApp: Upstream;
let billing: Sidecar;
let gateway: Sidecar;

beforeAll(async () => {
  billingApp = await startUpstream({ name: 'billing-app' });
  // The server first: the client's Endpoints need its inbound port.
  billing = await startSidecar({ service: 'billing', app: billingApp.address, resources: toYaml(meshService({ name: 'billing' })) });
  gateway = await startSidecar({
    service: 'gateway',
    resources: toYaml([...meshService({ name: 'gateway' }), ...meshService({ name: 'billing', endpoints: [billing.inbound] })]),
  });
}, 45_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

const XFCC_GATEWAY = `By=${spiffeOf('billing')};URI=${spiffeOf('gateway')}`;

/** Sends the plaintext request and returns what came back ('' for a close or reset without an answer). */
async function plaintext(addr: string, text: string): Promise<string> {
  try {
    return await rawRequest(addr, text, 5_000);
  } catch (err) {
    if (/ECONNRESET|EPIPE/.test((err as Error).message)) return '';
    throw err;
  }
}

describe('mTLS pair: gateway → billing', () => {
  it('forwards through the client outbound port; the app sees the caller identity in XFCC', async () => {
    billingApp.clearRequests();
    for (let i = 0; i < 5; i++) {
      const r = await request(gateway.outbound, { host: 'billing', path: `/invoices/${i}` });
      expect(r.status, r.body).toBe(200);
      expect(header(r, 'x-upstream')).toBe('billing-app');
    }
    expect(billingApp.requests).toHaveLength(5);
    for (const rec of billingApp.requests) expect(rec.headers['x-forwarded-client-cert']).toBe(XFCC_GATEWAY);
    expect(await handshakeErrors(billing, 'inbound')).toBe(0);
    expect(await handshakeErrors(gateway, 'outbound')).toBe(0);
  }, 20_000);

  it('never lets a client-sent XFCC survive, whatever its spelling or position', async () => {
    billingApp.clearRequests();
    const forged = `By=${spiffeOf('billing')};URI=${spiffeOf('admin')}`;
    const variants: Record<string, string>[] = [
      { 'x-forwarded-client-cert': forged },
      { 'X-Forwarded-Client-Cert': forged },
      { 'x-forwarded-client-cert': forged, connection: 'x-forwarded-client-cert' },
    ];
    for (const headers of variants) {
      const r = await request(gateway.outbound, { host: 'billing', path: '/forged', headers });
      expect(r.status, JSON.stringify(headers)).toBe(200);
    }
    // Two XFCC lines sent raw, so no client library merges or drops them.
    const raw = await rawRequest(
      gateway.outbound,
      `GET /forged-raw HTTP/1.1\r\nHost: billing\r\nX-Forwarded-Client-Cert: ${forged}\r\nx-forwarded-client-cert: URI=${spiffeOf('root')}\r\nConnection: close\r\n\r\n`,
    );
    expect(raw).toMatch(/^HTTP\/1\.1 200 /);
    expect(billingApp.requests).toHaveLength(variants.length + 1);
    for (const rec of billingApp.requests) {
      expect(rec.headers['x-forwarded-client-cert'], rec.url).toBe(XFCC_GATEWAY);
      const xfccLines = rec.rawHeaders.filter((_, i) => i % 2 === 0 && rec.rawHeaders[i].toLowerCase() === 'x-forwarded-client-cert');
      expect(xfccLines, rec.url).toHaveLength(1);
    }
  }, 20_000);
});

describe('inbound refusals (strict)', () => {
  let bad: BadCertificates;

  beforeAll(async () => {
    // The bad certificates claim "gateway", a caller that is otherwise accepted: each refusal is about the certificate alone.
    bad = badCertificates(await meshCa(), 'mesh.local', 'gateway');
  }, 30_000);

  /** The probe got no 2xx, the app saw nothing, and the reason's counter moved. */
  async function expectRefused(reason: string, probe: () => Promise<TlsProbe | string>): Promise<void> {
    const before = await handshakeErrors(billing, 'inbound', reason);
    billingApp.clearRequests();
    const got = await probe();
    const text = typeof got === 'string' ? got : got.received;
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
    expect(status >= 200 && status < 300, `${reason}: got ${JSON.stringify(text.slice(0, 200))}`).toBe(false);
    await waitFor(async () => (await handshakeErrors(billing, 'inbound', reason)) > before, {
      timeoutMs: 5_000,
      what: `mesh_tls_handshake_errors_total{direction="inbound",reason="${reason}"} to exceed ${before} (series: ${(await handshakeErrorSeries(billing)).join(' ')})`,
    });
    expect(billingApp.requests, `${reason}: the app must see nothing`).toHaveLength(0);
  }

  it('plain-TCP HTTP → plaintext', async () => {
    await expectRefused('plaintext', () => plaintext(billing.inbound, 'GET /plain HTTP/1.1\r\nHost: billing\r\nConnection: close\r\n\r\n'));
  });

  it('TLS without a client certificate → no-client-certificate', async () => {
    await expectRefused('no-client-certificate', () => tlsProbe(billing.inbound, { path: '/nocert' }));
  });

  it('a certificate from another CA → untrusted-certificate', async () => {
    await expectRefused('untrusted-certificate', () => tlsProbe(billing.inbound, { cert: bad.otherCa, path: '/other-ca' }));
  });

  it('an expired certificate → expired', async () => {
    await expectRefused('expired', () => tlsProbe(billing.inbound, { cert: bad.expired, path: '/expired' }));
  });

  it('two URI SANs → multiple-uri-sans', async () => {
    await expectRefused('multiple-uri-sans', () => tlsProbe(billing.inbound, { cert: bad.twoUriSans, path: '/two-sans' }));
  });

  it('the CA certificate used as a leaf → ca-certificate', async () => {
    await expectRefused('ca-certificate', () => tlsProbe(billing.inbound, { cert: bad.caAsLeaf, path: '/ca-leaf' }));
  });

  it('an identity in another trust domain → foreign-trust-domain', async () => {
    await expectRefused('foreign-trust-domain', () => tlsProbe(billing.inbound, { cert: bad.wrongTrustDomain, path: '/foreign' }));
  });

  it('a TLS 1.2-only client (with a valid certificate) → protocol-version', async () => {
    const cert = bad.valid('gateway');
    await expectRefused('protocol-version', () => tlsProbe(billing.inbound, { cert, maxVersion: 'TLSv1.2', path: '/tls12' }));
  });

  it('the pki fixture valid(service) is accepted (so the refusals above are about the defect, not the fixture)', async () => {
    billingApp.clearRequests();
    const p = await tlsProbe(billing.inbound, { cert: bad.valid('gateway'), host: 'billing', path: '/fixture-valid' });
    expect(p.response?.status, p.error ?? p.received).toBe(200);
    expect(billingApp.requests.map((r) => r.headers['x-forwarded-client-cert'])).toEqual([XFCC_GATEWAY]);
  });
});

describe('direct TLS clients', () => {
  let cert: ClientCert;
  beforeAll(async () => {
    cert = await issueClientCert('reports');
  });

  it('a valid client certificate from the mesh CA gets 200 and its identity in XFCC', async () => {
    billingApp.clearRequests();
    const before = await handshakeErrors(billing, 'inbound');
    const p = await tlsProbe(billing.inbound, {
      cert,
      host: 'billing',
      path: '/direct',
      text: `GET /direct HTTP/1.1\r\nHost: billing\r\nX-Forwarded-Client-Cert: URI=${spiffeOf('admin')}\r\nConnection: close\r\n\r\n`,
    });
    expect(p.handshake, p.error).toBe(true);
    expect(p.serverUri).toBe(spiffeOf('billing'));
    expect(p.response?.status, p.received).toBe(200);
    expect(billingApp.requests).toHaveLength(1);
    expect(billingApp.requests[0].url).toBe('/direct');
    expect(billingApp.requests[0].headers['x-forwarded-client-cert']).toBe(`By=${spiffeOf('billing')};URI=${spiffeOf('reports')}`);
    expect(await handshakeErrors(billing, 'inbound')).toBe(before);
  });
});

describe('a connection opened ahead of use (as a peer sidecar\'s pool does)', () => {
  /** An mTLS connection to billing's inbound port that records what it receives. */
  async function openTls(cert: ClientCert): Promise<{ socket: tls.TLSSocket; raw: net.Socket; got: () => string; closed: () => boolean }> {
    const [host, port] = splitAddr(billing.inbound);
    const raw = net.connect(port, host);
    raw.on('error', () => undefined);
    const socket = tls.connect({ socket: raw, ca: (await meshCa()).certPem, key: cert.keyPem, cert: cert.certPem, checkServerIdentity: () => undefined });
    let got = '';
    let closed = false;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => void (got += d));
    socket.on('error', () => undefined);
    socket.on('close', () => void (closed = true));
    await withDeadline(new Promise((resolve) => socket.once('secureConnect', resolve)), 5_000, 'the TLS handshake');
    return { socket, raw, got: () => got, closed: () => closed };
  }

  it('gets nothing written while it is silent past the header timeout, and its first request later is answered', async () => {
    const cert = await issueClientCert('gateway');
    const silent = await openTls(cert);
    // A second connection, opened after the first, stalls mid-headers: its 408 (header timeout, 10 s) marks the moment
    // the silent one, older, has been past the same timeout too. Node used to write the silent one a 408 as well.
    const stalled = await openTls(cert);
    try {
      stalled.socket.write('GET /stalled HTTP/1.1\r\nHost: billing\r\n');
      await waitFor(() => stalled.closed(), { timeoutMs: 20_000, what: 'the stalled connection to be closed by the header timeout' });
      expect(stalled.got()).toMatch(/^HTTP\/1\.1 408 /);
      expect(silent.got(), 'nothing is written to a connection that has not begun a request').toBe('');
      expect(silent.closed()).toBe(false);
      billingApp.clearRequests();
      silent.socket.write('GET /late HTTP/1.1\r\nHost: billing\r\n\r\n');
      await waitFor(() => /\r\n\r\n/.test(silent.got()), { timeoutMs: 5_000, what: 'the answer to the late request' });
      expect(silent.got()).toMatch(/^HTTP\/1\.1 200 /);
      expect(billingApp.requests.map((r) => r.url)).toEqual(['/late']);
    } finally {
      silent.socket.destroy();
      stalled.socket.destroy();
    }
  }, 30_000);

  it('survives a peer that resets such a connection before its first byte', async () => {
    const conn = await openTls(await issueClientCert('gateway'));
    conn.raw.resetAndDestroy();
    await waitFor(() => conn.closed(), { timeoutMs: 5_000, what: 'the reset connection to close' });
    // The sidecar is still there and serving: a reset with no listener for it would have been an uncaught error.
    const p = await tlsProbe(billing.inbound, { cert: await issueClientCert('gateway'), host: 'billing', path: '/after-reset' });
    expect(p.response?.status, p.error ?? p.received).toBe(200);
  });
});

describe('permissive mode', () => {
  it('accepts plaintext as unauthenticated (no XFCC) and still verifies TLS callers', async () => {
    const app = await startUpstream({ name: 'ledger-app' });
    const ledger = await startSidecar({
      service: 'ledger',
      app: app.address,
      resources: toYaml([meshConfig({ mtls: 'permissive' }), ...meshService({ name: 'ledger' })]),
    });
    const r = await request(ledger.inbound, {
      host: 'ledger',
      path: '/plain',
      headers: { 'x-forwarded-client-cert': `By=${spiffeOf('ledger')};URI=${spiffeOf('gateway')}` },
    });
    expect(r.status, r.body).toBe(200);
    expect(app.requests).toHaveLength(1);
    expect(app.requests[0].headers['x-forwarded-client-cert']).toBeUndefined();
    expect(await handshakeErrors(ledger, 'inbound', 'plaintext')).toBe(0);

    // A TLS caller is still identified, and an untrusted one still refused.
    const good = await tlsProbe(ledger.inbound, { cert: await issueClientCert('gateway'), host: 'ledger', path: '/tls' });
    expect(good.response?.status, good.error ?? good.received).toBe(200);
    expect(app.requests[1]?.headers['x-forwarded-client-cert']).toBe(`By=${spiffeOf('ledger')};URI=${spiffeOf('gateway')}`);
    const none = await tlsProbe(ledger.inbound, { host: 'ledger', path: '/tls-nocert' });
    expect(none.response?.status ?? 0).not.toBe(200);
    expect(app.requests).toHaveLength(2);
    await ledger.stop();
  }, 30_000);
});

describe('outbound peer identity', () => {
  it('refuses a server whose SPIFFE id is not the destination service: 503 upstream-connect-failed, peer-identity counted', async () => {
    const usersApp = await startUpstream({ name: 'users-app' });
    const users = await startSidecar({ service: 'users', app: usersApp.address, resources: toYaml(meshService({ name: 'users' })) });
    // A client that believes billing lives at the users sidecar's inbound port.
    const confused = await startSidecar({
      service: 'gateway',
      resources: toYaml([...meshService({ name: 'gateway' }), ...meshService({ name: 'billing', endpoints: [users.inbound] })]),
    });
    for (let i = 0; i < 3; i++) {
      const r = await request(confused.outbound, { host: 'billing', path: `/steal/${i}` });
      expect(r.status, r.body).toBe(503);
      expect(header(r, 'x-mesh-error')).toBe('upstream-connect-failed');
    }
    await waitFor(async () => (await handshakeErrors(confused, 'outbound', 'peer-identity')) >= 1, {
      what: 'mesh_tls_handshake_errors_total{direction="outbound",reason="peer-identity"} on the client',
    });
    expect(usersApp.requests).toHaveLength(0);
    // Nothing reached the impostor's inbound pipeline either: the client hung up after the handshake.
    expect(sumWhere(await users.samples('mesh_requests_total'), { direction: 'inbound' })).toBe(0);
    await confused.stop();
    await users.stop();
  }, 30_000);
});
