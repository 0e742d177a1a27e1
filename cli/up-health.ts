// `mesh up`'s readiness: every sidecar ready and in sync, the gateway's sidecar sees every backend, `mesh check` passes.
import { request } from 'undici';
import type { StatusResponse } from '../api/protocol.js';
import { checkCommand } from './status-cmd.js';
import { withConnection, type CommandOutput } from './cp-connect.js';
import type { UpInstance } from './up-state.js';

export interface HealthInput {
  readonly instances: readonly UpInstance[];
  readonly controlPlane: string;
  readonly dir: string;
  readonly gateway: string;
  readonly prometheus?: string;
  readonly timeoutMs: number;
}

async function get(url: string): Promise<{ status: number; body: string }> {
  const r = await request(url, { headersTimeout: 2_000, bodyTimeout: 2_000 });
  return { status: r.statusCode, body: await r.body.text() };
}

/** Every endpoint of `service` in the gateway sidecar's active snapshot, as "version" labels. */
function versions(dump: string, service: string): string[] {
  const snap = (JSON.parse(dump) as { snapshot?: { services?: { name: string; endpoints: { labels?: Record<string, string> }[] }[] } }).snapshot;
  return (snap?.services?.find((s) => s.name === service)?.endpoints ?? []).map((e) => e.labels?.version ?? '?').sort();
}

/** Resolves once; or throws after `timeoutMs` naming what is still not right. */
export async function waitHealthy(h: HealthInput): Promise<void> {
  const deadline = Date.now() + h.timeoutMs;
  const flags = { 'control-plane': h.controlPlane, dir: h.dir };
  const expected = new Set(h.instances.map((i) => `${i.service}/${i.instance}`));
  const gatewaySidecar = h.instances.find((i) => i.service === 'gateway')!;
  const wantBackends = { users: h.instances.filter((i) => i.service === 'users').length, billing: h.instances.filter((i) => i.service === 'billing').length };
  let why = 'not checked yet';
  const checks: (() => Promise<string | undefined>)[] = [
    async () => {
      for (const i of h.instances) {
        const r = await get(`http://${i.admin}/ready`);
        if (r.status !== 200) return `sidecar ${i.instance} is not ready: ${r.body.trim()}`;
      }
      return undefined;
    },
    async () => {
      const r = await withConnection(flags, process.env, (cp) => cp.call<StatusResponse>('Status', {}));
      const seen = new Set(r.sidecars.filter((s) => s.inSync && !s.nackError).map((s) => `${s.service}/${s.instance}`));
      const missing = [...expected].filter((e) => !seen.has(e));
      return missing.length ? `not yet in sync with the control plane: ${missing.join(', ')}` : undefined;
    },
    async () => {
      const dump = (await get(`http://${gatewaySidecar.admin}/config_dump`)).body;
      for (const [svc, n] of Object.entries(wantBackends)) {
        const got = versions(dump, svc);
        if (got.length < n) return `the gateway's sidecar knows ${got.length} of ${n} ${svc} endpoints`;
      }
      return undefined;
    },
    async () => {
      const lines: string[] = [];
      const out: CommandOutput = { stdout: () => undefined, stderr: (s) => lines.push(s) };
      return (await checkCommand(['--control-plane', h.controlPlane, '--dir', h.dir], out)) === 0 ? undefined : `mesh check: ${lines.join('; ')}`;
    },
    async () => ((await get(`${h.gateway}/healthz`)).status === 200 ? undefined : 'the gateway does not answer /healthz yet'),
    async () => (!h.prometheus || (await get(`${h.prometheus}/-/ready`)).status === 200 ? undefined : 'prometheus is not ready yet'),
  ];
  for (;;) {
    let failed: string | undefined;
    for (const check of checks) {
      try {
        failed = await check();
      } catch (err) {
        failed = (err as Error).message;
      }
      if (failed) break;
    }
    if (!failed) return;
    why = failed;
    if (Date.now() > deadline) throw new Error(`the shop did not become healthy within ${h.timeoutMs / 1000} s: ${why}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
