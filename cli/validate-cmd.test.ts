// Tests for `mesh validate`: exact output lines and exit codes on the example files.
import { describe, it, expect } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validateCommand } from './validate-cmd.js';

const example = (name: string): string => fileURLToPath(new URL(`../examples/validate/${name}`, import.meta.url));
const GOOD = example('good.yaml');
const BAD = example('bad.yaml');

async function run(files: string[]): Promise<{ code: number; stdout: string[]; stderr: string[] }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const code = await validateCommand(files, { stdout: (s) => stdout.push(s), stderr: (s) => stderr.push(s) });
  return { code, stdout, stderr };
}

describe('validateCommand', () => {
  const cases: [string, string[], { code: number; stdout: string[]; stderr: string[] }][] = [
    ['a valid file', [GOOD], { code: 0, stdout: [`ok: 9 resources in ${GOOD}`], stderr: [] }],
    [
      'a file with several problems',
      [BAD],
      {
        code: 1,
        stdout: [],
        stderr: [
          `${BAD}:7 Service/billing spec.portocol: unknown field`,
          `${BAD}:23 Route/billing spec.rules[0].match[0].pathRegex: regex is too complex (nested quantifiers can backtrack catastrophically)`,
          `${BAD}:24 Route/billing spec.rules[0].backends: weights sum to 90, must be 100`,
          `${BAD}:26 Route/billing spec.rules[0].backends[1].subset: references unknown subset "v3" of service "billing"`,
          `${BAD}:28 Route/billing spec.rules[1].backends[0].service: references unknown service "payments"`,
          `${BAD}:34 Route/other spec.hosts[0]: host "billing" is already routed by Route/billing`,
          `${BAD}:45 Route/ledger spec.rules[0].backends[0].weight: must be an integer 0..100`,
          `${BAD}:46 Route/ledger spec.rules[0].timeout: must be a duration like 250ms, 2s, 1m`,
          `${BAD}:52 Endpoints/ledger spec.service: references unknown service "ledger"`,
          `${BAD}:57 Gateway/edge kind: unknown kind "Gateway"`,
          `${BAD}:63 yaml: nested mappings are not allowed in compact mappings`,
        ],
      },
    ],
    ['a missing file', ['nope.yaml'], { code: 1, stdout: [], stderr: ['nope.yaml:1 file not found'] }],
    ['no files', [], { code: 1, stdout: [], stderr: ['no files to validate (use -f FILE)'] }],
  ];
  it.each(cases)('%s', async (_name, files, want) => {
    expect(await run(files)).toEqual(want);
  });

  it('resolves references across repeated -f files', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'validate-cmd-'));
    const svc = join(dir, 'svc.yaml');
    const rt = join(dir, 'route.yaml');
    await writeFile(svc, 'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: billing }\n');
    await writeFile(rt, 'apiVersion: mesh/v1\nkind: Route\nmetadata: { name: b }\nspec: { hosts: [b], rules: [ { backends: [ { service: billing } ] } ] }\n');
    try {
      expect(await run([svc, rt])).toEqual({ code: 0, stdout: [`ok: 2 resources in ${svc}, ${rt}`], stderr: [] });
      expect(await run([rt])).toEqual({
        code: 1,
        stdout: [],
        stderr: [`${rt}:4 Route/b spec.rules[0].backends[0].service: references unknown service "billing"`],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('warns, without failing, about an AccessPolicy caller one edit away from a Service (a typo denies the caller it meant)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'validate-cmd-'));
    const file = join(dir, 'authz.yaml');
    await writeFile(file, [
      'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: users }\n---',
      'apiVersion: mesh/v1\nkind: Service\nmetadata: { name: gateway }\n---',
      // A caller with no Service and no near name (a client-only caller) is no warning.
      'apiVersion: mesh/v1\nkind: AccessPolicy\nmetadata: { name: users }\nspec:\n  service: users\n  action: allow\n  rules:\n    - from: [gateway, gatewy, cron]\n    - from: ["*"]\n',
    ].join('\n'));
    try {
      expect(await run([file])).toEqual({
        code: 0,
        stdout: [`ok: 3 resources in ${file}`],
        stderr: [`${file}:16 AccessPolicy/users spec.rules[0].from[1]: warning: no Service "gatewy" in these files (did you mean "gateway"?); as written, it matches only a caller whose certificate names "gatewy"`],
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
