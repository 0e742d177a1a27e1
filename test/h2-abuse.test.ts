// End-to-end: HTTP/2 abuse on the outbound port: a rapid-reset flood (CVE-2023-44487) ends in GOAWAY, its upstream work is cancelled, a normal client is unaffected.
import http2 from 'node:http2';
import type { ServerResponse } from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { request } from './harness/client.js';
import { route, service, toYaml } from './harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from './harness/sidecar.js';
import { closeAllUpstreams, startUpstream, type Upstream } from './harness/upstream.js';
import { waitFor, withDeadline } from './harness/wait.js';

let slow: Upstream;
let fast: Upstream;
let sidecar: Sidecar;
/** Requests the slow upstream is still holding open: each one is upstream work the flood started. */
let open = 0;
let started = 0;

beforeAll(async () => {
  slow = await startUpstream({
    name: 'slow',
    behaviour: (_req, res: ServerResponse) => {
      started++;
      open++;
      res.on('close', () => open--);
    },
  });
  fast = await startUpstream({ name: 'fast' });
  sidecar = await startSidecar({
    // The floods burn this sidecar's CPU on purpose; load shedding (503 overloaded) would then refuse some of the normal
    // client's requests too. That is shedding's own behaviour, measured in bench:overload: here only the flood defences count.
    extraArgs: ['--shed-lag', '0'],
    service: 'client',
    resources: toYaml([
      ...service({ name: 'slow', endpoints: [{ address: slow.address }] }),
      ...service({ name: 'fast', endpoints: [{ address: fast.address }] }),
      route('slow', ['slow'], [{ backends: [{ service: 'slow' }], timeout: '60s' }]),
    ]),
  });
}, 30_000);

afterAll(async () => {
  await stopAllSidecars();
  await closeAllUpstreams();
});

it('50,000 HEADERS+RST_STREAM end in GOAWAY; upstream work is cancelled; a concurrent client keeps succeeding', async () => {
  const attacker = http2.connect(`http://${sidecar.outbound}`);
  attacker.on('error', () => undefined);
  let goaway: number | undefined;
  attacker.on('goaway', (code: number) => { goaway = code; });
  await new Promise<void>((resolve, reject) => { attacker.once('connect', () => resolve()); attacker.once('error', reject); });

  // The normal client: HTTP/1.1 on the same port, one request after another for the whole attack.
  let normalOk = 0;
  let normalFailed = 0;
  let attacking = true;
  const normal = (async () => {
    while (attacking || normalOk < 20) {
      const r = await request(sidecar.outbound, { host: 'fast', path: '/ok', timeoutMs: 5_000 }).catch(() => undefined);
      if (r?.status === 200) normalOk++;
      else normalFailed++;
    }
  })();

  // First 100 streams are held until the upstream is working on all of them, so the flood's resets must cancel real work.
  const held = Array.from({ length: 100 }, (_, i) => {
    const s = attacker.request({ ':path': `/held/${i}`, ':authority': 'slow' });
    s.on('error', () => undefined);
    return s;
  });
  await waitFor(() => started >= held.length, { timeoutMs: 10_000, what: 'the upstream to be working on the held streams' });
  for (const s of held) s.close(http2.constants.NGHTTP2_CANCEL);

  let sent = held.length;
  const TOTAL = 50_000;
  while (sent < TOTAL && goaway === undefined && !attacker.destroyed) {
    // A batch per turn of the event loop, so HEADERS and RST_STREAM really leave (and interleave on the wire).
    for (let i = 0; i < 250 && sent < TOTAL; i++, sent++) {
      let s: http2.ClientHttp2Stream;
      try {
        s = attacker.request({ ':path': `/r/${sent}`, ':authority': 'slow' });
      } catch {
        break;
      }
      s.on('error', () => undefined);
      // Closed at once: node:http2 sends the HEADERS when the stream gets its id, then the RST_STREAM.
      s.close(http2.constants.NGHTTP2_CANCEL);
    }
    await new Promise((r) => setImmediate(r));
  }
  await waitFor(() => goaway !== undefined || attacker.destroyed, { timeoutMs: 10_000, what: 'GOAWAY to the attacker' });
  attacking = false;
  await withDeadline(normal, 30_000, 'the normal client to finish');
  attacker.destroy();

  expect(goaway, `GOAWAY code after ${sent} streams`).toBe(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
  expect(sent).toBeLessThan(TOTAL);
  expect(normalFailed).toBe(0);
  expect(normalOk).toBeGreaterThanOrEqual(20);
  // Every upstream request the flood started was cancelled: none is left open, and the sidecar holds nothing in flight.
  await waitFor(() => open === 0, { timeoutMs: 10_000, what: `open upstream requests to drop to 0 (started ${started})` });
  await waitFor(async () => (await sidecar.endpoints('slow')).every((e) => e.inflight === 0), { timeoutMs: 10_000, what: 'no in-flight requests to slow' });
  expect(started).toBeGreaterThanOrEqual(held.length);
  expect(sidecar.running()).toBe(true);
  console.log(`rapid reset: ${sent} streams sent before GOAWAY ${goaway}; upstream requests started ${started}; normal client ${normalOk} ok`);
}, 60_000);
