// Connecting the admin commands to the control plane: --control-plane / MESH_CONTROL_PLANE, --dir (ca.crt, admin.token), MESH_TOKEN,
// a short deadline per call, and every failure turned into one line (unreachable, refused token, the server's own message).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { call, createMeshClient, type MeshClient } from '../api/cp-client.js';
import { CA_FILES } from '../certs/ca.js';
import { isValidTrustDomain } from '../certs/spiffe.js';
import { describeCertificate } from '../certs/workload.js';
import { parseHostPort, UsageError } from './args.js';

/** Each call is one line, given without its trailing newline. */
export interface CommandOutput {
  stdout(s: string): void;
  stderr(s: string): void;
}

export const DEFAULT_CONTROL_PLANE = '127.0.0.1:15010';
/** Per call: an admin command that cannot reach the control plane says so within seconds. */
export const CALL_TIMEOUT_MS = 5_000;

export const COMMON_FLAGS_HELP = '--control-plane defaults to $MESH_CONTROL_PLANE, else 127.0.0.1:15010; --dir holds ca.crt and admin.token ($MESH_TOKEN overrides the token)';

/** The flags every admin command takes, for parseArgs. */
export const CONNECT_OPTIONS = {
  'control-plane': { type: 'string' },
  dir: { type: 'string', default: '.mesh' },
} as const;

export interface ConnectFlags {
  readonly 'control-plane'?: string;
  readonly dir?: string;
}

/** A failure already phrased for the user: printed as `mesh: <message>`, the command exits with `exitCode`. */
export class CommandError extends Error {
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

export interface Connection {
  readonly address: string;
  readonly trustDomain: string;
  readonly caPem: string;
  /** One admin RPC with the deadline and token; rejects with a CommandError. */
  call<Res>(method: string, req: unknown): Promise<Res>;
  close(): void;
}

/** The trust domain a CA certificate names: its `spiffe://<td>` URI SAN, else its subject O=. */
export function trustDomainOfCa(pem: string): string | undefined {
  const d = describeCertificate(pem);
  const fromSan = d.spiffeId && /^spiffe:\/\/([^/]+)\/?$/.exec(d.spiffeId)?.[1];
  if (fromSan && isValidTrustDomain(fromSan)) return fromSan;
  const o = d.issuer.split(', ').find((p) => p.startsWith('O='))?.slice(2);
  return o !== undefined && isValidTrustDomain(o) ? o : undefined;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CommandError(`${path}: ${(err as Error).message}`);
  }
}

/** The gRPC "No connection established. Last error: Error: connect ECONNREFUSED … (timestamp)" text, shortened to its cause. */
function unreachableReason(details: string): string {
  const cause = details
    .replace(/^No connection established\.\s*/i, '')
    .replace(/^Last error:\s*/i, '')
    .replace(/^(?:Error:\s*)+/, '')
    .replace(/\.?\s*Resolution note:.*$/s, '')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\s*$/, '')
    .trim();
  if (!cause) return details;
  // A server certificate our ca.crt does not trust: most often the wrong --dir.
  return /certificate|identity is not/i.test(cause) ? `${cause} (is --dir the directory this control plane uses?)` : cause;
}

/** Builds the client from the common flags; reads nothing from the network yet. */
export async function connect(flags: ConnectFlags, env: NodeJS.ProcessEnv = process.env): Promise<Connection> {
  const address = flags['control-plane'] ?? (env.MESH_CONTROL_PLANE || DEFAULT_CONTROL_PLANE);
  parseHostPort('control-plane', address);
  const dir = flags.dir ?? '.mesh';
  const caPath = join(dir, CA_FILES.cert);
  const caPem = await readText(caPath);
  if (caPem === undefined) {
    throw new CommandError(`${caPath} not found: use --dir with the directory the control plane was started with (it holds ${CA_FILES.cert} and ${CA_FILES.token})`);
  }
  let trustDomain: string | undefined;
  try {
    trustDomain = trustDomainOfCa(caPem);
  } catch (err) {
    throw new CommandError(`${caPath}: ${(err as Error).message}`);
  }
  if (!trustDomain) throw new CommandError(`${caPath} names no trust domain (no spiffe://<td> URI SAN or O=<td>)`);

  let token = env.MESH_TOKEN?.trim();
  let tokenSource = 'MESH_TOKEN';
  if (!token) {
    const tokenPath = join(dir, CA_FILES.token);
    token = (await readText(tokenPath))?.trim();
    tokenSource = tokenPath;
    if (!token) throw new CommandError(`no admin token: ${tokenPath} is missing or empty and MESH_TOKEN is not set`);
  }

  const client: MeshClient = createMeshClient({ address, caPem, trustDomain, adminToken: token });
  const adminToken = token;
  return {
    address,
    trustDomain,
    caPem,
    async call<Res>(method: string, req: unknown): Promise<Res> {
      try {
        return await call<Res>(client, method, req, { adminToken, timeoutMs: CALL_TIMEOUT_MS });
      } catch (err) {
        const e = err as Error & { code?: number };
        // Server-side failures also arrive as UNAVAILABLE; only a channel that never got ready means we did not reach it.
        const ready = client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
        if (!ready && (e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED)) {
          const reason = e.code === grpc.status.DEADLINE_EXCEEDED ? `no answer within ${CALL_TIMEOUT_MS / 1000} s` : unreachableReason(e.message);
          throw new CommandError(`control plane ${address} unreachable: ${reason}`);
        }
        if (e.code === grpc.status.DEADLINE_EXCEEDED) throw new CommandError(`control plane ${address} did not answer ${method} within ${CALL_TIMEOUT_MS / 1000} s`);
        if (e.code === grpc.status.UNAUTHENTICATED || e.code === grpc.status.PERMISSION_DENIED) {
          throw new CommandError(`control plane ${address} refused the admin token from ${tokenSource}: ${e.message}`);
        }
        throw new CommandError(e.message);
      }
    },
    close() {
      client.close();
    },
  };
}

/** Runs `fn` with a connection and closes it, whatever happens. */
export async function withConnection<T>(flags: ConnectFlags, env: NodeJS.ProcessEnv, fn: (c: Connection) => Promise<T>): Promise<T> {
  const c = await connect(flags, env);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/**
 * The error policy of every admin command: usage mistakes → `mesh: …` and exit 2, CommandErrors → `mesh: …` and their exit code
 * (`errorExit` overrides it, for `mesh diff` whose 1 means "changes"). Anything else is a bug and propagates.
 */
export async function runCommand(out: CommandOutput, fn: () => Promise<number>, errorExit?: number): Promise<number> {
  try {
    return await fn();
  } catch (err) {
    const e = err as Error & { code?: string };
    if (err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS')) {
      out.stderr(`mesh: ${e.message}`);
      return 2;
    }
    if (err instanceof CommandError) {
      out.stderr(`mesh: ${e.message}`);
      return errorExit ?? err.exitCode;
    }
    throw err;
  }
}

/** Rows aligned in columns two spaces apart; the last column is not padded. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ').trimEnd());
}

/** `-o` values a command accepts. */
export function outputFormat<T extends string>(value: string | undefined, allowed: readonly T[]): T {
  const v = value ?? allowed[0];
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`-o: expected ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

/** A duration for humans: 45s, 12m, 3h5m, 2d4h. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d}d${h % 24}h` : `${d}d`;
}
