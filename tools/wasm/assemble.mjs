// A minimal WebAssembly text assembler for exactly the subset of WAT that the repo's .wat files use
// (wabt is not in the workspace). Not a general WAT parser: unknown syntax is an error, never a guess.
//
// Supported: one (module) with (memory (export "n")? min) and (func $f (export "n")? (param $p t)*
// (result t*)? (local $l t)* body); instructions flat or folded; block/loop/if with an optional
// label and one (result t); numeric immediates in decimal or hex (hex floats like 0x1p-23 too);
// v128.const with an i8x16/i16x8/i32x4/f32x4/f64x2 shape; i8x16.shuffle; lane indices; memarg
// offset=/align=. Opcodes: the WebAssembly core spec and the SIMD proposal's BinarySIMD.md table.
//
// Usage: node tools/wasm/assemble.mjs <in.wat> <out.ts>   writes a TS module exporting the bytes
//        node tools/wasm/assemble.mjs <in.wat>            prints that module to stdout
// As a module: assemble(text) -> Uint8Array, tsModule(bytes, source) -> string.

import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const VALTYPE = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

// Immediate kinds: '' none, 'local', 'func', 'label', 'i32', 'i64', 'f32', 'f64', 'mem' (memarg, natural
// alignment log2 given), 'lane', 'v128', 'shuffle', 'zero' (a reserved 0x00 byte: memory.size/grow).
// [bytes of the opcode, immediate kind, natural alignment (for 'mem')]
const OPS = {
  unreachable: [[0x00], ''],
  nop: [[0x01], ''],
  return: [[0x0f], ''],
  br: [[0x0c], 'label'],
  br_if: [[0x0d], 'label'],
  call: [[0x10], 'func'],
  drop: [[0x1a], ''],
  select: [[0x1b], ''],
  'local.get': [[0x20], 'local'],
  'local.set': [[0x21], 'local'],
  'local.tee': [[0x22], 'local'],
  'i32.load': [[0x28], 'mem', 2],
  'f32.load': [[0x2a], 'mem', 2],
  'f64.load': [[0x2b], 'mem', 3],
  'i32.load8_u': [[0x2d], 'mem', 0],
  'i32.load16_u': [[0x2f], 'mem', 1],
  'i32.store': [[0x36], 'mem', 2],
  'f32.store': [[0x38], 'mem', 2],
  'f64.store': [[0x39], 'mem', 3],
  'i32.store8': [[0x3a], 'mem', 0],
  'memory.size': [[0x3f], 'zero'],
  'memory.grow': [[0x40], 'zero'],
  'i32.const': [[0x41], 'i32'],
  'f32.const': [[0x43], 'f32'],
  'f64.const': [[0x44], 'f64'],
  'i32.eqz': [[0x45], ''],
  'i32.eq': [[0x46], ''],
  'i32.ne': [[0x47], ''],
  'i32.lt_s': [[0x48], ''],
  'i32.lt_u': [[0x49], ''],
  'i32.gt_s': [[0x4a], ''],
  'i32.gt_u': [[0x4b], ''],
  'i32.le_s': [[0x4c], ''],
  'i32.le_u': [[0x4d], ''],
  'i32.ge_s': [[0x4e], ''],
  'i32.ge_u': [[0x4f], ''],
  'f32.gt': [[0x5e], ''],
  'i32.add': [[0x6a], ''],
  'i32.sub': [[0x6b], ''],
  'i32.mul': [[0x6c], ''],
  'i32.and': [[0x71], ''],
  'i32.or': [[0x72], ''],
  'i32.shl': [[0x74], ''],
  'i32.shr_u': [[0x76], ''],
  'f32.abs': [[0x8b], ''],
  'f32.neg': [[0x8c], ''],
  'f32.nearest': [[0x90], ''],
  'f32.add': [[0x92], ''],
  'f32.sub': [[0x93], ''],
  'f32.mul': [[0x94], ''],
  'f32.div': [[0x95], ''],
  'f32.min': [[0x96], ''],
  'f32.max': [[0x97], ''],
  'f64.add': [[0xa0], ''],
  'f64.max': [[0xa5], ''],
  'f64.promote_f32': [[0xbb], ''],
  'f32.reinterpret_i32': [[0xbe], ''],
  // SIMD: prefix 0xfd, then the sub-opcode as an unsigned LEB128 (BinarySIMD.md).
  'v128.load': [simd(0x00), 'mem', 4],
  'v128.store': [simd(0x0b), 'mem', 4],
  'v128.load64_zero': [simd(0x5d), 'mem', 3],
  'v128.const': [simd(0x0c), 'v128'],
  'i8x16.shuffle': [simd(0x0d), 'shuffle'],
  'i16x8.splat': [simd(0x10), ''],
  'i32x4.splat': [simd(0x11), ''],
  'f32x4.splat': [simd(0x13), ''],
  'f64x2.splat': [simd(0x14), ''],
  'i32x4.extract_lane': [simd(0x1b), 'lane'],
  'f32x4.extract_lane': [simd(0x1f), 'lane'],
  'f64x2.extract_lane': [simd(0x21), 'lane'],
  'i16x8.eq': [simd(0x2d), ''],
  'i16x8.gt_s': [simd(0x31), ''],
  'i32x4.eq': [simd(0x37), ''],
  'i32x4.gt_s': [simd(0x3b), ''],
  'v128.and': [simd(0x4e), ''],
  'v128.or': [simd(0x50), ''],
  'v128.any_true': [simd(0x53), ''],
  'f64x2.promote_low_f32x4': [simd(0x5f), ''],
  'i8x16.narrow_i16x8_s': [simd(0x65), ''],
  'f32x4.nearest': [simd(0x6a), ''],
  'i16x8.narrow_i32x4_s': [simd(0x85), ''],
  'i16x8.max_s': [simd(0x98), ''],
  'i16x8.max_u': [simd(0x99), ''],
  'i32x4.extend_low_i16x8_s': [simd(0xa7), ''],
  'i32x4.extend_high_i16x8_s': [simd(0xa8), ''],
  'i32x4.extend_low_i16x8_u': [simd(0xa9), ''],
  'i32x4.extend_high_i16x8_u': [simd(0xaa), ''],
  'i32x4.shl': [simd(0xab), ''],
  'i32x4.shr_s': [simd(0xac), ''],
  'i32x4.sub': [simd(0xb1), ''],
  'f32x4.abs': [simd(0xe0), ''],
  'f32x4.neg': [simd(0xe1), ''],
  'f32x4.add': [simd(0xe4), ''],
  'f32x4.sub': [simd(0xe5), ''],
  'f32x4.mul': [simd(0xe6), ''],
  'f32x4.div': [simd(0xe7), ''],
  'f32x4.pmin': [simd(0xea), ''],
  'f32x4.pmax': [simd(0xeb), ''],
  'f64x2.abs': [simd(0xec), ''],
  'f64x2.add': [simd(0xf0), ''],
  'f64x2.sub': [simd(0xf1), ''],
  'f64x2.mul': [simd(0xf2), ''],
  'f64x2.pmax': [simd(0xf7), ''],
  'i32x4.trunc_sat_f32x4_s': [simd(0xf8), ''],
};

