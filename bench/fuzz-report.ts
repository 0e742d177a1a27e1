// The fuzzer's summary (bench/fuzz.ts): counts, findings and the status histogram, as the markdown written to bench/results/fuzz-latest.md.

export interface Finding {
  readonly kind: string;
  readonly category: 'crash' | 'desync' | 'other';
  readonly what: string;
  /** Where the input was saved, relative to test/hardening/corpus/; undefined past the per-kind cap. */
  readonly file: string | undefined;
  readonly index: number | undefined;
}

export interface FuzzStats {
  readonly seed: number;
  readonly seconds: number;
  readonly concurrency: number;
  seeds: number;
  /** Inputs sent and judged. */
  inputs: number;
  /** Inputs not sent: empty, or (a prefix of) the HTTP/2 preface. */
  skipped: number;
  /** Inputs lost to a restart (no connection). */
  lost: number;
  crashes: number;
  restarts: number;
  maxRssBytes: number;
  elapsedMs: number;
  /** First final status per input ("closed", "timeout", ... when there was none). */
  readonly statuses: Map<string, number>;
  readonly findings: Finding[];
}

const mb = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MB`;

export function renderReport(s: FuzzStats): string {
  const desync = s.findings.filter((f) => f.category === 'desync');
  const other = s.findings.filter((f) => f.category === 'other');
  const rate = s.elapsedMs > 0 ? (s.inputs / (s.elapsedMs / 1000)).toFixed(0) : '0';
  const lines = [
    '# HTTP/1.1 fuzz run (bench/fuzz.ts)',
    '',
    `\`npm run fuzz -- --seconds ${s.seconds} --seed ${s.seed} --concurrency ${s.concurrency}\` (${new Date().toISOString()})`,
    '',
    '| | |',
    '|---|---|',
    `| seeds (corpus cases, outbound) | ${s.seeds} |`,
    `| inputs sent | ${s.inputs} |`,
    `| inputs/s | ${rate} |`,
    `| skipped (empty or HTTP/2 preface) / lost to restarts | ${s.skipped} / ${s.lost} |`,
    `| crashes (sidecar exited) | ${s.crashes} |`,
    `| desync findings | ${desync.length} |`,
    `| other findings | ${other.length} |`,
    `| max sidecar RSS | ${mb(s.maxRssBytes)} |`,
    '',
    '## First status per input',
    '',
    '| status | inputs |',
    '|---|---|',
    ...[...s.statuses.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `| ${k} | ${v} |`),
    '',
  ];
  if (s.findings.length > 0) {
    lines.push('## Findings', '', '| category | kind | input | saved | what |', '|---|---|---|---|---|');
    for (const f of s.findings.slice(0, 200)) {
      lines.push(`| ${f.category} | ${f.kind} | ${f.index ?? ''} | ${f.file ?? ''} | ${f.what.replace(/\|/g, '\\|').slice(0, 300)} |`);
    }
    if (s.findings.length > 200) lines.push('', `… and ${s.findings.length - 200} more.`);
    lines.push('');
  }
  return lines.join('\n');
}
