// Seeded mutations of raw HTTP/1.1 inputs for bench/fuzz.ts: a small PRNG, byte-level and HTTP-aware mutators, and how an input is cut into writes. Input i of a run depends only on the seed and i.

export interface Rng {
  /** In [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

/** mulberry32, seeded from (seed, index) so that input i is the same whatever order the workers ask in. */
export function rngFor(seed: number, index: number): Rng {
  let a = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = 0; i < 4; i++) next();
  const int = (n: number): number => Math.floor(next() * n);
  return { next, int, pick: (items) => items[int(items.length)], chance: (p) => next() < p };
}

export interface Mutated {
  readonly bytes: Buffer;
  /** Write sizes when the input goes out in fragments; undefined: one write. */
  readonly fragments: readonly number[] | undefined;
  /** The mutations applied, for the findings. */
  readonly ops: readonly string[];
}

const SPECIAL = ['\r', '\n', '\r\n', '\0', ' ', '\t', ':', '%', '%00', '%2f', '%2e%2e', '..', '/', '\\', ';', ',', '#', '?', '\x7f', '\xff', '\v', '\r\n\r\n', '\r\n ', 'chunked', 'HTTP/1.1'];
const NUMBERS = ['0', '1', '-1', '+1', '00', '2147483648', '4294967296', '4294967297', '9007199254740993', '18446744073709551616', '99999999999999999999', '0x10', '1e3', ' 1', '1 ', '16777217', 'ffffffff', 'FFFFFFFFFFFFFFFFF'];

type Mutator = (b: Buffer, rng: Rng, seeds: readonly Buffer[]) => Buffer;

const at = (b: Buffer, rng: Rng): number => rng.int(b.length + 1);
const ins = (b: Buffer, pos: number, x: Buffer): Buffer => Buffer.concat([b.subarray(0, pos), x, b.subarray(pos)]);

/** Where the head ends (the mutators that know HTTP work there), or the whole input. */
function headEnd(b: Buffer): number {
  const i = b.indexOf('\r\n\r\n');
  return i < 0 ? b.length : i;
}

/** CRLF-separated lines of the head, as [start, end) offsets, the request line excluded. */
function headerLines(b: Buffer): [number, number][] {
  const end = headEnd(b);
  const lines: [number, number][] = [];
  let pos = b.indexOf('\r\n');
  while (pos >= 0 && pos < end) {
    const next = b.indexOf('\r\n', pos + 2);
    const stop = next < 0 || next > end ? end : next;
    if (stop > pos + 2) lines.push([pos + 2, stop]);
    pos = next;
  }
  return lines;
}

const MUTATORS: Readonly<Record<string, Mutator>> = {
  bitflip: (b, rng) => {
    if (b.length === 0) return b;
    const c = Buffer.from(b);
    const i = rng.int(c.length);
    c[i] ^= 1 << rng.int(8);
    return c;
  },
  byte: (b, rng) => {
    if (b.length === 0) return b;
    const c = Buffer.from(b);
    c[rng.int(c.length)] = rng.chance(0.5) ? rng.int(256) : rng.pick([0, 9, 10, 13, 32, 34, 37, 44, 47, 58, 59, 92, 127, 255]);
    return c;
  },
  special: (b, rng) => ins(b, rng.chance(0.7) ? rng.int(headEnd(b) + 1) : at(b, rng), Buffer.from(rng.pick(SPECIAL), 'latin1')),
  delete: (b, rng) => {
    const i = at(b, rng);
    return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + rng.int(16))]);
  },
  duplicate: (b, rng) => {
    const i = at(b, rng);
    const run = b.subarray(i, i + 1 + rng.int(64));
    return ins(b, rng.chance(0.5) ? i : at(b, rng), run);
  },
  random: (b, rng) => ins(b, at(b, rng), Buffer.from(Array.from({ length: 1 + rng.int(8) }, () => rng.int(256)))),
  splice: (b, rng, seeds) => {
    const o = rng.pick(seeds);
    return Buffer.concat([b.subarray(0, at(b, rng)), o.subarray(rng.int(o.length + 1))]);
  },
  pipeline: (b, rng, seeds) => Buffer.concat([b, rng.pick(seeds)]),
  swapLines: (b, rng) => {
    const lines = headerLines(b);
    if (lines.length < 2) return b;
    const [x, y] = [rng.pick(lines), rng.pick(lines)].sort((p, q) => p[0] - q[0]);
    if (x[0] === y[0]) return b;
    return Buffer.concat([b.subarray(0, x[0]), b.subarray(y[0], y[1]), b.subarray(x[1], y[0]), b.subarray(x[0], x[1]), b.subarray(y[1])]);
  },
  repeatLine: (b, rng) => {
    const lines = headerLines(b);
    if (lines.length === 0) return b;
    const [s, e] = rng.pick(lines);
    const copy = Buffer.concat([b.subarray(s, e), Buffer.from('\r\n')]);
    return ins(b, rng.chance(0.5) ? s : rng.pick(lines)[0], Buffer.concat(Array.from({ length: 1 + rng.int(3) }, () => copy)));
  },
  number: (b, rng) => {
    // Content-Length values, chunk sizes, versions, ports: any run of hex digits.
    const text = b.toString('latin1');
    const runs = [...text.matchAll(/[0-9A-Fa-f]+/g)];
    if (runs.length === 0) return b;
    const m = rng.pick(runs);
    const n = parseInt(m[0], /^\d+$/.test(m[0]) ? 10 : 16);
    const grown = rng.chance(0.5) ? rng.pick(NUMBERS) : String(rng.pick([n + 1, n * 2, n * 1024, n - 1, n + 65536]));
    return Buffer.concat([b.subarray(0, m.index), Buffer.from(grown, 'latin1'), b.subarray((m.index ?? 0) + m[0].length)]);
  },
  caseFlip: (b, rng) => {
    const c = Buffer.from(b);
    for (let k = 0; k < 4; k++) {
      const i = rng.int(Math.max(1, headEnd(c)));
      if ((c[i] | 0x20) >= 0x61 && (c[i] | 0x20) <= 0x7a) c[i] ^= 0x20;
    }
    return c;
  },
  truncate: (b, rng) => b.subarray(0, at(b, rng)),
};

const NAMES = Object.keys(MUTATORS);

/** Input i of a run: a seed with one to four stacked mutations, capped at `maxBytes`, perhaps cut into fragments. */
export function mutate(seeds: readonly Buffer[], rng: Rng, maxBytes: number): Mutated {
  let bytes = rng.pick(seeds);
  const ops: string[] = [];
  const n = 1 + rng.int(4);
  for (let i = 0; i < n; i++) {
    const name = rng.pick(NAMES);
    ops.push(name);
    bytes = MUTATORS[name](bytes, rng, seeds);
    if (bytes.length > maxBytes) bytes = bytes.subarray(0, maxBytes);
  }
  let fragments: number[] | undefined;
  if (rng.chance(0.3) && bytes.length > 1) {
    fragments = Array.from({ length: 1 + rng.int(8) }, () => 1 + rng.int(Math.max(1, bytes.length >> 2)));
    ops.push(`fragments(${fragments.join(',')})`);
  }
  return { bytes, fragments, ops };
}
