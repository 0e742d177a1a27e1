// What `mesh up` prints once the shop is healthy: where the gateway is, what to try, how to watch the mesh.
import path from 'node:path';
import type { UpState } from './up-state.js';

export interface BannerInput {
  readonly state: UpState;
  readonly dir: string;
  readonly etcd: readonly string[];
  readonly defaultControlPlane: boolean;
  readonly logs: string;
  readonly canaryFile: string;
}

/** A path as the user would type it from here: relative when that is shorter. */
const shown = (p: string): string => {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && rel.length < p.length ? rel : p;
};

export function banner(b: BannerInput): string {
  const { state } = b;
  const gw = state.gateway!;
  const users = state.instances.find((i) => i.service === 'users')!;
  const flags = [
    ...(b.defaultControlPlane ? [] : [`--control-plane ${state.controlPlane}`]),
    ...(shown(b.dir) === '.mesh' ? [] : [`--dir ${shown(b.dir)}`]),
  ].join(' ');
  const mesh = (cmd: string) => `npx mesh ${cmd}${flags ? ` ${flags}` : ''}`;
  const store = b.etcd.length ? `etcd ${b.etcd.join(',')}` : `embedded store in ${shown(b.dir)}`;
  const canary = shown(b.canaryFile);
  const login = `-d '{"name":"ada","password":"correct-horse"}'`;
  return [
    '',
    `The shop is up: ${gw}`,
    `  control plane ${state.controlPlane} (${store})${state.prometheus ? `, prometheus ${state.prometheus}` : ''}`,
    '',
    '  client ─▶ gateway ─▶ sidecar ══mTLS══▶ sidecar ─▶ users    (HTTP/JSON, SQLite)',
    '                          ╚══════mTLS══▶ sidecar ─▶ billing  (gRPC, SQLite; v1 ×2 90 %, v2 10 %) ─▶ users',
    '',
    'Try it:',
    `  curl -s -XPOST ${gw}/signup ${login}`,
    `  TOKEN=$(curl -s -XPOST ${gw}/login ${login} | sed -E 's/.*"token":"([^"]*)".*/\\1/')`,
    `  curl -s -XPOST ${gw}/invoices -H "authorization: Bearer $TOKEN" -d '{"amount_cents":1250,"description":"coffee"}'`,
    `  curl -s ${gw}/me -H "authorization: Bearer $TOKEN"`,
    `  curl -sN ${gw}/invoices/watch -H "authorization: Bearer $TOKEN"     # streams new invoices`,
    `  curl -si -x http://${users.outbound} -XPOST http://billing/shop.billing.v1.Billing/ListInvoices   # users → billing: 403 access-denied`,
    '',
    'Watch the mesh:',
    `  ${mesh('status')}`,
    `  ${mesh('stat')}`,
    `  ${mesh(`apply -f ${canary}`)}     # billing v2 from 10 % to 50 %`,
    `  pkill -f 'instance billing-v1-1'   # kill a billing instance while traffic flows; mesh up restarts it`,
    '',
    `Logs: ${shown(b.logs)}/   State: ${shown(path.join(b.dir, 'shop', 'up.json'))}   Ctrl-C stops everything.`,
  ].join('\n');
}
