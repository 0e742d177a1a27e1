// `mesh validate -f FILE...`: runs the same structural and semantic checks as the control plane and prints every issue.
import { formatIssue } from '../api/resources.js';
import { validateFiles, validateWarnings } from '../api/validate-meaning.js';

/** Each call is one line, given without its trailing newline. */
export interface CommandOutput {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

/**
 * Exit code 0 when every file is valid (warnings, if any, on stderr); 1 with one `FILE:LINE Kind/name path: message` line
 * per issue otherwise.
 */
export async function validateCommand(files: string[], out: CommandOutput): Promise<number> {
  if (files.length === 0) {
    out.stderr('no files to validate (use -f FILE)');
    return 1;
  }
  const { resources, issues } = await validateFiles(files);
  for (const issue of issues) out.stderr(formatIssue(issue));
  if (issues.length > 0) return 1;
  for (const warning of validateWarnings(resources)) out.stderr(formatIssue(warning));
  const n = resources.length;
  out.stdout(`ok: ${n} ${n === 1 ? 'resource' : 'resources'} in ${files.join(', ')}`);
  return 0;
}
