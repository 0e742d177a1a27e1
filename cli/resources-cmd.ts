// `mesh apply | delete | diff | get`: resources on the control plane, validated there with the same api/ code as `mesh validate`.
import { readFile } from 'node:fs/promises';
import { text as readStream } from 'node:stream/consumers';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import type { ApplyResponse, DiffResponse, GetResponse } from '../api/protocol.js';
import { KINDS } from '../api/resources.js';
import { canonicalKind } from '../control-plane/resources-api.js';
import { UsageError } from './args.js';
import {
  CommandError, COMMON_FLAGS_HELP, CONNECT_OPTIONS, formatTable, outputFormat, runCommand, withConnection, type CommandOutput,
} from './cp-connect.js';

export const APPLY_USAGE = `mesh apply -f FILE [-f FILE…] [--dry-run] [--control-plane HOST:PORT] [--dir .mesh]
  one Apply per file (- is stdin), each all or nothing: prints "created|configured|unchanged Kind/name" lines;
  on issues prints FILE:LINE Kind/name field.path: message lines on stderr, writes nothing from that file and exits 1
  ${COMMON_FLAGS_HELP}`;
export const DELETE_USAGE = `mesh delete -f FILE | KIND NAME [--namespace default] [--control-plane HOST:PORT] [--dir .mesh]
  prints "deleted Kind/name" or "not found Kind/name"; exit 1 with the issues when deleting would leave the mesh invalid
  ${COMMON_FLAGS_HELP}`;
export const DIFF_USAGE = `mesh diff -f FILE [-f FILE…] [--control-plane HOST:PORT] [--dir .mesh]
  prints what apply would change, per resource; like diff(1) it exits 0 when nothing would change,
  1 when something would, and 2 on validation issues or errors
  ${COMMON_FLAGS_HELP}`;
export const GET_USAGE = `mesh get KIND|all [NAME] [--namespace NS] [-o table|yaml|json] [--control-plane HOST:PORT] [--dir .mesh]
  table: KIND NAMESPACE NAME SUMMARY; -o yaml prints multi-document YAML that mesh apply -f takes back; -o json a JSON array.
  Without --namespace every namespace is listed; exit 1 when a named resource does not exist
  ${COMMON_FLAGS_HELP}`;

const COMMON = CONNECT_OPTIONS;

interface SourceFile {
  readonly name: string;
  readonly yaml: string;
}

/** All files are read before anything is sent, so a typo in the last -f changes nothing. `-` is stdin. */
async function readFiles(files: readonly string[] | undefined, command: string): Promise<SourceFile[]> {
  if (!files?.length) throw new UsageError(`mesh ${command} needs -f FILE`);
  const out: SourceFile[] = [];
  for (const name of files) {
    if (name === '-') {
      out.push({ name: 'stdin', yaml: await readStream(process.stdin) });
      continue;
    }
    try {
      out.push({ name, yaml: await readFile(name, 'utf8') });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CommandError(code === 'ENOENT' ? `${name}: file not found` : `${name}: ${(err as Error).message}`);
    }
  }
  return out;
}

/** Exit 0 when every file applied; 1 when any file had issues (that file wrote nothing) or on errors. */
export function applyCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values } = parseArgs({
      args: argv, options: { ...COMMON, file: { type: 'string', short: 'f', multiple: true }, 'dry-run': { type: 'boolean', default: false } }, strict: true,
    });
    const files = await readFiles(values.file, 'apply');
    return withConnection(values, env, async (cp) => {
      let code = 0;
      // One Apply per file: each is validated against what is stored (and the files applied before it) and written all or nothing.
      for (const f of files) {
        const r = await cp.call<ApplyResponse>('Apply', { yaml: f.yaml, file: f.name, dryRun: values['dry-run'] });
        for (const line of r.results) out.stdout(line);
        for (const issue of r.issues) out.stderr(issue);
        if (r.issues.length) code = 1;
      }
      return code;
    });
  });
}

/** `-f FILE` deletes the resources the file names; `KIND NAME` one resource. Prints `deleted …` / `not found …`; exit 1 on issues. */
export function deleteCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values, positionals } = parseArgs({
      args: argv, options: { ...COMMON, file: { type: 'string', short: 'f', multiple: true }, namespace: { type: 'string', short: 'n', default: 'default' } },
      allowPositionals: true, strict: true,
    });
    const byFile = values.file !== undefined;
    if (byFile === (positionals.length > 0)) throw new UsageError('mesh delete takes -f FILE or KIND NAME, not both');
    if (!byFile && positionals.length !== 2) throw new UsageError(`mesh delete KIND NAME: expected 2 arguments, got ${positionals.length}`);
    const requests = byFile
      ? (await readFiles(values.file, 'delete')).map((f) => ({ kind: '', name: '', namespace: '', yaml: f.yaml, file: f.name }))
      : [{ kind: positionals[0], name: positionals[1], namespace: values.namespace, yaml: '', file: '' }];
    return withConnection(values, env, async (cp) => {
      let code = 0;
      for (const req of requests) {
        const r = await cp.call<ApplyResponse>('Delete', req);
        for (const line of r.results) out.stdout(line);
        for (const issue of r.issues) out.stderr(issue);
        if (r.issues.length) code = 1;
      }
      return code;
    });
  });
}