function simd(sub) {
  return [0xfd, ...uleb(sub)];
}

// ---------------------------------------------------------------------------------------------
// LEB128 and number encodings.

function uleb(n) {
  let v = BigInt(n);
  if (v < 0n) throw new Error(`uleb: negative ${n}`);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) b |= 0x80;
    out.push(b);
  } while (v !== 0n);
  return out;
}

function sleb(n) {
  let v = BigInt(n);
  const out = [];
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n; // arithmetic shift on BigInt
    const signBit = (b & 0x40) !== 0;
    if ((v === 0n && !signBit) || (v === -1n && signBit)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

/** Integer literal (decimal or 0x hex, optional sign, `_` separators) wrapped to `bits` two's complement. */
function parseInt_(tok, bits) {
  const t = tok.replace(/_/g, '');
  if (!/^[+-]?(0x[0-9a-fA-F]+|[0-9]+)$/.test(t)) throw new Error(`expected an integer, found '${tok}'`);
  const neg = t.startsWith('-');
  let v = BigInt(t.replace(/^[+-]/, ''));
  if (neg) v = -v;
  const lim = 1n << BigInt(bits);
  if (v < -(lim >> 1n) || v >= lim) throw new Error(`integer '${tok}' does not fit in ${bits} bits`);
  return BigInt.asIntN(bits, v);
}

/** Float literal: decimal (parsed by Number) or hex float 0xh.hp±e; inf, nan rejected (unused). */
function parseFloat_(tok) {
  const t = tok.replace(/_/g, '');
  const hex = /^([+-])?0x([0-9a-fA-F]+)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?[0-9]+))?$/.exec(t);
  if (hex) {
    const frac = hex[3] ?? '';
    const mant = BigInt(`0x${hex[2]}${frac}`);
    const exp = Number(hex[4] ?? 0) - 4 * frac.length;
    // mant * 2^exp, exact for the literals used (mantissas of <= 53 bits).
    if (mant >= 1n << 53n) throw new Error(`hex float '${tok}': mantissa too long for this assembler`);
    let v = Number(mant);
    for (let i = 0; i < exp; i++) v *= 2;
    for (let i = 0; i > exp; i--) v /= 2;
    return hex[1] === '-' ? -v : v;
  }
  if (!/^[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?$/.test(t)) throw new Error(`expected a float, found '${tok}'`);
  return Number(t);
}

function f32Bytes(x) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, x, true);
  if (new DataView(b.buffer).getFloat32(0, true) !== x) throw new Error(`f32 literal ${x} is not exactly representable`);
  return [...b];
}

