// `mesh status` (sidecars and their sync state, from the Status RPC) and `mesh check` (control plane, store, CA, every sidecar in sync).
import { parseArgs } from 'node:util';
import type { SidecarStatus, StatusResponse } from '../api/protocol.js';
import { describeCertificate } from '../certs/workload.js';
import { COMMON_FLAGS_HELP, CONNECT_OPTIONS, formatTable, humanDuration, outputFormat, runCommand, withConnection, type CommandOutput } from './cp-connect.js';

export const STATUS_USAGE = `mesh status [-o table|json] [--control-plane HOST:PORT] [--dir .mesh]
  a header "control plane ADDR: revision N, store KIND (healthy|DEGRADED)" (and the replicas, when there are several),
  then one row per sidecar in the mesh, whichever replica it streams to:
  SERVICE INSTANCE ADDRESS VERSION SYNC (in sync | pending | NACK: error | unknown: why) CERT-EXPIRES CONNECTED CONTROL-PLANE
  ${COMMON_FLAGS_HELP}`;
export const CHECK_USAGE = `mesh check [--control-plane HOST:PORT] [--dir .mesh]
  exit 0 with "ok: …" lines when every control-plane replica answers, the store is healthy, the CA is valid and every sidecar
  is in sync with no NACK; otherwise exit 1 with one line per failing check on stderr
  ${COMMON_FLAGS_HELP}`;

export function syncState(s: SidecarStatus): string {
  if (s.nackError) return `NACK: ${s.nackError}`;
  if (s.inSync) return 'in sync';
  if (s.unknownReason) return `unknown: ${s.unknownReason}`;
  return 'pending';
}

const sidecarName = (s: SidecarStatus): string => `${s.namespace && s.namespace !== 'default' ? `${s.namespace}/` : ''}${s.service}/${s.instance}`;

function certExpires(unix: number, nowMs: number): string {
  if (!unix) return '-';
  const ms = unix * 1000 - nowMs;
  return ms > 0 ? `in ${humanDuration(ms)}` : `EXPIRED ${humanDuration(-ms)} ago`;
}

function header(address: string, r: StatusResponse): string[] {
  const lines = [`control plane ${address}: revision ${r.currentVersion}, store ${r.store || 'unknown'} (${r.storeHealthy ? 'healthy' : 'DEGRADED'})`];
  if (r.replicas.length > 1) {
    const names = r.replicas.map((x, i) => `${x.name}${i === 0 ? ' (answering)' : ''}${x.error ? ` (DID NOT ANSWER: ${x.error})` : ''}`);
    lines.push(`replicas: ${names.join(', ')}`);
  }
  return lines;
}

export function statusCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values } = parseArgs({ args: argv, options: { ...CONNECT_OPTIONS, output: { type: 'string', short: 'o' } }, strict: true });
    const format = outputFormat(values.output, ['table', 'json'] as const);
    return withConnection(values, env, async (cp) => {
      const r = await cp.call<StatusResponse>('Status', {});
      if (format === 'json') {
        out.stdout(JSON.stringify({ ...r, controlPlane: r.controlPlane || cp.address }, null, 2));
        return 0;
      }
      for (const line of header(cp.address, r)) out.stdout(line);
      if (r.sidecars.length === 0) {
        out.stdout('no sidecars connected');
        return 0;
      }
      const now = Date.now();
      const rows = [...r.sidecars]
        .sort((a, b) => sidecarName(a).localeCompare(sidecarName(b)))
        .map((s) => [
          s.namespace && s.namespace !== 'default' ? `${s.namespace}/${s.service}` : s.service,
          s.instance, s.address, s.ackedVersion || '-', syncState(s), certExpires(s.certExpiryUnix, now),
          s.connectedSinceUnix ? `${humanDuration(now - s.connectedSinceUnix * 1000)} ago` : '-', s.controlPlane || '-',
        ]);
      out.stdout('');
      for (const line of formatTable(['SERVICE', 'INSTANCE', 'ADDRESS', 'VERSION', 'SYNC', 'CERT-EXPIRES', 'CONNECTED', 'CONTROL-PLANE'], rows)) out.stdout(line);
      return 0;
    });
  });
}

/** Exit 0 with `ok: …` lines when everything is healthy; 1 with one line per failing check on stderr otherwise. */
export function checkCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values } = parseArgs({ args: argv, options: CONNECT_OPTIONS, strict: true });
    return withConnection(values, env, async (cp) => {
      const r = await cp.call<StatusResponse>('Status', {});
      const now = Date.now();
      const failures: string[] = [];
      out.stdout(`ok: control plane ${cp.address} answers (revision ${r.currentVersion})`);

      if (r.storeHealthy) out.stdout(`ok: store ${r.store} healthy`);
      else failures.push(`store ${r.store} degraded: the control plane serves its last known revision and cannot write`);

      // The TLS handshake already proved the control plane's certificate chains to our ca.crt; here: same trust domain, CA still valid.
      const ca = describeCertificate(cp.caPem);
      if (r.caTrustDomain && r.caTrustDomain !== cp.trustDomain) {
        failures.push(`CA: control plane uses trust domain "${r.caTrustDomain}", ca.crt in --dir is for "${cp.trustDomain}"`);
      } else if (ca.notAfter.getTime() <= now) {
        failures.push(`CA: ca.crt expired at ${ca.notAfter.toISOString()}`);
      } else {
        out.stdout(`ok: CA for trust domain ${cp.trustDomain} valid until ${ca.notAfter.toISOString()}`);
      }

      for (const x of r.replicas.slice(1)) {
        if (x.error) failures.push(`replica ${x.name} at ${x.address} did not answer: ${x.error}`);
      }
      if (r.replicas.length > 1 && r.replicas.every((x) => !x.error)) out.stdout(`ok: ${r.replicas.length} control-plane replicas answer`);
      const all = r.sidecars;
      let bad = 0;
      for (const s of [...all].sort((a, b) => sidecarName(a).localeCompare(sidecarName(b)))) {
        const why = s.nackError ? `NACK: ${s.nackError}`
          : s.unknownReason ? `sync state unknown: ${s.unknownReason}`
          : !s.inSync ? `pending: sent version ${s.sentVersion || '-'}, acknowledged ${s.ackedVersion || '-'}`
            : s.certExpiryUnix && s.certExpiryUnix * 1000 <= now ? `certificate expired at ${new Date(s.certExpiryUnix * 1000).toISOString()}`
              : undefined;
        if (why) {
          failures.push(`sidecar ${sidecarName(s)}: ${why}`);
          bad++;
        }
      }
      if (all.length === 0) out.stdout('ok: no sidecars connected');
      else if (bad === 0) out.stdout(`ok: ${all.length} ${all.length === 1 ? 'sidecar' : 'sidecars'} in sync`);

      for (const f of failures) out.stderr(f);
      return failures.length ? 1 : 0;
    });
  });
}
