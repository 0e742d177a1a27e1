// `mesh token create --service NAME`: a join token that may only obtain NAME's identity. Only the token goes to stdout,
// so `mesh token create --service users > users.token` gives a file for `mesh sidecar --token-file`.
import { parseArgs } from 'node:util';
import type { TokenResponse } from '../api/protocol.js';
import { parseDurationFlag, UsageError } from './args.js';
import { COMMON_FLAGS_HELP, CONNECT_OPTIONS, humanDuration, runCommand, withConnection, type CommandOutput } from './cp-connect.js';

export const TOKEN_USAGE = `mesh token create --service NAME [--namespace default] [--ttl 24h] [--control-plane HOST:PORT] [--dir .mesh]
  prints only the token (mesh token create --service users > users.token); its expiry goes to stderr
  ${COMMON_FLAGS_HELP}`;

export function tokenCommand(argv: string[], out: CommandOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return runCommand(out, async () => {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub.startsWith('-')) throw new UsageError('mesh token needs a subcommand: create');
    if (sub !== 'create') throw new UsageError(`unknown subcommand "token ${sub}" (expected create)`);
    const { values } = parseArgs({
      args: rest,
      options: { ...CONNECT_OPTIONS, service: { type: 'string' }, namespace: { type: 'string', short: 'n', default: 'default' }, ttl: { type: 'string', default: '24h' } },
      strict: true,
    });
    if (!values.service) throw new UsageError('--service is required');
    const ttlMs = parseDurationFlag('ttl', values.ttl);
    if (ttlMs < 1000) throw new UsageError(`--ttl: must be at least 1s, got "${values.ttl}"`);
    return withConnection(values, env, async (cp) => {
      const r = await cp.call<TokenResponse>('CreateToken', { service: values.service, namespace: values.namespace, ttlSeconds: Math.ceil(ttlMs / 1000) });
      out.stdout(r.token);
      const expires = new Date(r.expiresUnix * 1000);
      out.stderr(`join token for ${values.namespace}/${values.service} expires ${expires.toISOString()} (in ${humanDuration(expires.getTime() - Date.now())})`);
      return 0;
    });
  });
}
