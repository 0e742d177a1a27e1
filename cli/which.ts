// Finding a program: the first executable of a name on PATH (then the usual system folders), or the file an env var names.
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Debian puts its packages' programs here (nginx in sbin); a PATH trimmed by a service manager or CI may not list them. */
const SYSTEM_DIRS = ['/usr/bin', '/usr/local/bin', '/usr/sbin', '/usr/local/sbin'];

export function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * `override` (a path from an env var such as $ETCD_BIN) wins when set, and then must itself be executable;
 * otherwise the first executable `name` on PATH or in the system folders.
 */
export function which(name: string, override?: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (override) return isExecutable(override) ? override : undefined;
  for (const dir of (env.PATH ?? '').split(path.delimiter).concat(SYSTEM_DIRS)) {
    const file = dir ? path.join(dir, name) : '';
    if (file && isExecutable(file)) return file;
  }
  return undefined;
}
