// JSON text as Python's `json` module writes it (json.dumps, ensure_ascii=True) and a strict JSON
// parser that reports line/column and can keep object key order in a Map. Not a general JSON library.

import { FormatError } from './errors';

/**
 * A number that must print as a Python float even when its value is integral
 * (JavaScript cannot tell `2` from `2.0`): `pyFloat(500000)` prints `500000.0`.
 */
export class PythonFloat {
  constructor(readonly value: number) {}
}

export function pyFloat(value: number): PythonFloat {
  return new PythonFloat(value);
}

/**
 * Python's `repr(float)`: shortest round-trip digits (the same digits JavaScript picks),
 * fixed notation when the decimal exponent is in [-4, 16), otherwise `d.ddde±XX`.
 */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // toExponential() without an argument yields the shortest digits that round-trip.
  const [mantissa, expText] = Math.abs(x).toExponential().split('e');
  const exp = Number(expText);
  const digits = mantissa.replace('.', '');
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = `${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
    return `${sign}${m}e${e}`;
  }
  if (exp >= 0) {
    const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
    const frac = digits.slice(exp + 1);
    return `${sign}${intPart}.${frac === '' ? '0' : frac}`;
  }
  return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
}

function pythonNumber(x: number): string {
  // Integral values print as Python ints (exact digits, as int(x) would); see PythonFloat.
  if (Number.isInteger(x)) return BigInt(x).toString();
  return pythonFloatRepr(x);
}

/** Python's ensure_ascii string encoder: everything outside ' '..'~' is escaped, per UTF-16 unit. */
export function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c <= 0x7e) {
      if (c === 0x22) out += '\\"';
      else if (c === 0x5c) out += '\\\\';
      else out += s[i];
      continue;
    }
    switch (c) {
      case 0x08: out += '\\b'; break;
      case 0x09: out += '\\t'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0d: out += '\\r'; break;
      default: out += `\\u${c.toString(16).padStart(4, '0')}`;
    }
  }
  return `${out}"`;
}

function isPlainObject(v: object): v is Record<string, unknown> {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function pythonKey(k: unknown, where: string): string {
  // Python's json turns int/float/bool/None keys into strings; anything else is a TypeError.
  if (typeof k === 'string') return k;
  if (typeof k === 'number') return pythonNumber(k);
  if (typeof k === 'bigint') return k.toString();
  if (typeof k === 'boolean') return k ? 'true' : 'false';
  if (k === null) return 'null';
  throw new FormatError('E_JSON_TYPE', `pythonJsonDumps: key of type ${typeof k} at ${where} is not serializable (expected string, number, boolean or null)`);
}

/**
 * Byte-identical to Python `json.dumps(value, indent=indent)` (ensure_ascii=True, sort_keys=False).
 * Without indent the separators are ", " and ": "; with indent "," + newline and ": ".
 * Objects keep insertion order; use a Map when keys look like array indices (JS objects reorder those).
 * Integral numbers print as ints (JS cannot tell 2 from 2.0): wrap in `pyFloat()` to force `2.0`.
 * NaN/Infinity print as Python does (allow_nan=True). `undefined`, functions, symbols and class
 * instances are rejected (E_JSON_TYPE), as are circular references (E_JSON_CIRCULAR).
 */
export function pythonJsonDumps(value: unknown, indent?: number): string {
  const indentUnit = indent === undefined ? undefined : ' '.repeat(Math.max(0, Math.trunc(indent)));
  const itemSep = indentUnit === undefined ? ', ' : ',';
  const active = new Set<object>();

  const encode = (v: unknown, level: number, where: string): string => {
    if (v === null) return 'null';
    if (v === true) return 'true';
    if (v === false) return 'false';
    if (typeof v === 'string') return pythonJsonString(v);
    if (typeof v === 'number') return pythonNumber(v);
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof PythonFloat) return pythonFloatRepr(v.value);
    if (typeof v !== 'object') {
      throw new FormatError('E_JSON_TYPE', `pythonJsonDumps: value of type ${typeof v} at ${where} is not JSON serializable`);
    }
    let entries: [string, unknown][] | undefined;
    let items: readonly unknown[] | undefined;
    if (Array.isArray(v)) items = v;
    else if (v instanceof Map) entries = [...v.entries()].map(([k, x]) => [pythonKey(k, where), x]);
    else if (isPlainObject(v)) entries = Object.entries(v);
    else {
      throw new FormatError('E_JSON_TYPE', `pythonJsonDumps: object of class ${v.constructor?.name ?? '?'} at ${where} is not JSON serializable`);
    }
    const count = items ? items.length : entries!.length;
    if (count === 0) return items ? '[]' : '{}';
    if (active.has(v)) throw new FormatError('E_JSON_CIRCULAR', `pythonJsonDumps: circular reference detected at ${where}`);
    active.add(v);
    const open = indentUnit === undefined ? '' : `\n${indentUnit.repeat(level + 1)}`;
    const sep = indentUnit === undefined ? itemSep : `${itemSep}${open}`;
    const close = indentUnit === undefined ? '' : `\n${indentUnit.repeat(level)}`;
    const parts = items
      ? items.map((x, i) => encode(x, level + 1, `${where}[${i}]`))
      : entries!.map(([k, x]) => `${pythonJsonString(k)}: ${encode(x, level + 1, `${where}.${k}`)}`);
    active.delete(v);
    return items ? `[${open}${parts.join(sep)}${close}]` : `{${open}${parts.join(sep)}${close}}`;
  };

  return encode(value, 0, '$');
}

