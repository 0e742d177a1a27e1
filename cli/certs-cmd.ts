// `mesh certs init|inspect`: creates the mesh CA and admin token in --dir, and shows a certificate's identity and validity.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { CA_FILES, initCa } from '../certs/ca.js';
import { isValidTrustDomain } from '../certs/spiffe.js';
import { describeCertificate } from '../certs/workload.js';
import { parseHostPort, UsageError } from './args.js';

export const CERTS_USAGE = `mesh certs init [--dir .mesh] [--trust-domain mesh.local]   create the mesh CA and the admin token
  mesh certs inspect FILE | --admin HOST:PORT | --service NAME      SPIFFE id, serial, not-before/after`;

export interface CommandOutput {
  stdout(s: string): void;
  stderr(s: string): void;
}

const ADMIN_TIMEOUT_MS = 5_000;

export async function certsCommand(argv: string[], out: CommandOutput): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'init':
        return await init(rest, out);
      case 'inspect':
        return await inspect(rest, out);
      case undefined:
        throw new UsageError('mesh certs needs a subcommand: init or inspect');
      default:
        throw new UsageError(`unknown subcommand "certs ${sub}" (expected init or inspect)`);
    }
  } catch (err) {
    const e = err as Error & { code?: string };
    // parseArgs reports unknown or malformed flags with ERR_PARSE_ARGS_* codes: usage errors, like ours.
    if (err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS')) {
      out.stderr(`mesh: ${e.message}`);
      return 2;
    }
    throw err;
  }
}

async function init(argv: string[], out: CommandOutput): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { dir: { type: 'string', default: '.mesh' }, 'trust-domain': { type: 'string', default: 'mesh.local' } },
    strict: true,
  });
  const dir = values.dir;
  const trustDomain = values['trust-domain'];
  if (!isValidTrustDomain(trustDomain)) {
    throw new UsageError(`--trust-domain: expected a lowercase DNS name like mesh.local, got "${trustDomain}"`);
  }
  let result;
  try {
    result = await initCa(dir, trustDomain);
  } catch (err) {
    out.stderr(`mesh: ${(err as Error).message}`);
    return 1;
  }
  if (result.created) {
    out.stdout(`created mesh CA for trust domain "${trustDomain}" in ${dir} (${CA_FILES.cert}, ${CA_FILES.key}, ${CA_FILES.token})`);
  } else {
    // Saying so matters: the operator asked for another trust domain and is not getting it.
    const note = result.ca.trustDomain === trustDomain ? '' : `, not the requested "${trustDomain}"`;
    out.stdout(`mesh CA already exists in ${dir} (trust domain "${result.ca.trustDomain}"${note}); nothing changed`);
  }
  return 0;
}

/** The lines both inspect forms print; fields a source does not know are left out rather than guessed. */
interface Summary {
  spiffeId: string | undefined;
  serial: string;
  notBefore: Date;
  notAfter: Date;
  issuer?: string;
  isCa?: boolean;
  rotations?: number;
}

function printSummary(s: Summary, out: CommandOutput): void {
  out.stdout(`spiffe id: ${s.spiffeId ?? '(none)'}`);
  out.stdout(`serial: ${s.serial}`);
  out.stdout(`not before: ${s.notBefore.toISOString()}`);
  out.stdout(`not after: ${s.notAfter.toISOString()}`);
  if (s.issuer !== undefined) out.stdout(`issuer: ${s.issuer}`);
  if (s.isCa !== undefined) out.stdout(`ca: ${s.isCa ? 'yes' : 'no'}`);
  if (s.rotations !== undefined) out.stdout(`rotations: ${s.rotations}`);
}

async function inspect(argv: string[], out: CommandOutput): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { admin: { type: 'string' }, service: { type: 'string' } },
    allowPositionals: true,
    strict: true,
  });
  const forms = [positionals.length > 0, values.admin !== undefined, values.service !== undefined].filter(Boolean).length;
  if (forms !== 1 || positionals.length > 1) throw new UsageError('mesh certs inspect takes one of FILE, --admin HOST:PORT or --service NAME');
  if (values.service !== undefined) {
    out.stderr('mesh certs inspect --service needs the control plane, which this build does not have yet; use FILE or --admin');
    return 2;
  }
  if (values.admin !== undefined) return inspectAdmin(values.admin, out);

  const file = positionals[0];
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    out.stderr(code === 'ENOENT' ? `mesh: ${file}: file not found` : `mesh: ${file}: ${(err as Error).message}`);
    return 1;
  }
  try {
    printSummary(describeCertificate(pem), out);
  } catch (err) {
    out.stderr(`mesh: ${file}: ${(err as Error).message}`);
    return 1;
  }
  return 0;
}

function toDate(v: unknown): Date | undefined {
  const d = typeof v === 'string' || typeof v === 'number' ? new Date(v) : undefined;
  return d !== undefined && Number.isFinite(d.getTime()) ? d : undefined;
}

/** The sidecar admin's `GET /certs` body, checked field by field: a wrong shape is a one-line error, not a crash. */
function parseAdminCerts(body: unknown): Summary | string {
  if (typeof body !== 'object' || body === null) return 'response is not a JSON object';
  const b = body as Record<string, unknown>;
  const notBefore = toDate(b.notBefore);
  const notAfter = toDate(b.notAfter);
  if (b.spiffeId !== undefined && b.spiffeId !== null && typeof b.spiffeId !== 'string') return 'spiffeId is not a string';
  if (typeof b.serial !== 'string') return 'serial is missing';
  if (!notBefore || !notAfter) return 'notBefore/notAfter are missing or not dates';
  return {
    spiffeId: typeof b.spiffeId === 'string' ? b.spiffeId : undefined,
    serial: b.serial,
    notBefore,
    notAfter,
    issuer: typeof b.issuer === 'string' ? b.issuer : undefined,
    isCa: typeof b.isCa === 'boolean' ? b.isCa : typeof b.ca === 'boolean' ? b.ca : undefined,
    rotations: typeof b.rotations === 'number' ? b.rotations : undefined,
  };
}

async function inspectAdmin(address: string, out: CommandOutput): Promise<number> {
  const { host, port } = parseHostPort('admin', address);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/certs`;
  let body: unknown;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(ADMIN_TIMEOUT_MS) });
    if (res.status !== 200) {
      out.stderr(`mesh: GET ${url}: HTTP ${res.status}`);
      return 1;
    }
    body = await res.json();
  } catch (err) {
    const e = err as Error & { cause?: { code?: string; message?: string } };
    const reason = e.name === 'TimeoutError' ? `no answer within ${ADMIN_TIMEOUT_MS / 1000} s` : e.cause?.code ?? e.cause?.message ?? e.message;
    out.stderr(`mesh: GET ${url}: ${reason}`);
    return 1;
  }
  const summary = parseAdminCerts(body);
  if (typeof summary === 'string') {
    out.stderr(`mesh: GET ${url}: ${summary}`);
    return 1;
  }
  printSummary(summary, out);
  return 0;
}
