#!/usr/bin/env node
// The `mesh` command: dispatches to one file per command and turns usage errors into a one-line message and exit 2.
import { controlPlaneCommand, CONTROL_PLANE_USAGE } from './control-plane-cmd.js';
import { sidecarCommand, SIDECAR_USAGE } from './sidecar-cmd.js';
import { UsageError } from './args.js';
import { validateCommand } from './validate-cmd.js';
import { certsCommand, CERTS_USAGE } from './certs-cmd.js'; // certs: registered by the certs/ issue
import { parseArgs } from 'node:util';

const USAGE = `mesh — the Trellis service mesh

Commands:
  mesh validate -f FILE [-f FILE…]     check resources offline; exit 1 with FILE:LINE Kind/name field.path: message lines
  ${CONTROL_PLANE_USAGE}
  ${SIDECAR_USAGE}
  ${CERTS_USAGE}

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
    default:
      throw new UsageError(`unknown command "${command}" (see mesh --help)`);
  }
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