function f64Bytes(x) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setFloat64(0, x, true);
  return [...b];
}

function v128Bytes(shape, lanes) {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  const count = { i8x16: 16, i16x8: 8, i32x4: 4, f32x4: 4, f64x2: 2 }[shape];
  if (count === undefined) throw new Error(`v128.const: unsupported shape '${shape}'`);
  if (lanes.length !== count) throw new Error(`v128.const ${shape}: expected ${count} lanes, found ${lanes.length}`);
  lanes.forEach((tok, i) => {
    if (shape === 'i8x16') dv.setUint8(i, Number(BigInt.asUintN(8, parseInt_(tok, 8))));
    else if (shape === 'i16x8') dv.setUint16(2 * i, Number(BigInt.asUintN(16, parseInt_(tok, 16))), true);
    else if (shape === 'i32x4') dv.setUint32(4 * i, Number(BigInt.asUintN(32, parseInt_(tok, 32))), true);
    else if (shape === 'f32x4') new Uint8Array(b.buffer, 4 * i, 4).set(f32Bytes(parseFloat_(tok)));
    else dv.setFloat64(8 * i, parseFloat_(tok), true);
  });
  return [...b];
}

// ---------------------------------------------------------------------------------------------
// Text -> S-expressions. Atoms are strings; lists are arrays with a `line` property.

