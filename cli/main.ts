#!/usr/bin/env node
// The `mesh` command: dispatches to one file per command and turns usage errors into a one-line message and exit 2.
import { controlPlaneCommand, CONTROL_PLANE_USAGE } from './control-plane-cmd.js';
import { sidecarCommand, SIDECAR_USAGE } from './sidecar-cmd.js';
import { UsageError } from './args.js';
import { validateCommand } from './validate-cmd.js';
import { certsCommand, CERTS_USAGE } from './certs-cmd.js'; // certs: registered by the certs/ issue
import { parseArgs } from 'node:util';
import { applyCommand, APPLY_USAGE, deleteCommand, DELETE_USAGE, diffCommand, DIFF_USAGE, getCommand, GET_USAGE } from './resources-cmd.js';
import { tokenCommand, TOKEN_USAGE } from './token-cmd.js';
import { checkCommand, CHECK_USAGE, statusCommand, STATUS_USAGE } from './status-cmd.js';
import { statCommand, STAT_USAGE } from './stat-cmd.js';
import { upCommand, UP_USAGE } from './up-cmd.js';

const USAGE = `mesh — the Trellis service mesh

Commands:
  ${UP_USAGE}
  mesh validate -f FILE [-f FILE…]     check resources offline; exit 1 with FILE:LINE Kind/name field.path: message lines
  ${CONTROL_PLANE_USAGE}
  ${SIDECAR_USAGE}
  ${CERTS_USAGE}
  mesh token create --service NAME [--ttl 24h]                       a join token that may only obtain NAME's identity
  mesh apply -f FILE [--dry-run]   mesh delete -f FILE | KIND NAME   mesh diff -f FILE
  mesh get KIND [NAME] [-o table|yaml|json]
  mesh status [-o table|json]      sidecars: service, instance, address, config version, in sync / NACK error, cert expiry, connected since
  mesh stat [SERVICE] [-o table|json] [--window 1m]   per service (and route): requests/s, success rate, p50/p95/p99 latency
  mesh check                       control plane, store, CA, every sidecar in sync; exit 1 with the reason otherwise
  (these take --control-plane HOST:PORT, default $MESH_CONTROL_PLANE or 127.0.0.1:15010, and --dir .mesh for ca.crt and
   admin.token, which $MESH_TOKEN overrides; "mesh diff" exits 0 without changes, 1 with changes, 2 on issues or errors)

Run "mesh COMMAND --help" for one command.`;

const out = {
  stdout: (s: string) => process.stdout.write(s + '\n'),
  stderr: (s: string) => process.stderr.write(s + '\n'),
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    out.stdout(USAGE);
    return 0;
  }
  const ADMIN_HELP: Record<string, string> = {
    apply: APPLY_USAGE, delete: DELETE_USAGE, diff: DIFF_USAGE, get: GET_USAGE, token: TOKEN_USAGE, status: STATUS_USAGE, stat: STAT_USAGE, check: CHECK_USAGE, up: UP_USAGE,
  };
  if ((rest.includes('--help') || rest.includes('-h')) && ADMIN_HELP[command]) {
    out.stdout(ADMIN_HELP[command]);
    return 0;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    // certs: its usage is registered here by the certs/ issue.
    out.stdout(command === 'certs' ? CERTS_USAGE : command === 'sidecar' ? SIDECAR_USAGE : command === 'validate' ? 'mesh validate -f FILE [-f FILE…]' : USAGE);
    return 0;
  }
  switch (command) {
    case 'validate': {
      const { values } = parseArgs({ args: rest, options: { file: { type: 'string', short: 'f', multiple: true } }, strict: true });
      return validateCommand(values.file ?? [], out);
    }
    case 'sidecar':
      return sidecarCommand(rest);
    case 'control-plane':
      return controlPlaneCommand(rest);
    // certs: registered by the certs/ issue (mesh certs init | inspect).
    case 'certs':
      return certsCommand(rest, out);
    case 'apply':
      return applyCommand(rest, out);
    case 'delete':
      return deleteCommand(rest, out);
    case 'diff':
      return diffCommand(rest, out);
    case 'get':
      return getCommand(rest, out);
    case 'token':
      return tokenCommand(rest, out);
    case 'status':
      return statusCommand(rest, out);
    case 'stat':
      return statCommand(rest, out);
    case 'check':
      return checkCommand(rest, out);
    case 'up':
      return upCommand(rest, out);
    default:
      throw new UsageError(`unknown command "${command}" (see mesh --help)`);
  }
}

// `mesh get … | head` closes our stdout early: that is the reader's choice, not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

// Started by `mesh up` with an IPC channel: when that channel closes, our launcher is gone (even by SIGKILL), so stop
// the way a Ctrl-C would. unref(): the channel alone must not keep a finished command alive.
if (process.channel) {
  process.channel.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    const e = err as Error & { code?: string };
    // parseArgs reports unknown or malformed flags with ERR_PARSE_ARGS_* codes: those are usage errors too.
    if (err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS')) {
      out.stderr(`mesh: ${e.message}`);
      process.exitCode = 2;
    } else {
      out.stderr(`mesh: ${e.stack ?? e.message}`);
      process.exitCode = 1;
    }
  },
);
