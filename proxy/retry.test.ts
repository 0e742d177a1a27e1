import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { FakeClock, seededRandom } from '../api/clock.js';
import { MeshError } from '../api/errors.js';
import { createLogger } from '../api/log.js';
import { DEFAULTS, type RetrySpec } from '../api/resources.js';
import { defaultTrafficPolicy } from '../control-plane/compiler.js';
import { NO_BODY } from './body.js';
import { Cluster } from './cluster.js';
import type { Exchange } from './exchange.js';
import type { AttemptResult } from './pool.js';
import { retryLayer, type Try } from './retry.js';
import { compileRule } from './route.js';
import { Telemetry } from './telemetry.js';

/** A response object with just what the retry layer and respondError touch. */
class FakeRes extends EventEmitter {
  statusCode = 200;
  headersSent = false;
  writableFinished = false;
  destroyed = false;
  headers: Record<string, unknown> = {};
  writeHead(status: number, headers: Record<string, unknown>) { this.statusCode = status; this.headers = headers; this.headersSent = true; return this; }
  end() { this.writableFinished = true; return this; }
  destroy() { this.destroyed = true; return this; }
}

function setup(retries: Partial<RetrySpec>, opts: { method?: string; timeoutMs?: number; budget?: { ratio: number; minPerSecond: number } } = {}) {
  const clock = new FakeClock();
  const telemetry = new Telemetry();
  const cluster = new Cluster({
    name: 'billing', namespace: 'default', protocol: 'http',
    endpoints: [1, 2, 3].map((i) => ({ address: `127.0.0.1:${9000 + i}`, host: '127.0.0.1', port: 9000 + i, labels: {} })),
    policy: { ...defaultTrafficPolicy('billing'), tls: { mode: 'disable' }, retryBudget: opts.budget ?? DEFAULTS.retryBudget },
  }, { clock, random: seededRandom(3), telemetry, log: createLogger('error') });
  const rule = compileRule('billing', {
    match: [], backends: [{ service: 'billing', weight: 100 }], timeoutMs: opts.timeoutMs ?? 0,
    retries: { ...DEFAULTS.retries, ...retries }, retryNonIdempotent: false,
  }, telemetry, 'gateway');
  const res = new FakeRes();
  const ex = {
    req: { headers: {} }, res, direction: 'outbound', start: clock.now(), method: opts.method ?? 'GET', authority: 'billing',
    path: '/', query: '', headers: {}, requestId: 'r', rule, backend: rule.backends[0], body: NO_BODY, stats: undefined,
    upstreamHost: 'billing', sourceService: 'gateway', peer: undefined, committed: false, clientGone: false,
    span: undefined, traceId: '', attempts: 0, upstream: '', bytesSent: 0, meshError: '',
  } as unknown as Exchange;
  return { clock, telemetry, cluster, ex, res };
}

/** A scripted try handler: each call takes the next outcome; 'hang' waits until cancelled. */
function scripted(outcomes: ('ok' | 'hang' | number | MeshError)[], seen: Try[]) {
  return (ex: Exchange, t: Try): Promise<AttemptResult> => {
    seen.push(t);
    const o = outcomes.shift() ?? 'ok';
    if (o === 'hang') return new Promise((resolve) => t.onStart((reason) => resolve({ kind: 'failed', error: reason })));
    if (o instanceof MeshError) return Promise.resolve({ kind: 'failed', error: o });
    const status = o === 'ok' ? 200 : o;
    if (!t.accept(status)) return Promise.resolve({ kind: 'declined', status });
    ex.committed = true;
    (ex.res as unknown as FakeRes).writeHead(status, {}).end();
    return Promise.resolve({ kind: 'committed' });
  };
}

/** Runs the layer, advancing fake time until it finishes. */
async function run(clock: FakeClock, p: Promise<void>): Promise<void> {
  let done = false;
  void p.then(() => { done = true; });
  for (let i = 0; i < 1000 && !done; i++) {
    await new Promise((r) => setImmediate(r));
    clock.advance(10);
  }
  expect(done).toBe(true);
}

const reset = () => new MeshError('upstream-reset', 'reset');
const refused = () => new MeshError('upstream-connect-failed', 'refused');