function parseSexprs(text) {
  const tokens = [];
  let line = 1;
  for (let i = 0; i < text.length; ) {
    const c = text[i];
    if (c === '\n') {
      line++;
      i++;
    } else if (/\s/.test(c)) i++;
    else if (text.startsWith(';;', i)) {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (text.startsWith('(;', i)) {
      const end = text.indexOf(';)', i);
      if (end < 0) throw new Error(`line ${line}: unterminated block comment`);
      for (let k = i; k < end; k++) if (text[k] === '\n') line++;
      i = end + 2;
    } else if (c === '(' || c === ')') {
      tokens.push({ t: c, line });
      i++;
    } else if (c === '"') {
      const end = text.indexOf('"', i + 1);
      if (end < 0) throw new Error(`line ${line}: unterminated string`);
      tokens.push({ t: text.slice(i, end + 1), line });
      i = end + 1;
    } else {
      let j = i;
      while (j < text.length && !/[\s()";]/.test(text[j])) j++;
      tokens.push({ t: text.slice(i, j), line });
      i = j;
    }
  }
  let pos = 0;
  function item() {
    const tok = tokens[pos++];
    if (tok.t === ')') throw new Error(`line ${tok.line}: unexpected ')'`);
    if (tok.t !== '(') return tok.t;
    const list = [];
    list.line = tok.line;
    while (pos < tokens.length && tokens[pos].t !== ')') list.push(item());
    if (pos >= tokens.length) throw new Error(`line ${tok.line}: unclosed '('`);
    pos++;
    return list;
  }
  const out = [];
  while (pos < tokens.length) out.push(item());
  return out;
}

const isList = (x) => Array.isArray(x);
const isName = (x) => typeof x === 'string' && x.startsWith('$');
const unquote = (s) => {
  if (typeof s !== 'string' || !s.startsWith('"')) throw new Error(`expected a string, found ${JSON.stringify(s)}`);
  return s.slice(1, -1);
};

// ---------------------------------------------------------------------------------------------
// Module assembly.

export function assemble(text) {
  const top = parseSexprs(text);
  if (top.length !== 1 || !isList(top[0]) || top[0][0] !== 'module') throw new Error('expected exactly one (module ...)');
  const fields = top[0].slice(1);

  const types = []; // encoded functype byte arrays, deduplicated
  const typeKey = new Map();
  const funcs = []; // { name, typeIndex, params, results, locals, body, exportName }
  const exports = []; // { name, kind, index }
  let memory;

  for (const f of fields) {
    if (!isList(f)) throw new Error(`unexpected module field '${f}'`);
    if (f[0] === 'memory') {
      let k = 1;
      if (isName(f[k])) k++;
      if (isList(f[k]) && f[k][0] === 'export') {
        exports.push({ name: unquote(f[k][1]), kind: 0x02, index: 0 });
        k++;
      }
      memory = Number(parseInt_(f[k], 32));
    } else if (f[0] === 'func') {
      const fn = { name: undefined, params: [], results: [], locals: [], body: [], line: f.line };
      let k = 1;
      if (isName(f[k])) fn.name = f[k++];
      for (; k < f.length; k++) {
        const x = f[k];
        if (!isList(x)) break;
        if (x[0] === 'export') exports.push({ name: unquote(x[1]), kind: 0x00, index: funcs.length });
        else if (x[0] === 'param' || x[0] === 'local') {
          const dst = x[0] === 'param' ? fn.params : fn.locals;
          if (isName(x[1])) dst.push({ name: x[1], type: x[2] });
          else for (const t of x.slice(1)) dst.push({ name: undefined, type: t });
        } else if (x[0] === 'result') fn.results.push(...x.slice(1));
        else break;
      }
      fn.body = f.slice(k);
      const sig = [0x60, ...uleb(fn.params.length), ...fn.params.map((p) => valtype(p.type)), ...uleb(fn.results.length), ...fn.results.map(valtype)];
      const key = sig.join(',');
      if (!typeKey.has(key)) {
        typeKey.set(key, types.length);
        types.push(sig);
      }
      fn.typeIndex = typeKey.get(key);
      funcs.push(fn);
    } else throw new Error(`line ${f.line}: unsupported module field '${f[0]}'`);
  }

  const funcIndex = new Map(funcs.map((fn, i) => [fn.name, i]));
  const code = funcs.map((fn) => encodeFunc(fn, funcIndex));

  const out = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const section = (id, payload) => out.push(id, ...uleb(payload.length), ...payload);
  section(1, [...uleb(types.length), ...types.flat()]);
  section(3, [...uleb(funcs.length), ...funcs.flatMap((fn) => uleb(fn.typeIndex))]);
  if (memory !== undefined) section(5, [1, 0x00, ...uleb(memory)]);
  section(
    7,
    [...uleb(exports.length), ...exports.flatMap((e) => [...uleb(e.name.length), ...Buffer.from(e.name, 'utf8'), e.kind, ...uleb(e.index)])],
  );
  section(10, [...uleb(code.length), ...code.flatMap((c) => [...uleb(c.length), ...c])]);
  return Uint8Array.from(out);
}

function valtype(t) {
  const v = VALTYPE[t];
  if (v === undefined) throw new Error(`unknown value type '${t}'`);
  return v;
}

function encodeFunc(fn, funcIndex) {
  const localIndex = new Map();
  [...fn.params, ...fn.locals].forEach((l, i) => {
    if (l.name !== undefined) {
      if (localIndex.has(l.name)) throw new Error(`${fn.name}: duplicate local ${l.name}`);
      localIndex.set(l.name, i);
    }
  });
  // Locals as runs of one type.
  const runs = [];
  for (const l of fn.locals) {
    const t = valtype(l.type);
    if (runs.length > 0 && runs[runs.length - 1][1] === t) runs[runs.length - 1][0]++;
    else runs.push([1, t]);
  }
  const bytes = [...uleb(runs.length), ...runs.flatMap(([n, t]) => [...uleb(n), t])];
  const labels = []; // innermost last; entries are names or undefined
  const where = () => `${fn.name ?? 'func'}`;

  function labelDepth(tok) {
    if (isName(tok)) {
      const i = labels.lastIndexOf(tok);
      if (i < 0) throw new Error(`${where()}: unknown label ${tok}`);
      return labels.length - 1 - i;
    }
    return Number(parseInt_(tok, 32));
  }

  /** Block header after the keyword: optional $label and (result t). Returns [label, blocktype byte, next index]. */
  function blockHeader(items, k) {
    let label;
    if (isName(items[k])) label = items[k++];
    let bt = 0x40;
    if (isList(items[k]) && items[k][0] === 'result') {
      if (items[k].length !== 2) throw new Error(`${where()}: only single-result blocks are supported`);
      bt = valtype(items[k][1]);
      k++;
    }
    return [label, bt, k];
  }

  /** Immediates of a plain op starting at items[k]; returns the next index. */
  function immediates(op, items, k) {
    const [code, kind, natural] = OPS[op];
    bytes.push(...code);
    const next = () => {
      if (k >= items.length || isList(items[k])) throw new Error(`${where()}: '${op}' is missing an immediate`);
      return items[k++];
    };
    switch (kind) {
      case '':
        break;
      case 'local': {
        const t = next();
        const i = isName(t) ? localIndex.get(t) : Number(parseInt_(t, 32));
        if (i === undefined) throw new Error(`${where()}: unknown local ${t}`);
        bytes.push(...uleb(i));
        break;
      }
      case 'func': {
        const t = next();
        const i = funcIndex.get(t);
        if (i === undefined) throw new Error(`${where()}: unknown function ${t}`);
        bytes.push(...uleb(i));
        break;
      }
      case 'label':
        bytes.push(...uleb(labelDepth(next())));
        break;
      case 'i32':
        bytes.push(...sleb(parseInt_(next(), 32)));
        break;
      case 'f32':
        bytes.push(...f32Bytes(parseFloat_(next())));
        break;
      case 'f64':
        bytes.push(...f64Bytes(parseFloat_(next())));
        break;
      case 'zero':
        bytes.push(0x00);
        break;
      case 'lane':
        bytes.push(Number(parseInt_(next(), 8)));
        break;
      case 'v128': {
        const shape = next();
        const n = { i8x16: 16, i16x8: 8, i32x4: 4, f32x4: 4, f64x2: 2 }[shape];
        const lanes = [];
        for (let i = 0; i < (n ?? 0); i++) lanes.push(next());
        bytes.push(...v128Bytes(shape, lanes));
        break;
      }
      case 'shuffle':
        for (let i = 0; i < 16; i++) {
          const v = Number(parseInt_(next(), 8));
          if (v < 0 || v > 31) throw new Error(`${where()}: shuffle lane ${v} out of range`);
          bytes.push(v);
        }
        break;
      case 'mem': {
        let offset = 0;
        let align = natural;
        while (k < items.length && typeof items[k] === 'string' && /^(offset|align)=/.test(items[k])) {
          const [key, val] = items[k++].split('=');
          if (key === 'offset') offset = Number(parseInt_(val, 32));
          else {
            const a = Number(parseInt_(val, 32));
            align = Math.log2(a);
            if (!Number.isInteger(align) || align > natural) throw new Error(`${where()}: bad align=${val} for ${op}`);
          }
        }
        bytes.push(...uleb(align), ...uleb(offset));
        break;
      }
      default:
        throw new Error(`assembler: unknown immediate kind ${kind}`);
    }
    return k;
  }

  /** Encodes a sequence of flat and folded instructions. */
  function seq(items) {
    let k = 0;
    while (k < items.length) {
      const x = items[k];
      if (isList(x)) {
        folded(x);
        k++;
        continue;
      }
      k++;
      if (x === 'block' || x === 'loop' || x === 'if') {
        const [label, bt, next] = blockHeader(items, k);
        k = next;
        bytes.push(x === 'block' ? 0x02 : x === 'loop' ? 0x03 : 0x04, bt);
        labels.push(label);
      } else if (x === 'else') {
        bytes.push(0x05);
        if (isName(items[k])) k++;
      } else if (x === 'end') {
        bytes.push(0x0b);
        if (labels.length === 0) throw new Error(`${where()}: 'end' without a block`);
        labels.pop();
        if (isName(items[k])) k++;
      } else if (OPS[x] !== undefined) {
        k = immediates(x, items, k);
      } else throw new Error(`${where()}: unknown instruction '${x}'`);
    }
  }

  function folded(list) {
    const op = list[0];
    if (op === 'block' || op === 'loop') {
      const [label, bt, k] = blockHeader(list, 1);
      bytes.push(op === 'block' ? 0x02 : 0x03, bt);
      labels.push(label);
      seq(list.slice(k));
      labels.pop();
      bytes.push(0x0b);
    } else if (op === 'if') {
      const [label, bt, k0] = blockHeader(list, 1);
      let k = k0;
      // Condition operands come first, then (then ...) and an optional (else ...).
      while (k < list.length && !(isList(list[k]) && (list[k][0] === 'then' || list[k][0] === 'else'))) folded(list[k++]);
      bytes.push(0x04, bt);
      labels.push(label);
      if (!(isList(list[k]) && list[k][0] === 'then')) throw new Error(`${where()}: (if ...) without (then ...)`);
      seq(list[k++].slice(1));
      if (isList(list[k]) && list[k][0] === 'else') {
        bytes.push(0x05);
        seq(list[k++].slice(1));
      }
      if (k !== list.length) throw new Error(`${where()}: unexpected items after (else ...)`);
      labels.pop();
      bytes.push(0x0b);
    } else if (typeof op === 'string' && OPS[op] !== undefined) {
      // (op immediates... operands...): operands are evaluated first, then the op is emitted.
      const save = bytes.length;
      const k = immediates(op, list, 1);
      const opBytes = bytes.splice(save);
      for (const operand of list.slice(k)) {
        if (!isList(operand)) throw new Error(`${where()}: unexpected '${operand}' in (${op} ...)`);
        folded(operand);
      }
      bytes.push(...opBytes);
    } else throw new Error(`${where()}: unknown instruction '(${op} ...)' at line ${list.line}`);
  }

  seq(fn.body);
  if (labels.length !== 0) throw new Error(`${where()}: unclosed block`);
  bytes.push(0x0b);
  return bytes;
}

/** The TypeScript module committed beside the .wat: the bytes as base64. */
export function tsModule(bytes, source) {
  const b64 = Buffer.from(bytes).toString('base64');
  const lines = b64.match(/.{1,96}/g) ?? [''];
  return (
    `// GENERATED by tools/wasm/assemble.mjs from ${source}: do not edit (a test rebuilds and compares it).\n` +
    `// The WebAssembly module's bytes, base64, ${bytes.length} bytes.\n\n` +
    `export const QUANTIZE_WASM_BASE64 =\n` +
    lines.map((l, i) => `  '${l}'${i === lines.length - 1 ? ';' : ' +'}`).join('\n') +
    '\n'
  );
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [input, output] = process.argv.slice(2);
  if (!input) {
    process.stderr.write('usage: node tools/wasm/assemble.mjs <in.wat> [<out.ts>]\n');
    process.exit(2);
  }
  const bytes = assemble(readFileSync(input, 'utf8'));
  const text = tsModule(bytes, basename(input));
  if (output) writeFileSync(output, text);
  else process.stdout.write(text);
}
