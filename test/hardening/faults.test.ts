// End-to-end: HARDENING.md "Faults the mesh must ride through", the rows (or the parts of rows) no other test asserts;
// test/hardening/README.md maps every row to the test that asserts it. Network faults come from the fault proxy.
import http2 from 'node:http2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectRefused, createPool, header, parseResponse, rawRequest, request, runSteady, type Outcome } from '../harness/client.js';
import { startControlPlane, removeMeshDirs, stopAllControlPlanes } from '../harness/control-plane.js';
import { billingRoute, billingYaml, describeFailures, failed, snapshotEndpoints, snapshotWeights, startTraffic, waitAllInSync, type Traffic } from '../harness/dynamic-mesh.js';
import { startDynamicSidecar, stopAllDynamicSidecars, type DynamicSidecar } from '../harness/dynamic-sidecar.js';
import { startFaultProxy, type FaultProxy } from '../harness/fault-proxy.js';
import { echoClient, grpc, startEchoServer, type EchoServer } from '../harness/grpc.js';
import { sumWhere } from '../harness/prom.js';
import { route, service, toYaml, type Doc } from '../harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from '../harness/sidecar.js';
import { closeAllUpstreams, delay, startUpstream, type BehaviourFn, type Upstream } from '../harness/upstream.js';
import { waitFor } from '../harness/wait.js';

/**
 * Every sidecar here runs with load shedding off: these tests count failed requests under a network fault, and on a
 * 2-core box shared with other test runs, CPU starvation alone can push the event loop past the 100 ms shed threshold
 * (503 overloaded is that feature's own behaviour, tested with it).
 */
const NO_SHED = ['--shed-lag', '0'];
/**
 * HARDENING.md asks for ejection within 1 s. Measured here through /clusters polling on a shared machine, the bound is
 * 5 s; the 1 s itself is asserted on fake time in proxy/cluster.test.ts ("ejects it within 1 s … on the fake clock").
 * (3 s until 2026-11-30, when a fresh-clone CI run here took 3.65 s in the fault-proxy case, with this file's background
 * control-plane outage and the other test files sharing the two cores; it is usually under 1.5 s.)
 */
const EJECTION_BOUND_MS = 5_000;

const proxies: FaultProxy[] = [];

afterEach(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
}, 30_000);

afterAll(async () => {
  await stopAllDynamicSidecars();
  await stopAllControlPlanes();
  await removeMeshDirs();
}, 30_000);

async function faultProxy(target: { address: string }): Promise<FaultProxy> {
  const p = await startFaultProxy({ target: target.address });
  proxies.push(p);
  return p;
}

/** A standalone sidecar for service web with `docs` (and shedding off). */
function web(docs: Doc[]): Promise<Sidecar> {
  return startSidecar({ service: 'web', resources: toYaml([...service({ name: 'web' }), ...docs]), extraArgs: NO_SHED });
}

interface Answer {
  status: number;
  upstream: string | undefined;
  error: string | undefined;
}

type Run = Outcome<Answer>[];

