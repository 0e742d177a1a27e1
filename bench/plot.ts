// The latency-percentile plot (bench/results/latency.svg): percentile on a log x axis (50, 90, 99, 99.9, …), latency in ms on y, one line per scenario.
import type { ScenarioName } from './types.js';

export interface PlotLine {
  readonly name: ScenarioName;
  /** [percentile, ms] */
  readonly points: readonly [number, number][];
}

const COLORS: Record<ScenarioName, string> = {
  direct: '#7f7f7f',
  trellis: '#1f77b4',
  'trellis-notrace': '#9467bd',
  'nginx-pair': '#2ca02c',
  'http-proxy-pair': '#d62728',
};

const W = 760;
const H = 440;
const M = { left: 64, right: 170, top: 40, bottom: 52 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

/** "Nines": 50 → 0.30, 90 → 1, 99 → 2, 99.9 → 3. The x position is linear in this. */
const nines = (p: number): number => -Math.log10(1 - p / 100);

/** A round step giving about `n` ticks up to `max`. */
function niceStep(max: number, n: number): number {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function percentileLabel(n: number): string {
  return n < 1 ? '50' : (100 - 10 ** (2 - n)).toFixed(Math.max(0, n - 2));
}

export function latencySvg(title: string, lines: readonly PlotLine[]): string {
  const all = lines.flatMap((l) => l.points);
  const xMin = nines(50);
  const xMax = Math.max(2, Math.ceil(Math.max(...all.map(([p]) => nines(p)), 2) - 1e-6));
  const yTop = Math.max(0.1, ...all.map(([, ms]) => ms)) * 1.05;
  const yStep = niceStep(yTop, 6);
  const yMax = Math.ceil(yTop / yStep) * yStep;
  const x = (p: number): number => M.left + ((nines(p) - xMin) / (xMax - xMin)) * PW;
  const y = (ms: number): number => M.top + PH - (ms / yMax) * PH;

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${M.left}" y="22" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  for (let v = 0; v <= yMax + yStep / 2; v += yStep) {
    const yy = y(v).toFixed(1);
    parts.push(`<line x1="${M.left}" x2="${M.left + PW}" y1="${yy}" y2="${yy}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${M.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${Number(v.toPrecision(6))}</text>`);
  }
  for (let n = 0; n <= xMax; n++) {
    const p = n === 0 ? 50 : 100 - 10 ** (2 - n);
    const xx = x(p).toFixed(1);
    parts.push(`<line x1="${xx}" x2="${xx}" y1="${M.top}" y2="${M.top + PH}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${xx}" y="${M.top + PH + 16}" text-anchor="middle">${percentileLabel(n)}</text>`);
  }
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${M.left + PW / 2}" y="${H - 12}" text-anchor="middle">percentile (log scale of 1/(1−p))</text>`);
  parts.push(`<text transform="translate(16 ${M.top + PH / 2}) rotate(-90)" text-anchor="middle">latency (ms)</text>`);

  lines.forEach((l, i) => {
    const color = COLORS[l.name];
    const d = l.points.map(([p, ms], j) => `${j === 0 ? 'M' : 'L'}${x(p).toFixed(1)},${y(ms).toFixed(1)}`).join(' ');
    parts.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
    const ly = M.top + 10 + i * 20;
    parts.push(`<line x1="${M.left + PW + 14}" x2="${M.left + PW + 38}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    parts.push(`<text x="${M.left + PW + 44}" y="${ly}" dominant-baseline="middle">${esc(l.name)}</text>`);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
