// A tiny validator DSL for resource structure: each validator checks an `unknown`, records every issue by field path, and returns the typed value or undefined.

/** One structural problem, before load.ts turns the path into a file and line. */
export interface SchemaIssue {
  readonly path: string;
  readonly message: string;
}

export interface Ctx {
  readonly issues: SchemaIssue[];
}

/**
 * Returns the typed value, or undefined when the value (or anything inside it) is invalid.
 * A validator never stops at the first problem: it reports everything it can see.
 */
export type Validator<T> = (value: unknown, path: string, ctx: Ctx) => T | undefined;
export type Out<V> = V extends Validator<infer T> ? T : never;

export function createCtx(): Ctx {
  return { issues: [] };
}

export function report(ctx: Ctx, path: string, message: string): undefined {
  ctx.issues.push({ path, message });
  return undefined;
}

/** `spec` + `rules` → `spec.rules`; the root has an empty path. */
export function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export function string(opts: { check?: (s: string) => boolean; message?: string; max?: number } = {}): Validator<string> {
  const max = opts.max ?? 4096;
  return (value, path, ctx) => {
    if (typeof value !== 'string') return report(ctx, path, 'must be a string');
    // A cap on every string keeps one pathological value from bloating every snapshot sent to every sidecar.
    if (value.length > max) return report(ctx, path, `must be at most ${max} characters`);
    if (opts.check && !opts.check(value)) return report(ctx, path, opts.message ?? 'is not valid');
    return value;
  };
}

export function integer(min: number, max: number): Validator<number> {
  return (value, path, ctx) =>
    typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
      ? value
      : report(ctx, path, `must be an integer ${min}..${max}`);
}

export function number(min: number, max: number): Validator<number> {
  // Number.isFinite also rejects YAML's .nan and .inf, which would poison percent and ratio arithmetic.
  return (value, path, ctx) =>
    typeof value === 'number' && Number.isFinite(value) && value >= min && value <= max
      ? value
      : report(ctx, path, `must be a number ${min}..${max}`);
}

export function boolean(): Validator<boolean> {
  return (value, path, ctx) => (typeof value === 'boolean' ? value : report(ctx, path, 'must be true or false'));
}

export function enumOf<const T extends string>(values: readonly T[]): Validator<T> {
  return (value, path, ctx) =>
    typeof value === 'string' && (values as readonly string[]).includes(value)
      ? (value as T)
      : report(ctx, path, `must be one of: ${values.join(', ')}`);
}

/** setTimeout silently fires at once for delays above 2^31-1 ms, so timer-backed durations stay below it. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
// Capped digit counts keep absurd strings cheap to reject; the min/max checks in duration() bound the value.
const DURATION = /^(\d{1,15}(?:\.\d{1,9})?)(ms|s|m|h)$/;

/** `250ms`, `1.5s`, `1m`, `24h` → milliseconds (rounded); undefined for anything else, including bare numbers. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION.exec(text);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNIT_MS[m[2]]);
}

/** The shortest exact spelling of a whole number of milliseconds, the inverse of parseDuration. */
export function formatDuration(ms: number): string {
  for (const unit of ['h', 'm', 's'] as const) {
    if (ms !== 0 && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return ms === 0 ? '0s' : `${ms}ms`;
}

export function duration(opts: { min?: number; max?: number } = {}): Validator<number> {
  const min = opts.min ?? 0;
  const max = opts.max ?? MAX_TIMER_MS;
  return (value, path, ctx) => {
    const ms = typeof value === 'string' ? parseDuration(value) : undefined;
    if (ms === undefined) return report(ctx, path, 'must be a duration like 250ms, 2s, 1m');
    if (ms < min) return report(ctx, path, `must be at least ${formatDuration(min)}`);
    // Whole hours keep the message readable: 2^31-1 ms reads as 596h.
    if (ms > max) return report(ctx, path, `must be at most ${formatDuration(Math.floor(max / 3_600_000) * 3_600_000)}`);
    return ms;
  };
}

export function array<T>(of: Validator<T>, opts: { min?: number; max?: number } = {}): Validator<T[]> {
  const min = opts.min ?? 0;
  const max = opts.max ?? 10_000;
  return (value, path, ctx) => {
    if (!Array.isArray(value)) return report(ctx, path, 'must be a list');
    if (value.length < min) return report(ctx, path, `must have at least ${min} ${min === 1 ? 'entry' : 'entries'}`);
    if (value.length > max) return report(ctx, path, `must have at most ${max} entries`);
    const out: T[] = [];
    let ok = true;
    value.forEach((item, i) => {
      const v = of(item, `${path}[${i}]`, ctx);
      if (v === undefined) ok = false;
      else out.push(v);
    });
    return ok ? out : undefined;
  };
}

/** A string-keyed map such as labels or headers; keys are checked by `key` when given. */
export function record<T>(of: Validator<T>, key?: Validator<string>): Validator<Record<string, T>> {
  return (value, path, ctx) => {
    if (!isPlainObject(value)) return report(ctx, path, 'must be a map');
    const entries: [string, T][] = [];
    let ok = true;
    for (const [k, item] of Object.entries(value)) {
      const p = join(path, k);
      const name = key ? key(k, p, ctx) : k;
      const v = of(item, p, ctx);
      if (name === undefined || v === undefined) ok = false;
      else entries.push([name, v]);
    }
    // fromEntries defines own properties, so a `__proto__` key stays data instead of becoming a prototype.
    return ok ? Object.fromEntries(entries) : undefined;
  };
}

type Fields = Record<string, Validator<unknown>>;
export type ObjectOut<F extends Fields, R extends keyof F> = { [K in R]: Out<F[K]> } & {
  [K in Exclude<keyof F, R>]?: Out<F[K]>;
};

/**
 * A map with known fields. Unknown fields are errors so a typo never silently falls back to a default.
 * A null field counts as absent, as `timeout:` with nothing after it reads like "unset" to anyone editing YAML.
 */
export function object<F extends Fields, R extends keyof F & string = never>(
  fields: F,
  opts: { required?: readonly R[] } = {},
): Validator<ObjectOut<F, R>> {
  const required = new Set<string>(opts.required ?? []);
  return (value, path, ctx) => {
    if (!isPlainObject(value)) return report(ctx, path, 'must be a map');
    const out: Record<string, unknown> = {};
    let ok = true;
    for (const [k, item] of Object.entries(value)) {
      // hasOwn, not `in`: a field named `constructor` or `toString` must not find Object.prototype.
      if (!Object.hasOwn(fields, k)) {
        report(ctx, join(path, k), 'unknown field');
        ok = false;
        continue;
      }
      if (item === null || item === undefined) continue;
      const v = fields[k](item, join(path, k), ctx);
      if (v === undefined) ok = false;
      else out[k] = v;
    }
    for (const k of required) {
      if (value[k] !== null && value[k] !== undefined) continue;
      report(ctx, join(path, k), 'is required');
      ok = false;
    }
    return ok ? (out as ObjectOut<F, R>) : undefined;
  };
}

/** Runs `fn` on a valid value: for defaults, renames (`timeout` → `timeoutMs`) and checks that span several fields. */
export function map<T, U>(v: Validator<T>, fn: (value: T, path: string, ctx: Ctx) => U | undefined): Validator<U> {
  return (value, path, ctx) => {
    const out = v(value, path, ctx);
    return out === undefined ? undefined : fn(out, path, ctx);
  };
}
