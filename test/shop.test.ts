// End-to-end: `mesh up` runs the shop; through the gateway: accounts, invoices (gRPC, streamed), the canary, access and rate
// policies, an instance killed under load; the data survives a restart, and nothing is left running after Ctrl-C or a crash.
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client, type Dispatcher } from 'undici';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from './harness/cli.js';
import { header, request, type Response } from './harness/client.js';
import { REQUIRE_ETCD, etcdAvailable, startEtcd, type EtcdCluster } from './harness/etcd.js';
import { processesMentioning, startMeshUp, type MeshUp } from './harness/mesh-up.js';
import { waitFor } from './harness/wait.js';
import { which } from '../cli/which.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const CANARY_50 = path.join(ROOT, 'examples/shop/canary-50.yaml');

interface Invoice { id: string | number; account_id: string | number; amount_cents: number | string; description: string; served_by: string }

const json = (body: Record<string, unknown>) => JSON.stringify(body);
const auth = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });

async function signupAndLogin(gw: string, name: string, dispatcher?: Dispatcher): Promise<string> {
  const s = await request(gw, { method: 'POST', path: '/signup', body: json({ name, password: 'correct-horse' }), headers: { 'content-type': 'application/json' }, dispatcher });
  expect([201, 409], s.body).toContain(s.status);
  return login(gw, name, dispatcher);
}

async function login(gw: string, name: string, dispatcher?: Dispatcher): Promise<string> {
  const r = await request(gw, { method: 'POST', path: '/login', body: json({ name, password: 'correct-horse' }), headers: { 'content-type': 'application/json' }, dispatcher });
  expect(r.status, r.body).toBe(200);
  return (JSON.parse(r.body) as { token: string }).token;
}

/** `n` successful GET /invoices answers' served_by, spread over `tokens` (each client has its own rate limit; a 429 is skipped). */
async function servedBy(gw: string, tokens: string[], n: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  let ok = 0;
  let i = 0;
  const deadline = Date.now() + 60_000;
  while (ok < n) {
    if (Date.now() > deadline) throw new Error(`only ${ok} of ${n} answers within 60 s: ${JSON.stringify(counts)}`);
    const batch = await Promise.all(tokens.map(() => request(gw, { path: '/invoices', headers: auth(tokens[i++ % tokens.length]) })));
    for (const r of batch) {
      if (r.status === 429) continue;
      expect(r.status, r.body).toBe(200);
      const by = (JSON.parse(r.body) as { served_by: string }).served_by;
      counts[by] = (counts[by] ?? 0) + 1;
      ok++;
    }
  }
  return counts;
}

const v2Share = (c: Record<string, number>) => (c['billing-v2'] ?? 0) / Object.values(c).reduce((a, b) => a + b, 0);

