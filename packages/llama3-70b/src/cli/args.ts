// Command-line parsing in msModelSlim's style (argparse): `--flag value`, `--flag=value`,
// `--list a b c` (nargs '+'), booleans spelled `True` / `False`. Not a general-purpose parser.

import { CliError } from './errors';

export type FlagKind = 'string' | 'int' | 'number' | 'bool' | 'list' | 'switch';

export interface FlagSpec {
  readonly kind: FlagKind;
  readonly help: string;
  /** Allowed values for 'string' flags. */
  readonly choices?: readonly string[];
  /** Flags that may be repeated accumulate values (only 'list' and 'string' with repeatable). */
  readonly repeatable?: boolean;
}

export type FlagValue = string | number | boolean | string[];
export type ParsedFlags = Map<string, FlagValue>;

/** msModelSlim's `cmd_bool` accepts exactly `True` or `False`; we also take lower case. */
export function parseBool(flag: string, raw: string): boolean {
  if (raw === 'True' || raw === 'true') return true;
  if (raw === 'False' || raw === 'false') return false;
  throw new CliError('E_USAGE', `--${flag} expects True or False, got '${raw}'`);
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length][b.length];
}

function suggest(name: string, known: readonly string[]): string {
  const best = known
    .map((k) => [k, levenshtein(name.replace(/-/g, '_'), k)] as const)
    .sort((x, y) => x[1] - y[1])[0];
  return best && best[1] <= 3 ? ` (did you mean --${best[0]}?)` : '';
}

/**
 * Parses argv against a flag table. Positional arguments are returned separately.
 * Unknown flags, missing values and malformed numbers are `E_USAGE` errors naming the flag.
 */
export function parseFlags(
  argv: readonly string[],
  spec: Readonly<Record<string, FlagSpec>>,
): { flags: ParsedFlags; positionals: string[] } {
  const flags: ParsedFlags = new Map();
  const positionals: string[] = [];
  const known = Object.keys(spec);
  let i = 0;
  while (i < argv.length) {
    const token = argv[i++];
    if (!token.startsWith('--') || token === '--') {
      positionals.push(token);
      continue;
    }
    const eq = token.indexOf('=');
    const name = (eq >= 0 ? token.slice(2, eq) : token.slice(2)).replace(/-/g, '_');
    const inline = eq >= 0 ? token.slice(eq + 1) : undefined;
    const s = spec[name];
    if (!s) throw new CliError('E_USAGE', `unknown flag --${name}${suggest(name, known)}`);
    if (s.kind === 'switch') {
      flags.set(name, inline === undefined ? true : parseBool(name, inline));
      continue;
    }
    if (s.kind === 'list') {
      const values: string[] = inline !== undefined ? [inline] : [];
      while (i < argv.length && !argv[i].startsWith('--')) values.push(argv[i++]);
      if (values.length === 0) throw new CliError('E_USAGE', `--${name} expects at least one value`);
      const prev = flags.get(name);
      flags.set(name, Array.isArray(prev) ? [...prev, ...values] : values);
      continue;
    }
    let raw = inline;
    if (raw === undefined) {
      if (i >= argv.length || (argv[i].startsWith('--') && s.kind !== 'number' && s.kind !== 'int')) {
        throw new CliError('E_USAGE', `--${name} expects a value`);
      }
      raw = argv[i++];
    }
    switch (s.kind) {
      case 'bool':
        flags.set(name, parseBool(name, raw));
        break;
      case 'int': {
        if (!/^-?\d+$/.test(raw)) throw new CliError('E_USAGE', `--${name} expects an integer, got '${raw}'`);
        flags.set(name, Number(raw));
        break;
      }
      case 'number': {
        const v = Number(raw);
        if (raw.trim() === '' || !Number.isFinite(v)) throw new CliError('E_USAGE', `--${name} expects a number, got '${raw}'`);
        flags.set(name, v);
        break;
      }
      case 'string': {
        if (s.choices && !s.choices.includes(raw)) {
          throw new CliError('E_USAGE', `--${name} expects one of ${s.choices.join(', ')}, got '${raw}'`);
        }
        if (s.repeatable) {
          const prev = flags.get(name);
          flags.set(name, Array.isArray(prev) ? [...prev, raw] : [raw]);
        } else {
          flags.set(name, raw);
        }
        break;
      }
    }
  }
  return { flags, positionals };
}

/** Renders a flag table as help text. */
export function formatFlagHelp(spec: Readonly<Record<string, FlagSpec>>): string {
  const rows = Object.entries(spec).map(([name, s]) => {
    const arg = s.kind === 'switch' ? '' : s.kind === 'list' ? ' V [V ...]' : s.kind === 'bool' ? ' True|False' : s.choices ? ` ${s.choices.join('|')}` : ' V';
    return [`  --${name}${arg}`, s.help] as const;
  });
  const width = Math.min(44, Math.max(...rows.map((r) => r[0].length)) + 2);
  return rows.map(([l, h]) => (l.length >= width ? `${l}\n${' '.repeat(width)}${h}` : l.padEnd(width) + h)).join('\n');
}