const describeRun = (os: Run): string => {
  const counts = new Map<string, number>();
  for (const o of os) {
    const k = o.ok ? `${o.value.status} ${o.value.error ?? o.value.upstream ?? ''}` : `error ${(o.error as { code?: string }).code ?? o.error.message}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return JSON.stringify(Object.fromEntries(counts));
};
const notOk = (os: Run): Run => os.filter((o) => !o.ok || o.value.status !== 200);

/** Polls /clusters from now on; resolves with performance.now() of the first poll that shows `address` ejected. */
function whenEjected(sc: Sidecar, svc: string, address: string, timeoutMs = 10_000): Promise<number> {
  return waitFor(async () => (await sc.endpoints(svc)).find((e) => e.address === address)?.ejected === true, {
    timeoutMs, intervalMs: 20, what: `/clusters to show ${address} ejected from ${svc}`,
  }).then(() => performance.now());
}

const OUTAGE_MS = 90_000;
const base = (attempt: number) => Math.min(30_000, 1_000 * 1.6 ** attempt);

/** Each sidecar's reconnect delays (retry_in_ms of control_plane_lost) and the log time of its connects, in order. */
function reconnects(sc: DynamicSidecar): { delays: number[]; connectedAt: number[] } {
  const events = sc.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { event: string; time: string; retry_in_ms?: number });
  return {
    delays: events.filter((e) => e.event === 'control_plane_lost').map((e) => e.retry_in_ms!),
    connectedAt: events.filter((e) => e.event === 'control_plane_connected').map((e) => Date.parse(e.time)),
  };
}

/**
 * The 90 s control-plane outage: mostly waiting, so it runs in the background while the other tests of this file run
 * (started by beforeAll, its own apps untracked by their afterEach), and the test at the end awaits it. The other
 * tests' load on the machine makes its "0 failed requests" stricter, not weaker.
 */
async function controlPlaneOutage(): Promise<void> {
  const cp = await startControlPlane({ name: 'cp-a' });
  expect((await cp.apply(billingYaml(50, 50), 'billing.yaml')).issues).toEqual([]);
  const apps = await Promise.all(['v1', 'v2', 'gw', 'gw2', 'gw3', 'gw4'].map((name) => startUpstream({ name, untracked: true })));
  const dyn = (service: string, app: Upstream, instance: string, labels?: Record<string, string>) =>
    startDynamicSidecar({ service, app: app.address, labels, instance, controlPlanes: [cp.grpc], dir: cp.dir, extraArgs: NO_SHED });
  // Six sidecars, so the spread of their reconnects is measurable.
  const all = await Promise.all([
    dyn('billing', apps[0], 'billing-v1', { version: 'v1' }),
    dyn('billing', apps[1], 'billing-v2', { version: 'v2' }),
    ...[2, 3, 4, 5].map((i) => dyn('gateway', apps[i], `gateway-${i - 1}`)),
  ]);
  const gateway = all[2];
  await waitFor(async () => (await snapshotEndpoints(gateway, 'billing')).length === 2, { timeoutMs: 10_000, what: 'both billing endpoints at the gateway' });
  await waitAllInSync(cp, 6, { atCurrent: true });
  const versions = () => Promise.all(all.map(async (s) => (await s.configDump()).version));
  const before = await versions();

  let traffic: Traffic | undefined;
  try {
    traffic = startTraffic(gateway.outbound, { rate: 20, host: 'billing' });
    await waitFor(() => traffic!.samples.length >= 20, { timeoutMs: 5_000, what: '1 s of traffic before the kill' });
    await cp.kill('SIGKILL');
    const killedAt = performance.now();
    // The outage itself (the condition is the elapsed outage, checked while traffic runs).
    await waitFor(() => performance.now() - killedAt >= OUTAGE_MS, { timeoutMs: OUTAGE_MS + 10_000, intervalMs: 1_000, what: 'a 90 s outage' });
    const during = traffic.samples.filter((s) => s.startedAt >= killedAt - traffic!.t0);
    expect(during.length).toBeGreaterThan(0.9 * 20 * (OUTAGE_MS / 1000));
    expect(failed(during).length, `during the outage: ${describeFailures(during)}`).toBe(0);
    expect(await versions()).toEqual(before);
    for (const s of all) expect((await s.adminGet('/ready')).status).toBe(200);

    const restarted = await startControlPlane(cp.options);
    const restartedAt = Date.now();
    // Reconnect delays are capped at 30 s, so every sidecar is back within ~30 s; the wait is longer so a miss is reported.
    await waitAllInSync(restarted, 6, { timeoutMs: 60_000, what: 'all six sidecars back and in sync' });
    const resyncMs = Date.now() - restartedAt;
    expect(resyncMs, 'every sidecar back within the 30 s reconnect cap (+ 5 s)').toBeLessThan(35_000);
    const r = await restarted.apply(toYaml([billingRoute(0, 100)]), 'shift.yaml');
    expect(r.issues).toEqual([]);
    await waitAllInSync(restarted, 6, { timeoutMs: 5_000, minVersion: Number(r.revision) });
    expect(await snapshotWeights(gateway, 'billing')).toEqual(['billing/v1=0', 'billing/v2=100']);
    const samples = await traffic.stop();
    expect(failed(samples).length, `whole run: ${describeFailures(samples)}`).toBe(0);

    const seen = all.map(reconnects);
    for (const [i, s] of seen.entries()) {
      // DESIGN.md §6: 1 s × 1.6ⁿ ± 20 %, capped at 30 s.
      s.delays.forEach((d, n) => {
        expect(d, `${all[i].instance} attempt ${n}`).toBeGreaterThanOrEqual(Math.floor(0.8 * base(n)) - 1);
        expect(d, `${all[i].instance} attempt ${n}`).toBeLessThanOrEqual(Math.min(30_000, Math.ceil(1.2 * base(n))) + 1);
      });
      expect(Math.max(...s.delays), `${all[i].instance} reached the 30 s cap region in 90 s`).toBeGreaterThanOrEqual(24_000);
    }
    // Not in lockstep: for each of the first attempts the six delays spread over more than 2 % of the base delay...
    for (let n = 0; n < 5; n++) {
      const ds = seen.map((s) => s.delays[n]);
      expect(Math.max(...ds) - Math.min(...ds), `attempt ${n} delays ${ds.join(', ')}`).toBeGreaterThan(0.02 * base(n));
    }
    // ...and the six reconnects after the restart are spread over more than a second, not one burst.
    const back = seen.map((s) => s.connectedAt.find((t) => t >= restartedAt - 1_000)!);
    expect(Math.max(...back) - Math.min(...back), `reconnects at +${back.map((t) => t - restartedAt).join(', +')} ms`).toBeGreaterThan(1_000);
  } finally {
    await traffic?.stop();
    await Promise.all(apps.map((a) => a.close()));
  }
}

let outage: Promise<void> | undefined;
beforeAll(() => {
  outage = controlPlaneOutage();
  outage.catch(() => undefined);
});

describe('1 of 3 endpoints killed during a steady load of idempotent requests', () => {
  const cases = [
    { lb: 'ewma (default)', kill: 'process killed' },
    { lb: 'least-request', kill: 'process killed' },
    { lb: 'ewma (default)', kill: 'connections reset, then refused (fault proxy)' },
  ] as const;

  it.each(cases)('$lb, $kill: 0 failed requests with the default retries and TrafficPolicy; the dead endpoint ejected', async ({ lb, kill }) => {
    const ups = await Promise.all(['s1', 's2', 's3'].map((name) => startUpstream({ name })));
    const viaProxy = kill !== 'process killed';
    // Every endpoint behind its own fault proxy, not only the victim: with one extra hop for it alone, EWMA saw it as
    // the slowest under CI load and sent it nothing before the kill (a fresh-clone CI run, 2026-11-30).
    const proxies = viaProxy ? await Promise.all(ups.map((u) => faultProxy(u))) : undefined;
    const proxy = proxies?.[2];
    const addresses = proxies ? proxies.map((p) => p.endpoint) : ups.map((u) => u.address);
    const victim = addresses[2];
    // No Route and no outlierDetection: the default retry rule and the default detector (5 consecutive failures).
    const policy = lb === 'least-request' ? { loadBalancer: { policy: 'least-request' } } : undefined;
    const sc = await web(service({ name: 'steady', endpoints: addresses.map((address) => ({ address })), policy }));
    const pool = createPool(sc.outbound, 64);
    let killedAt = 0;
    let ejected: Promise<number> | undefined;
    let run;
    try {
      run = await runSteady<Answer>({
        rate: 300, total: 2_400, concurrency: 64, maxDurationMs: 20_000,
        onStart: (i) => {
          if (i !== 600) return;
          killedAt = performance.now();
          if (proxy) {
            proxy.resetAll();
            void proxy.refuse('close');
          } else {
            void ups[2].kill();
          }
          ejected = whenEjected(sc, 'steady', victim);
          // Awaited after the load; this only keeps an early failure of the load from leaving it unhandled.
          ejected.catch(() => undefined);
        },
        send: async (i) => {
          const r = await request(sc.outbound, { host: 'steady', path: `/item/${i}`, dispatcher: pool, timeoutMs: 10_000 });
          return { status: r.status, upstream: header(r, 'x-upstream'), error: header(r, 'x-mesh-error') };
        },
      });
    } finally {
      await pool.close();
    }
    const ejectedAt = await ejected!;
    expect(run.notStarted).toBe(0);
    expect(notOk(run.outcomes).length, describeRun(run.outcomes)).toBe(0);
    // EWMA shares unevenly (it favours whichever endpoint looks fastest), so only "in rotation" is asserted.
    expect(run.outcomes.filter((o) => o.index < 600 && o.ok && o.value.upstream === 's3').length, 's3 was in rotation before the kill').toBeGreaterThan(0);
    expect(ejectedAt - killedAt, `ms from the kill until /clusters showed ${victim} ejected`).toBeLessThan(EJECTION_BOUND_MS);
    expect((await sc.endpoints('steady')).filter((e) => e.ejected).map((e) => e.address)).toEqual([victim]);
    expect(sumWhere(await sc.samples('mesh_endpoint_ejections_total'), { destination_service: 'steady' })).toBe(1);
  }, 40_000);

  it('a host that goes silent (black hole): with a per-try timeout, 0 failed requests and traffic moves away within seconds', async () => {
    const ups = await Promise.all(['s1', 's2', 's3'].map((name) => startUpstream({ name })));
    const proxy = await faultProxy(ups[2]);
    const sc = await web([
      ...service({ name: 'steady', endpoints: [{ address: ups[0].address }, { address: ups[1].address }, { address: proxy.endpoint }] }),
      // Without a per-try timeout nothing can rescue a request already sent into the hole: it waits for the route timeout.
      route('steady', ['steady'], [{ retries: { attempts: 3, perTryTimeout: '300ms' }, backends: [{ service: 'steady', weight: 100 }] }]),
    ]);
    const pool = createPool(sc.outbound, 64);
    // Each request that goes into the hole ends its try with a per-try timeout, counted by the sidecar.
    const holeTries = async () => sumWhere(await sc.samples('mesh_retries_total'), { destination_service: 'steady', reason: 'per-try-timeout' });
    let atTwoSeconds = 0;
    let run;
    try {
      run = await runSteady<Answer>({
        rate: 200, total: 1_600, concurrency: 64, maxDurationMs: 20_000,
        onStart: async (i) => {
          // Open connections and new ones: everything is read, nothing forwarded or answered, nothing closed.
          if (i === 400) proxy.blackhole();
          // 2 s (400 requests) after the fault; a moment for the tries already in the hole to time out.
          if (i === 800) atTwoSeconds = await holeTries();
        },
        send: async (i) => {
          const r = await request(sc.outbound, { host: 'steady', path: `/item/${i}`, dispatcher: pool, timeoutMs: 10_000 });
          return { status: r.status, upstream: header(r, 'x-upstream'), error: header(r, 'x-mesh-error') };
        },
      });
    } finally {
      await pool.close();
    }
    expect(notOk(run.outcomes).length, describeRun(run.outcomes)).toBe(0);
    // From 2 s after the fault on, hardly any request is sent into the hole. (EWMA may send the proxied endpoint
    // nothing at all when the machine is loaded, as in one CI run: then nothing went into the hole, and the bound
    // below holds trivially; the 0 failed requests above are the point of the row.)
    const later = await holeTries() - atTwoSeconds;
    expect(later, `tries into the silent endpoint among the last 800 requests`).toBeLessThanOrEqual(800 * 0.02);
  }, 40_000);
});

/** An upstream that promises 20,000 bytes (by content-length or chunked) and sends them in two writes. */
const bigAnswer = (chunked: boolean): BehaviourFn => (_req, res) => {
  res.writeHead(200, chunked ? { 'x-upstream': 'big' } : { 'content-length': '20000', 'x-upstream': 'big' });
  res.write('a'.repeat(10_000));
  setTimeout(() => res.end('b'.repeat(10_000)), 20);
};

/** Whether a raw HTTP/1.1 response holds everything its framing promised. */
function framedComplete(raw: string): boolean {
  const r = parseResponse(raw);
  const rest = raw.slice(raw.indexOf('\r\n\r\n') + 4);
  if (/chunked/i.test(r.headers['transfer-encoding'] ?? '')) return /(^|\r\n)0\r\n(.*\r\n)*\r\n$/.test(rest);
  return r.headers['content-length'] !== undefined && Buffer.byteLength(rest) >= Number(r.headers['content-length']);
}

interface H2Result {
  status: number;
  bytes: number;
  /** END_STREAM arrived (the response looks complete). */
  ended: boolean;
  rstCode: number;
}

function h2Get(addr: string, authority: string): Promise<H2Result> {
  const session = http2.connect(`http://${addr}`);
  session.on('error', () => undefined);
  return new Promise<H2Result>((resolve) => {
    const s = session.request({ ':path': '/h2', ':authority': authority });
    const r: H2Result = { status: 0, bytes: 0, ended: false, rstCode: 0 };
    s.on('response', (h) => void (r.status = Number(h[':status'])));
    s.on('data', (d: Buffer) => void (r.bytes += d.length));
    s.on('end', () => void (r.ended = true));
    s.on('error', () => undefined);
    s.on('close', () => {
      r.rstCode = s.rstCode ?? 0;
      session.close();
      resolve(r);
    });
  }).finally(() => session.destroy());
}

describe('an endpoint dies after sending response headers', () => {
  it('the client sees an aborted response, never a truncated "complete" one (HTTP/1.1 and h2c; RST, FIN or silence mid-body); nothing is retried', async () => {
    const cases = [
      { host: 'reset-length', chunked: false, fault: (p: FaultProxy) => p.resetAt({ at: 2_000 }) },
      { host: 'reset-chunked', chunked: true, fault: (p: FaultProxy) => p.resetAt({ at: 2_000 }) },
      // A process that exits mid-body closes cleanly (FIN): only the framing tells the response is short.
      { host: 'exit-length', chunked: false, fault: (p: FaultProxy) => p.resetAt({ at: 2_000, how: 'fin' }) },
      { host: 'exit-chunked', chunked: true, fault: (p: FaultProxy) => p.resetAt({ at: 2_000, how: 'fin' }) },
      // Goes silent mid-body: the route timeout (1 s) ends it, and that must abort too.
      { host: 'stall', chunked: false, fault: (p: FaultProxy) => p.blackhole({ direction: 'down', afterBytes: 2_000 }) },
    ];
    const ups = await Promise.all(cases.map((c) => startUpstream({ name: c.host, behaviour: bigAnswer(c.chunked) })));
    const ps = await Promise.all(ups.map((u) => faultProxy(u)));
    cases.forEach((c, i) => c.fault(ps[i]));
    const ok = await startUpstream({ name: 'ok' });
    const sc = await web([
      ...cases.flatMap((c, i) => service({ name: c.host, endpoints: [{ address: ps[i].endpoint }] })),
      route('stall', ['stall'], [{ timeout: '1s', backends: [{ service: 'stall', weight: 100 }] }]),
      ...service({ name: 'ok', endpoints: [{ address: ok.address }] }),
    ]);

    for (const [i, c] of cases.entries()) {
      const t0 = performance.now();
      const viaUndici = await request(sc.outbound, { host: c.host, path: '/h1' }).then(
        (r) => `completed ${r.status} with ${r.body.length} body bytes (x-mesh-error ${header(r, 'x-mesh-error')})`,
        (e: Error) => `aborted: ${e.message}`,
      );
      expect(viaUndici, c.host).toMatch(/^aborted/);
      if (c.host === 'stall') expect(performance.now() - t0, 'the stall ended by the 1 s route timeout').toBeGreaterThanOrEqual(900);

      const raw = await rawRequest(sc.outbound, `GET /raw HTTP/1.1\r\nhost: ${c.host}\r\n\r\n`);
      expect(parseResponse(raw).status, c.host).toBe(200);
      expect(framedComplete(raw), `${c.host}: raw response ends with ${JSON.stringify(raw.slice(-12))} after ${raw.length} bytes`).toBe(false);

      const h2 = await h2Get(sc.outbound, c.host);
      expect(h2.status, c.host).toBe(200);
      expect(h2.ended, `${c.host}: END_STREAM after ${h2.bytes} bytes`).toBe(false);
      expect(h2.rstCode, `${c.host}: the stream was reset`).toBeGreaterThan(0);
      expect(h2.bytes).toBeLessThan(20_000);

      // Headers had gone out: no retry, one upstream request per client request.
      expect(ups[i].requests.length, c.host).toBe(3);
    }
    expect((await request(sc.outbound, { host: 'ok', path: '/after' })).status).toBe(200);
  }, 40_000);

  it.each(['rst', 'fin'] as const)('gRPC: a server stream whose upstream connection dies mid-stream (%s) ends with an error status, never OK', async (how) => {
    const app: EchoServer = await startEchoServer('streamer');
    try {
      const proxy = await faultProxy(app);
      // 20 kB into the HTTP/2 connection: after the response headers and some of the 2,000 messages.
      proxy.resetAt({ at: 20_000, how });
      const docs = service({ name: 'echo', endpoints: [{ address: proxy.endpoint }] });
      docs[0].spec.protocol = 'grpc';
      const sc = await web(docs);
      const echo = echoClient(sc.outbound);
      try {
        const call = echo.serverStream({ text: 'x'.repeat(100), seq: 0, count: 2_000 }, new grpc.Metadata());
        let messages = 0;
        call.on('data', () => void messages++);
        const status = await new Promise<grpc.StatusObject>((resolve) => {
          call.on('status', resolve);
          call.on('error', () => undefined);
        });
        expect(status.code, `${status.details} after ${messages} messages`).not.toBe(grpc.status.OK);
        expect(messages).toBeGreaterThan(0);
        expect(messages).toBeLessThan(2_000);
      } finally {
        echo.close();
      }
    } finally {
      await app.close();
    }
  }, 30_000);
});

describe('one endpoint 2 s slower than the rest', () => {
  const cases = [
    { lb: 'ewma', slowness: 'latency' },
    { lb: 'least-request', slowness: 'latency' },
    { lb: 'ewma', slowness: 'bandwidth' },
  ] as const;

  it.each(cases)('$lb, slow by $slowness: traffic moves away within seconds; a per-try timeout holds every request far below 2 s', async ({ lb, slowness }) => {
    // Latency: 2 s on every response chunk. Bandwidth: 64 KiB answers through 32 KiB/s, also ≥ 2 s each.
    const body = slowness === 'bandwidth' ? 'x'.repeat(64 * 1024) : undefined;
    const ups = await Promise.all(['f1', 'f2', 'slow'].map((name) => startUpstream({ name, behaviour: { kind: 'answer', status: 200, body } })));
    const proxy = await faultProxy(ups[2]);
    if (slowness === 'latency') proxy.latency(2_000, 'down');
    else proxy.bandwidth(32 * 1024, 'down');
    const endpoints = [{ address: ups[0].address }, { address: ups[1].address }, { address: proxy.endpoint }];
    const policy = { loadBalancer: { policy: lb } };
    const sc = await web([
      ...service({ name: 'lagging', endpoints, policy }),
      ...service({ name: 'bounded', endpoints, policy }),
      route('bounded', ['bounded'], [{ timeout: '1s', retries: { attempts: 2, perTryTimeout: '300ms' }, backends: [{ service: 'bounded', weight: 100 }] }]),
    ]);
    const rate = slowness === 'bandwidth' ? 40 : 100;
    const load = async (host: string, seconds: number) => {
      const pool = createPool(sc.outbound, 128);
      try {
        return await runSteady<Answer>({
          rate, total: rate * seconds, concurrency: 128, maxDurationMs: seconds * 3_000,
          send: async (i) => {
            const r = await request(sc.outbound, { host, path: `/q/${i}`, dispatcher: pool, timeoutMs: 10_000 });
            return { status: r.status, upstream: header(r, 'x-upstream'), error: header(r, 'x-mesh-error') };
          },
        });
      } finally {
        await pool.close();
      }
    };

    // No timeouts: every request succeeds; after the first slow answers (≈ 2 s), the slow endpoint gets next to nothing.
    const lagging = await load('lagging', 6);
    expect(notOk(lagging.outcomes).length, describeRun(lagging.outcomes)).toBe(0);
    const settled = lagging.outcomes.filter((o) => o.startedAt >= 2_500);
    const toSlow = settled.filter((o) => o.ok && o.value.upstream === 'slow');
    expect(toSlow.length, `after 2.5 s: ${describeRun(settled)}`).toBeLessThanOrEqual(settled.length * 0.05);
    // The estimate moves only once a request to the slow endpoint has completed. On a loaded CI machine the picker can
    // avoid that endpoint from the start (its extra fault-proxy hop already makes it the slowest), and then the estimate
    // stays at its default: a CI run failed on exactly that. The routing assertions above hold either way.
    const slowAnswers = lagging.outcomes.filter((o) => o.ok && o.value.upstream === 'slow').length;
    if (lb === 'ewma' && slowAnswers > 0) {
      const slowEp = (await sc.endpoints('lagging')).find((e) => e.address === proxy.endpoint);
      expect(slowEp?.latencyMs, 'the EWMA estimate of the slow endpoint').toBeGreaterThanOrEqual(1_000);
    }

    // With a 300 ms per-try timeout and a 1 s route timeout no request waits for the slow endpoint: each is bounded far
    // below the 2 s it would take. 1.9 s is generous for a 1 s timeout on a busy box, and still below the slow ≥ 2 s.
    const bounded = await load('bounded', 4);
    const worst = Math.max(...bounded.outcomes.map((o) => o.latencyMs));
    expect(worst, 'slowest request with the timeouts (ms)').toBeLessThan(1_900);
    expect(bounded.outcomes.every((o) => !o.ok || o.value.upstream !== 'slow'), 'nothing waited for the slow endpoint').toBe(true);
    if (slowness === 'latency') {
      // Headers late: the per-try timeout fires before anything was sent to the client, and the retry succeeds.
      expect(notOk(bounded.outcomes).length, describeRun(bounded.outcomes)).toBe(0);
    } else {
      // Headers on time, body trickling: the per-try timeout ends at the headers (the response is committed, so no retry),
      // and the route timeout aborts the body. Such a request fails as an aborted response, only until EWMA has learned.
      const bad = notOk(bounded.outcomes);
      expect(bad.every((o) => !o.ok && /UND_ERR_SOCKET|other side closed|terminated/.test(`${(o.error as { code?: string }).code} ${o.error.message}`)), describeRun(bad)).toBe(true);
      expect(bad.every((o) => o.startedAt < 2_500), `failures after 2.5 s: ${describeRun(bad)}`).toBe(true);
    }
  }, 60_000);
});

describe('no endpoints', () => {
  it('an empty Endpoints list or an empty subset: immediate 503 no-healthy-upstream, even on a rule with retries and long backoff', async () => {
    const member = await startUpstream({ name: 'member' });
    const sc = await web([
      ...service({ name: 'empty', endpoints: [] }),
      ...service({ name: 'split', endpoints: [{ address: member.address, labels: { version: 'v1' } }], subsets: [{ name: 'v2', labels: { version: 'v2' } }] }),
      route('split', ['split'], [{ retries: { attempts: 5, retryOn: ['5xx', 'connect-failure', 'reset'], backoff: { base: '1s', max: '2s' } }, backends: [{ service: 'split', subset: 'v2', weight: 100 }] }]),
      route('empty', ['empty'], [{ retries: { attempts: 5, retryOn: ['5xx', 'connect-failure', 'reset'], backoff: { base: '1s', max: '2s' } }, backends: [{ service: 'empty', weight: 100 }] }]),
    ]);
    for (const host of ['empty', 'split']) {
      const t0 = performance.now();
      const r = await request(sc.outbound, { host, path: '/x' });
      const ms = performance.now() - t0;
      expect(r.status, host).toBe(503);
      expect(header(r, 'x-mesh-error'), host).toBe('no-healthy-upstream');
      // One backoff would already be ≥ 1 s; "immediate" is asserted as well under it.
      expect(ms, host).toBeLessThan(900);
    }
    expect(member.requests).toHaveLength(0);
  }, 30_000);
});

describe('SIGTERM under load', () => {
  it('drain: the listener closes first, every request in flight finishes 200, later ones are refused at connect (never reset), exit 0', async () => {
    // 1 s answers, so the drain outlasts the listener closing by far.
    const slow = await startUpstream({ name: 'slow', behaviour: delay(1_000) });
    const sc = await web(service({ name: 'slow', endpoints: [{ address: slow.address }] }));
    // A fresh connection per request: a request started before SIGTERM never waits for one, and none reuses a keep-alive
    // connection the drain is closing (a request written as the server's FIN crosses it is reset: inherent to HTTP/1.1).
    const SIGTERM_AT = 300;
    let termAt = 0;
    let exited: Promise<number | null> | undefined;
    let refusedAt: Promise<number> | undefined;
    let refusedPerf = Infinity;
    const startedPerf = new Map<number, number>();
    const run = await runSteady<Answer>({
      rate: 100, total: 500, concurrency: 200, maxDurationMs: 20_000,
      onStart: (i) => {
        if (i !== SIGTERM_AT) return;
        termAt = Date.now();
        exited = sc.stop('SIGTERM', 15_000);
        refusedAt = waitFor(() => connectRefused(sc.outbound), { timeoutMs: 5_000, intervalMs: 5, what: 'the outbound listener to close' })
          .then(() => { refusedPerf = performance.now(); return Date.now(); });
        refusedAt.catch(() => undefined);
      },
      send: async (i) => {
        startedPerf.set(i, performance.now());
        const r = await request(sc.outbound, { host: 'slow', path: `/r/${i}`, timeoutMs: 10_000 });
        return { status: r.status, upstream: header(r, 'x-upstream'), error: header(r, 'x-mesh-error') };
      },
    });
    const code = await exited!;
    expect(code, sc.stderr()).toBe(0);
    const before = run.outcomes.filter((o) => o.index < SIGTERM_AT);
    expect(notOk(before).length, `started before SIGTERM: ${describeRun(before)}`).toBe(0);
    // After SIGTERM a request either still got in (and finished) or was refused at connect, so a client can go elsewhere.
    // The one exception is a connect the kernel completed in the instant the listener closed: it sat in the accept
    // queue, and closing the listening socket resets it (Envoy and Linkerd have the same window). Only requests started
    // before the test saw the listener closed may be reset that way.
    const after = run.outcomes.filter((o) => o.index >= SIGTERM_AT);
    await refusedAt;
    const bad = after.filter((o) => {
      if (o.ok) return o.value.status !== 200;
      const code = (o.error as { code?: string }).code;
      if (code === 'ECONNREFUSED') return false;
      return !(/UND_ERR_SOCKET|ECONNRESET/.test(code ?? '') && startedPerf.get(o.index)! <= refusedPerf);
    });
    expect(bad.length, `started after SIGTERM: ${describeRun(after)}`).toBe(0);
    const resetInTheWindow = after.filter((o) => !o.ok && (o.error as { code?: string }).code !== 'ECONNREFUSED');
    expect(resetInTheWindow.length, 'reset in the accept-queue window').toBeLessThanOrEqual(2);
    expect(after.some((o) => !o.ok), 'some request after SIGTERM was refused').toBe(true);

    const events = sc.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { event: string; time: string; inflight?: number });
    const started = events.find((e) => e.event === 'drain_started');
    const finished = events.find((e) => e.event === 'drain_finished');
    expect(started?.inflight, 'requests in flight when the drain began').toBeGreaterThanOrEqual(50);
    // Listeners close first: connects were refused while the drain was still finishing the requests in flight.
    expect(await refusedAt!).toBeLessThan(Date.parse(finished!.time));
    expect(Date.parse(finished!.time) - termAt).toBeGreaterThanOrEqual(500);
    expect(slow.requests.length).toBe(before.length + after.filter((o) => o.ok).length);
  }, 40_000);
});

describe('control plane down for minutes (started in the background by beforeAll)', () => {
  it('90 s without the control plane: 0 failed requests; after it returns every sidecar resyncs; reconnects are spread by jitter', async () => {
    await outage;
  }, 240_000);
});