function scenario(label: string, withEtcd: boolean) {
  describe.skipIf(withEtcd && !etcdAvailable() && !REQUIRE_ETCD)(`mesh up (${label})`, () => {
    let work: string;
    let etcd: EtcdCluster | undefined;
    let up: MeshUp | undefined;
    let passed = false;

    afterAll(async () => {
      await up?.stop('SIGKILL').catch(() => undefined);
      await etcd?.stop();
      // A failed run keeps every program's log for the post-mortem.
      if (work && (passed || process.env.CI === 'true')) await rm(work, { recursive: true, force: true });
      else if (work) console.warn(`shop test failed: logs kept in ${work}/mesh/shop/logs`);
    });

    it('runs the shop, enforces its policies, survives a killed instance and a restart, and leaves nothing behind', async () => {
      work = await mkdtemp(path.join(os.tmpdir(), 'trellis-shop-'));
      const dir = path.join(work, 'mesh');
      const extra: string[] = [];
      if (withEtcd) {
        etcd = await startEtcd();
        extra.push('--etcd', etcd.endpoints[0].replace('http://', ''));
      }
      // Monitoring: with prometheus installed (CI installs it), the embedded run also checks `--prometheus`.
      const prometheus = !withEtcd && (which('prometheus') !== undefined || process.env.CI === 'true');
      up = await startMeshUp({ dir, cwd: work, extra: prometheus ? [...extra, '--prometheus', '--prometheus-port', '0'] : extra });
      const gw = up.gatewayAddr;
      expect(up.stdout()).toContain('npx mesh status');
      const connect = ['--control-plane', up.state.controlPlane, '--dir', dir];

      // Accounts and invoices: users (HTTP/JSON) and billing (gRPC), each on its own database, through the gateway.
      const token = await signupAndLogin(gw, 'ada');
      expect((await request(gw, { path: '/me' })).status).toBe(401);
      const created = await request(gw, { method: 'POST', path: '/invoices', headers: auth(token), body: json({ amount_cents: 1250, description: 'coffee' }) });
      expect(created.status, created.body).toBe(201);
      const invoice = JSON.parse(created.body) as Invoice;
      const listed = await request(gw, { path: '/invoices', headers: auth(token) });
      expect(listed.status, listed.body).toBe(200);
      expect((JSON.parse(listed.body) as { invoices: Invoice[] }).invoices.map((x) => x.description)).toContain('coffee');
      const me = JSON.parse((await request(gw, { path: '/me', headers: auth(token) })).body) as { user: { name: string }; invoices: Invoice[] };
      expect(me.user.name).toBe('ada');
      expect(me.invoices.map((x) => String(x.id))).toContain(String(invoice.id));

      // WatchInvoices: a server stream through both sidecars sees an invoice created afterwards (by any billing instance).
      const watcher = new Client(`http://${gw}`);
      const watch = await watcher.request({ method: 'GET', path: '/invoices/watch', headers: auth(token) });
      expect(watch.statusCode).toBe(200);
      let streamed = '';
      watch.body.setEncoding('utf8').on('data', (d: string) => (streamed += d)).on('error', () => undefined);
      await waitFor(() => streamed.includes('coffee'), { timeoutMs: 10_000, what: 'the existing invoice on the watch stream' });
      await request(gw, { method: 'POST', path: '/invoices', headers: auth(token), body: json({ amount_cents: 300, description: 'tea' }) });
      await waitFor(() => streamed.includes('"tea"'), { timeoutMs: 10_000, what: 'the new invoice on the watch stream' });
      await watcher.destroy();

      // AccessPolicy: users may not call billing. The users sidecar's outbound port stands in for the users app.
      const users = up.state.instances.find((i) => i.service === 'users')!;
      const denied = await request(users.outbound, { method: 'POST', path: 'http://billing/shop.billing.v1.Billing/ListInvoices', host: 'billing' });
      expect(denied.status).toBe(403);
      expect(header(denied, 'x-mesh-error')).toBe('access-denied');

      if (prometheus) {
        // Every sidecar and the control plane, found through the mesh's file_sd, scraped and up.
        const prom = up.state.prometheus!.replace('http://', '');
        await waitFor(async () => {
          const r = JSON.parse((await request(prom, { path: '/api/v1/targets' })).body) as { data: { activeTargets: { health: string }[] } };
          return r.data.activeTargets.length === up!.state.instances.length + 1 && r.data.activeTargets.every((t) => t.health === 'up');
        }, { timeoutMs: 30_000, intervalMs: 500, what: 'prometheus scraping every target up' });
      }

      // The canary: v2 takes about 10 % of billing calls, then 50 % after `mesh apply`.
      const tokens = [token, ...(await Promise.all(['bob', 'cyd', 'dee'].map((n) => signupAndLogin(gw, n))))];
      const before = await servedBy(gw, tokens, 300);
      expect(v2Share(before), JSON.stringify(before)).toBeGreaterThan(0.03);
      expect(v2Share(before), JSON.stringify(before)).toBeLessThan(0.2);
      const applied = await runCli(['apply', '-f', CANARY_50, ...connect]);
      expect(applied.code, applied.stderr).toBe(0);
      const gwSidecar = up.state.instances.find((i) => i.service === 'gateway')!;
      await waitFor(async () => (await request(gwSidecar.admin, { path: '/config_dump' })).body.match(/"weight": ?50/) !== null, { timeoutMs: 15_000, what: 'the 50 % canary in the gateway sidecar' });
      const after = await servedBy(gw, tokens, 300);
      expect(v2Share(after), JSON.stringify(after)).toBeGreaterThan(0.35);
      expect(v2Share(after), JSON.stringify(after)).toBeLessThan(0.65);

      // Per-client rate limit: one client's burst is refused with 429 rate-limited; another client is unaffected.
      const flood = await Promise.all(Array.from({ length: 150 }, () => request(gw, { path: '/invoices', headers: auth(token) })));
      const limited = flood.filter((r) => r.status === 429);
      expect(limited.length, `statuses: ${flood.map((r) => r.status).join(',')}`).toBeGreaterThan(0);
      expect(header(limited[0], 'x-mesh-error')).toBe('rate-limited');
      expect(flood.every((r) => r.status === 200 || r.status === 429)).toBe(true);
      // Before sign-in the gateway keys a caller by its address, so the other client comes from another loopback address.
      const elsewhere = new Client(`http://${gw}`, { localAddress: '127.0.0.2' });
      const fresh = await signupAndLogin(gw, 'eve', elsewhere);
      expect((await request(gw, { path: '/invoices', headers: auth(fresh), dispatcher: elsewhere })).status).toBe(200);
      await elsewhere.close();

      // Kill a billing instance (app and sidecar) while traffic flows: nothing fails, and mesh up restarts it.
      const victims = up.state.processes.filter((p) => p.name.startsWith('billing-v1-1'));
      expect(victims.map((p) => p.name).sort()).toEqual(['billing-v1-1', 'billing-v1-1-sidecar']);
      const failures: string[] = [];
      let sent = 0;
      let running = true;
      const traffic = (async () => {
        for (let i = 0; running; i++) {
          const r: Response = await request(gw, { path: '/invoices', headers: auth(tokens[i % tokens.length]) });
          sent++;
          if (r.status !== 200 && r.status !== 429) failures.push(`${r.status} ${header(r, 'x-mesh-error') ?? ''} ${r.body}`);
          // About 40 calls a second in all: under each client's limit, so every answer should be a 200.
          await new Promise((res) => setTimeout(res, 25));
        }
      })();
      await waitFor(() => sent >= 20, { timeoutMs: 10_000, what: 'traffic before the kill' });
      for (const v of victims) process.kill(v.pid, 'SIGKILL');
      await waitFor(() => /billing-v1-1-sidecar killed by SIGKILL; restarting/.test(up!.stderr()), { timeoutMs: 10_000, what: 'mesh up noticing the kill' });
      const atKill = sent;
      await waitFor(() => sent >= atKill + 100, { timeoutMs: 30_000, what: '100 calls after the kill' });
      running = false;
      await traffic;
      expect(failures, failures.join('\n')).toEqual([]);
      const check = async () => (await runCli(['check', ...connect])).code === 0;
      await waitFor(check, { timeoutMs: 30_000, intervalMs: 500, what: 'mesh check after the restart of billing-v1-1' });

      // Ctrl-C: everything stops, nothing stays behind, and the state file is gone.
      expect(await up.stop('SIGINT')).toBe(0);
      expect(processesMentioning(dir)).toEqual([]);
      expect(existsSync(path.join(dir, 'shop', 'up.json'))).toBe(false);

      // A crash (SIGKILL) of mesh up: its programs follow it, and the next mesh up starts cleanly with the same data.
      up = await startMeshUp({ dir, cwd: work, extra });
      const again = await login(up.gatewayAddr, 'ada');
      const kept = JSON.parse((await request(up.gatewayAddr, { path: '/invoices', headers: auth(again) })).body) as { invoices: Invoice[] };
      expect(kept.invoices.map((x) => x.description).sort()).toEqual(['coffee', 'tea']);
      const pids = up.state.processes.map((p) => p.pid);
      expect(await up.stop('SIGKILL')).toBe(null);
      await waitFor(() => processesMentioning(dir).length === 0, { timeoutMs: 20_000, what: `mesh up's programs to exit after it was SIGKILLed (pids ${pids.join(' ')})` });
      up = await startMeshUp({ dir, cwd: work, extra });
      expect(up.stderr()).not.toContain('already running');
      expect((await request(up.gatewayAddr, { path: '/healthz' })).status).toBe(200);
      // A second mesh up beside a live one refuses, and changes nothing.
      const second = await runCli(['up', '--dir', dir, '--port', '0', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0'], 30_000);
      expect(second.code).toBe(1);
      expect(second.stderr).toContain('already running');
      expect(await up.stop('SIGINT')).toBe(0);
      expect(processesMentioning(dir)).toEqual([]);
      passed = true;
    }, 420_000);
  });
}

scenario('embedded store', false);
scenario('etcd', true);
