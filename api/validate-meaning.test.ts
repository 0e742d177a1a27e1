// Unit tests for cross-resource validation: exact rendered issues for dangling references, duplicates, weight sums and regexes.
import { describe, it, expect } from 'vitest';
import { fileURLToPath } from 'node:url';
import { formatIssue } from './resources.js';
import type { Issue } from './resources.js';
import { regexProblem, sortIssues, validateAll, validateFiles } from './validate-meaning.js';

/** Appended after each case so case lines start at 1: a Service "billing" whose TrafficPolicy defines subset v1. */
const BASE = `---
apiVersion: mesh/v1
kind: Service
metadata: { name: billing }
---
apiVersion: mesh/v1
kind: TrafficPolicy
metadata: { name: billing }
spec: { service: billing, subsets: [ { name: v1, labels: { version: v1 } } ] }
`;
const doc = (kind: string, name: string, spec: string): string =>
  `apiVersion: mesh/v1\nkind: ${kind}\nmetadata: { name: ${name} }\nspec:\n${spec}---\n`;
const route = (name: string, rules: string, hosts = name): string => doc('Route', name, `  hosts: [${hosts}]\n  rules:\n${rules}`);
const check = (text: string): string[] => validateAll(text + BASE, 'shop.yaml').issues.map(formatIssue);

describe('validateMeaning', () => {
  const cases: [string, string, string[]][] = [
    [
      'unknown service everywhere a service is named',
      doc('Endpoints', 'x', '  service: x\n  endpoints: []\n') +
        doc('AccessPolicy', 'y', '  service: y\n  action: allow\n  rules: []\n') +
        route('r', '    - backends: [ { service: ghost } ]\n      mirror: { service: shadow }\n'),
      [
        'shop.yaml:5 Endpoints/x spec.service: references unknown service "x"',
        'shop.yaml:12 AccessPolicy/y spec.service: references unknown service "y"',
        'shop.yaml:22 Route/r spec.rules[0].backends[0].service: references unknown service "ghost"',
        'shop.yaml:23 Route/r spec.rules[0].mirror.service: references unknown service "shadow"',
      ],
    ],
    [
      'unknown subset',
      route('billing', '    - backends: [ { service: billing, subset: v3 } ]\n'),
      ['shop.yaml:7 Route/billing spec.rules[0].backends[0].subset: references unknown subset "v3" of service "billing"'],
    ],
    [
      'weights not summing to 100',
      route('billing', '    - backends:\n        - { service: billing, weight: 10 }\n        - { service: billing, subset: v1, weight: 80 }\n'),
      ['shop.yaml:7 Route/billing spec.rules[0].backends: weights sum to 90, must be 100'],
    ],
    [
      'duplicate host across Routes',
      route('billing', '    - backends: [ { service: billing } ]\n') + route('other', '    - backends: [ { service: billing } ]\n', 'api, billing'),
      ['shop.yaml:13 Route/other spec.hosts[1]: host "billing" is already routed by Route/billing'],
    ],
    [
      'duplicate name of one kind in one namespace',
      doc('Service', 'billing', '  protocol: grpc\n'),
      ['shop.yaml:10 Service/billing metadata.name: Service/billing is already defined at shop.yaml:3'],
    ],
    [
      'two MeshConfigs, one misnamed',
      doc('MeshConfig', 'default', '  mtls: strict\n') + doc('MeshConfig', 'mesh', '  mtls: permissive\n'),
      [
        'shop.yaml:9 MeshConfig/mesh metadata.name: MeshConfig must be named "default"',
        'shop.yaml:9 MeshConfig/mesh metadata.name: only one MeshConfig is allowed, MeshConfig/default is at shop.yaml:1',
      ],
    ],
    [
      'catastrophic, broken and overlong regexes',
      route(
        'billing',
        `    - match:\n        - pathRegex: "(a+)+$"\n        - headers: { x-a: { regex: "(" } }\n        - pathRegex: "${'a'.repeat(1025)}"\n` +
          '      backends: [ { service: billing } ]\n',
      ),
      [
        'shop.yaml:8 Route/billing spec.rules[0].match[0].pathRegex: regex is too complex (nested quantifiers can backtrack catastrophically)',
        'shop.yaml:9 Route/billing spec.rules[0].match[1].headers.x-a.regex: regex does not compile: unterminated group',
        'shop.yaml:10 Route/billing spec.rules[0].match[2].pathRegex: regex is longer than 1024 characters',
      ],
    ],
    [
      'prefix rewrite on a regex match',
      route('billing', '    - match: [ { pathRegex: "/v[0-9]+" } ]\n      backends: [ { service: billing } ]\n      rewrite: { pathPrefix: / }\n'),
      ['shop.yaml:9 Route/billing spec.rules[0].rewrite.pathPrefix: rewrite.pathPrefix needs path or pathPrefix matches'],
    ],
    [
      'duplicate endpoint address across Endpoints of one service',
      doc('Endpoints', 'a', '  service: billing\n  endpoints: [ { address: "10.0.0.1:80" } ]\n') +
        doc('Endpoints', 'b', '  service: billing\n  endpoints:\n    - address: "10.0.0.2:80"\n    - address: "10.0.0.1:80"\n'),
      ['shop.yaml:15 Endpoints/b spec.endpoints[1].address: address "10.0.0.1:80" is already an endpoint of service "billing" in Endpoints/a'],
    ],
    [
      'two TrafficPolicies for one service',
      doc('TrafficPolicy', 'second', '  service: billing\n'),
      ['shop.yaml:15 TrafficPolicy/billing spec.service: service "billing" already has TrafficPolicy/second at shop.yaml:5'],
    ],
    [
      'a structurally rejected Service is not also reported as unknown',
      doc('Service', 'payments', '  protocol: udp\n') + route('payments', '    - backends: [ { service: payments } ]\n'),
      ['shop.yaml:5 Service/payments spec.protocol: must be one of: http, grpc, tcp'],
    ],
  ];
  it.each(cases)('%s', (_name, text, want) => expect(check(text)).toEqual(want));

  it('accepts the complete example file', async () => {
    const good = fileURLToPath(new URL('../examples/validate/good.yaml', import.meta.url));
    const r = await validateFiles([good]);
    expect(r.issues).toEqual([]);
    expect(r.resources.map((x) => x.kind)).toEqual([
      'Service',
      'Service',
      'Endpoints',
      'Endpoints',
      'Route',
      'TrafficPolicy',
      'TrafficPolicy',
      'AccessPolicy',
      'MeshConfig',
    ]);
  });
});

describe('regexProblem', () => {
  const cases: [string, string | undefined][] = [
    ['^/v[0-9]+/.*$', undefined],
    ['(a+)+$', 'regex is too complex (nested quantifiers can backtrack catastrophically)'],
    ['(x*)*y', 'regex is too complex (nested quantifiers can backtrack catastrophically)'],
    ['[', 'regex does not compile: unterminated character class'],
  ];
  it.each(cases)('%s', (source, want) => expect(regexProblem(source)).toBe(want));
});

describe('sortIssues', () => {
  it('orders by file, then line, keeping the order within a line', () => {
    const i = (file: string, line: number, message: string): Issue => ({ file, line, resource: '', path: '', message });
    const sorted = sortIssues([i('b.yaml', 1, 'x'), i('a.yaml', 9, 'y'), i('a.yaml', 2, 'z'), i('a.yaml', 9, 'w')]);
    expect(sorted.map(formatIssue)).toEqual(['a.yaml:2 z', 'a.yaml:9 y', 'a.yaml:9 w', 'b.yaml:1 x']);
  });
});