/** Like diff(1): exit 0 when nothing would change, 1 when something would, 2 on issues or any error. */
export function diffCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values } = parseArgs({ args: argv, options: { ...COMMON, file: { type: 'string', short: 'f', multiple: true } }, strict: true });
    const files = await readFiles(values.file, 'diff');
    return withConnection(values, env, async (cp) => {
      let changed = false;
      let failed = false;
      for (const f of files) {
        const r = await cp.call<DiffResponse>('Diff', { yaml: f.yaml, file: f.name, dryRun: true });
        for (const change of r.changes) out.stdout(change);
        for (const issue of r.issues) out.stderr(issue);
        if (r.issues.length) failed = true;
        if (r.changes.length) changed = true;
      }
      return failed ? 2 : changed ? 1 : 0;
    });
  }, 2);
}

/** A resource as stored: what the user applied (defaults are not filled in). */
interface StoredResource {
  kind: string;
  metadata?: { name?: string; namespace?: string };
  spec?: Record<string, unknown>;
  [k: string]: unknown;
}

const str = (v: unknown, fallback: string): string => (typeof v === 'string' && v ? v : fallback);

/** One short line per kind for the table; defaults (DESIGN.md §3) where the resource leaves a field out. */
export function summary(r: StoredResource): string {
  const s = r.spec ?? {};
  switch (r.kind) {
    case 'Service':
      return `protocol=${str(s.protocol, 'http')}`;
    case 'Endpoints': {
      const n = Array.isArray(s.endpoints) ? s.endpoints.length : 0;
      return `endpoints=${n}`;
    }
    case 'Route':
      return `hosts=${Array.isArray(s.hosts) ? s.hosts.join(',') : ''}`;
    case 'TrafficPolicy':
      return `service=${str(s.service, '?')} lb=${str((s.loadBalancer as { policy?: unknown } | undefined)?.policy, 'ewma')}`;
    case 'AccessPolicy':
      return `service=${str(s.service, '?')} action=${str(s.action, '?')}`;
    case 'MeshConfig':
      return `mtls=${str(s.mtls, 'strict')}`;
    default:
      return '';
  }
}

/** Table (default), multi-document YAML that `mesh apply -f` takes back, or a JSON array. */
export function getCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const { values, positionals } = parseArgs({
      args: argv, options: { ...COMMON, namespace: { type: 'string', short: 'n' }, output: { type: 'string', short: 'o' } },
      allowPositionals: true, strict: true,
    });
    const format = outputFormat(values.output, ['table', 'yaml', 'json'] as const);
    if (positionals.length === 0) throw new UsageError(`mesh get needs a KIND (one of ${KINDS.join(', ')}, or all)`);
    if (positionals.length > 2) throw new UsageError(`mesh get KIND [NAME]: too many arguments`);
    const [kindArg, name = ''] = positionals;
    const kind = kindArg.toLowerCase() === 'all' ? '' : kindArg;
    if (!kind && name) throw new UsageError('mesh get all takes no NAME');
    const namespace = values.namespace ?? '';
    return withConnection(values, env, async (cp) => {
      const r = await cp.call<GetResponse>('Get', { kind, name, namespace });
      const resources = JSON.parse(r.resourcesJson || '[]') as StoredResource[];
      if (name && resources.length === 0) {
        throw new CommandError(`${canonicalKind(kind) ?? kind}/${name} not found${namespace ? ` in namespace ${namespace}` : ''}`);
      }
      if (format === 'json') {
        out.stdout(JSON.stringify(resources, null, 2));
      } else if (format === 'yaml') {
        if (resources.length) out.stdout(resources.map((res) => stringify(res)).join('---\n').trimEnd());
      } else if (resources.length === 0) {
        out.stderr(`no resources found${namespace ? ` in namespace ${namespace}` : ''}`);
      } else {
        const rows = resources.map((res) => [res.kind, str(res.metadata?.namespace, 'default'), str(res.metadata?.name, ''), summary(res)]);
        for (const line of formatTable(['KIND', 'NAMESPACE', 'NAME', 'SUMMARY'], rows)) out.stdout(line);
      }
      return 0;
    });
  });
}