// ---------------------------------------------------------------------------------------------
// Strict JSON parser (RFC 8259): exact line/column on errors, optional Map objects, duplicate-key policy.

export interface ParseJsonOptions {
  /** Build objects as Map (keeps every key's order exactly) instead of plain objects. */
  maps?: boolean;
  /** Python's json.load keeps the last duplicate; 'error' rejects duplicates. */
  duplicateKeys?: 'last' | 'error';
  /** Error code for syntax errors (the caller's vocabulary, e.g. E_CONFIG_JSON). */
  code?: string;
}

export class JsonSyntaxError extends FormatError {
  readonly line: number;
  readonly column: number;
  constructor(code: string, message: string, file: string, line: number, column: number) {
    super(code, message, { file });
    this.line = line;
    this.column = column;
  }
}

/** Nesting limit of the parser: deeper input is rejected rather than overflowing the stack. */
const MAX_JSON_DEPTH = 512;

export function parseJson(text: string, file: string, options: ParseJsonOptions = {}): unknown {
  const code = options.code ?? 'E_JSON';
  const useMaps = options.maps === true;
  const rejectDuplicates = options.duplicateKeys === 'error';
  let pos = text.charCodeAt(0) === 0xfeff ? 1 : 0;

  const fail = (what: string, at = pos): never => {
    let line = 1;
    let lineStart = 0;
    for (let i = 0; i < at && i < text.length; i++) {
      if (text.charCodeAt(i) === 0x0a) {
        line++;
        lineStart = i + 1;
      }
    }
    const column = at - lineStart + 1;
    throw new JsonSyntaxError(code, `${file}:${line}:${column}: invalid JSON: ${what}`, file, line, column);
  };
  const describe = (at: number): string => (at >= text.length ? 'end of input' : JSON.stringify(text[at]));
  const skipWs = (): void => {
    while (pos < text.length) {
      const c = text.charCodeAt(pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) pos++;
      else break;
    }
  };
  const expect = (ch: string): void => {
    if (text[pos] !== ch) fail(`expected ${JSON.stringify(ch)}, found ${describe(pos)}`);
    pos++;
  };

  const parseString = (): string => {
    const start = pos;
    expect('"');
    let out = '';
    let runStart = pos;
    for (;;) {
      if (pos >= text.length) fail('unterminated string', start);
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(runStart, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail(`control character U+${c.toString(16).padStart(4, '0')} in string`);
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      out += text.slice(runStart, pos);
      const e = text[pos + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) {
        out += simple[e];
        pos += 2;
      } else if (e === 'u') {
        const hex = text.slice(pos + 2, pos + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('invalid \\u escape');
        out += String.fromCharCode(parseInt(hex, 16));
        pos += 6;
      } else {
        fail(`invalid escape \\${e ?? ''}`);
      }
      runStart = pos;
    }
  };

  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const parseNumber = (): number => {
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (!m) return fail(`unexpected ${describe(pos)}`);
    pos += m[0].length;
    return Number(m[0]);
  };

  const parseValue = (depth: number): unknown => {
    if (depth > MAX_JSON_DEPTH) fail(`nesting deeper than ${MAX_JSON_DEPTH}`);
    skipWs();
    const c = text[pos];
    if (c === '{') return parseObject(depth);
    if (c === '[') return parseArray(depth);
    if (c === '"') return parseString();
    if (c === '-' && text.startsWith('-Infinity', pos)) {
      pos += 9;
      return -Infinity;
    }
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return parseNumber();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    // Python's json also accepts NaN/Infinity/-Infinity (its own dumps writes them).
    for (const [word, v] of [['NaN', NaN], ['Infinity', Infinity]] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    return fail(`unexpected ${describe(pos)}`);
  };

  const parseArray = (depth: number): unknown[] => {
    expect('[');
    const out: unknown[] = [];
    skipWs();
    if (text[pos] === ']') {
      pos++;
      return out;
    }
    for (;;) {
      out.push(parseValue(depth + 1));
      skipWs();
      if (text[pos] === ',') {
        pos++;
        continue;
      }
      if (text[pos] === ']') {
        pos++;
        return out;
      }
      fail(`expected "," or "]", found ${describe(pos)}`);
    }
  };

  const parseObject = (depth: number): unknown => {
    expect('{');
    const map = new Map<string, unknown>();
    skipWs();
    if (text[pos] === '}') {
      pos++;
      return useMaps ? map : {};
    }
    for (;;) {
      skipWs();
      if (text[pos] !== '"') fail(`expected a string key, found ${describe(pos)}`);
      const keyAt = pos;
      const key = parseString();
      skipWs();
      expect(':');
      const value = parseValue(depth + 1);
      if (rejectDuplicates && map.has(key)) fail(`duplicate key ${JSON.stringify(key)}`, keyAt);
      // Like Python's dict: a repeated key keeps its first position and takes the last value.
      map.set(key, value);
      skipWs();
      if (text[pos] === ',') {
        pos++;
        continue;
      }
      if (text[pos] === '}') {
        pos++;
        break;
      }
      fail(`expected "," or "}", found ${describe(pos)}`);
    }
    if (useMaps) return map;
    const obj: Record<string, unknown> = {};
    for (const [k, v] of map) Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
    return obj;
  };

  const value = parseValue(0);
  skipWs();
  if (pos < text.length) fail(`unexpected ${describe(pos)} after the JSON value`);
  return value;
}