describe('retryLayer', () => {
  it.each([
    ['connect failure then success', {}, 'GET', [refused(), 'ok'], 200, 2],
    ['reset then success (idempotent)', {}, 'GET', [reset(), 'ok'], 200, 2],
    ['reset on POST is not retried', {}, 'POST', [reset(), 'ok'], 502, 1],
    ['503 is not retried by default', {}, 'GET', [503, 'ok'], 503, 1],
    ['503 retried when listed', { retryOn: ['503'] }, 'GET', [503, 'ok'], 200, 2],
    ['attempts bound the tries', { attempts: 3, retryOn: ['5xx'] }, 'GET', [500, 502, 503, 'ok'], 503, 3],
    ['non-retriable sidecar errors are final', {}, 'GET', [new MeshError('no-healthy-upstream', 'none'), 'ok'], 503, 1],
  ] as const)('%s', async (_name, retries, method, outcomes, status, tries) => {
    const { clock, ex, res, cluster } = setup(retries as Partial<RetrySpec>, { method });
    const seen: Try[] = [];
    await run(clock, retryLayer({ clock, random: seededRandom(1), telemetry: new Telemetry(), cluster: () => cluster }, scripted([...outcomes], seen))(ex));
    expect(res.statusCode).toBe(status);
    expect(seen.length).toBe(tries);
    await cluster.close();
  });

  it('per-try timeout on a hung try, then success; the per-try limit is clamped to the route timeout', async () => {
    const { clock, ex, res, cluster } = setup({ attempts: 2, perTryTimeoutMs: 300, retryOn: ['gateway-error'] }, { timeoutMs: 1000 });
    const seen: Try[] = [];
    const ok = scripted(['ok'], []);
    const layer = retryLayer({ clock, random: seededRandom(1), telemetry: new Telemetry(), cluster: () => cluster }, (e, t) => {
      seen.push(t);
      if (seen.length > 1) return ok(e, t);
      // What the pool does on a hung endpoint: its per-try timer fails the try.
      return new Promise((resolve) => clock.setTimeout(() => resolve({ kind: 'failed', error: new MeshError('upstream-timeout', 'per-try') }), t.perTryTimeoutMs));
    });
    await run(clock, layer(ex));
    expect(seen.map((t) => t.perTryTimeoutMs)).toEqual([300, expect.any(Number)]);
    expect(seen[1].perTryTimeoutMs).toBeLessThanOrEqual(700);
    expect(res.statusCode).toBe(200);
    await cluster.close();
  });

  it('route timeout with every try hanging → 504 upstream-timeout', async () => {
    const { clock, ex, res, cluster } = setup({ attempts: 3, retryOn: ['gateway-error'] }, { timeoutMs: 500 });
    const seen: Try[] = [];
    await run(clock, retryLayer({ clock, random: seededRandom(1), telemetry: new Telemetry(), cluster: () => cluster }, scripted(['hang', 'hang', 'hang'], seen))(ex));
    expect(res.statusCode).toBe(504);
    expect(res.headers['x-mesh-error']).toBe('upstream-timeout');
    expect(clock.now()).toBeGreaterThanOrEqual(500);
    expect(clock.now()).toBeLessThan(600);
    await cluster.close();
  });

  it('retries draw on the budget: with no allowance the first failure is final', async () => {
    const { clock, ex, res, cluster } = setup({ attempts: 3 }, { budget: { ratio: 0, minPerSecond: 0 } });
    const seen: Try[] = [];
    await run(clock, retryLayer({ clock, random: seededRandom(1), telemetry: new Telemetry(), cluster: () => cluster }, scripted([refused(), 'ok'], seen))(ex));
    expect(res.statusCode).toBe(503);
    expect(res.headers['x-mesh-error']).toBe('upstream-connect-failed');
    expect(seen.length).toBe(1);
    await cluster.close();
  });

  it('each retry excludes the endpoints already tried and counts mesh_retries_total', async () => {
    const { clock, ex, cluster } = setup({ attempts: 3 });
    const telemetry = new Telemetry();
    const seen: Try[] = [];
    await run(clock, retryLayer({ clock, random: seededRandom(1), telemetry, cluster: () => cluster }, (e, t) => {
      t.exclude.add(cluster.pick('', undefined, t.exclude) as never);
      const script: (MeshError | 'ok')[] = [refused(), refused(), 'ok'];
      return scripted(script.slice(seen.length), seen)(e, t);
    })(ex));
    expect(seen[2].exclude.size).toBe(3);
    expect(new Set(seen[2].exclude).size).toBe(3);
    const m = await telemetry.retries.get();
    expect(m.values.find((v) => v.labels.reason === 'connect-failure')?.value).toBe(2);
    await cluster.close();
  });
});
