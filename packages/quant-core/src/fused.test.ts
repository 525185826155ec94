// The fused byte-to-int8 quantizer: the WebAssembly path held bit-exactly (q, scale, offset, max error)
// and within the named tolerance (SQNR) to the JS path and the Ref composition; the wasm bytes held to
// their .wat source.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { encodeFloats, f32ToBf16, f32ToF16, roundTo, type ComputeDType, type FloatDType } from './dtype';
import { QuantError } from './errors';
import {
  FUSED_SUM_REL_TOL,
  fusedQuantBackend,
  fusedSqnrDbTolerance,
  quantizeRowsFromBytes,
  quantizeRowsFromBytesJs,
  quantizeRowsFromBytesRef,
} from './fused';
import type { QuantOptions, QuantizedRows } from './quantize';
import { emptyQuantErrorStats, mergeQuantErrorStats, quantErrorStats, type QuantErrorStats } from './stats';
import { firstDifference, gaussian, mulberry32, readFixtureJson } from './test-helpers';
import { QUANTIZE_WASM_BASE64 } from './wasm/quantize-wasm';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../../..');

const DTYPES: FloatDType[] = ['F16', 'BF16', 'F32'];
const SCHEMES = ['asym', 'sym'] as const;
const BYTES: Record<FloatDType, number> = { F32: 4, F16: 2, BF16: 2 };

function alloc(rows: number, cols: number): QuantizedRows {
  return { q: new Int8Array(rows * cols), scale: new Float32Array(rows), offset: new Float32Array(rows) };
}

function encode(w: Float32Array, dtype: FloatDType): Uint8Array {
  const b = new Uint8Array(w.length * BYTES[dtype]);
  encodeFloats(b, w, dtype);
  return b;
}

function bitsToBytes(bits: Uint16Array): Uint8Array {
  return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
}

function catchQuantError(f: () => void): QuantError {
  try {
    f();
  } catch (e) {
    if (e instanceof QuantError) return e;
    throw e;
  }
  throw new Error('expected a QuantError, nothing was thrown');
}

/** a and b equal, or both within tol of each other (Object.is covers +-Infinity and NaN). */
function near(a: number, b: number, tol: number): boolean {
  return Object.is(a, b) || Math.abs(a - b) <= tol;
}

/** Stats of the wasm path against the JS path: exact where the kernel is exact, else the named tolerance. */
function expectStatsClose(got: QuantErrorStats, want: QuantErrorStats, cols: number, where: string): void {
  const tol = fusedSqnrDbTolerance(cols);
  expect(got.rows, where).toBe(want.rows);
  expect(got.maxAbsError, where).toBe(want.maxAbsError);
  expect(got.worstRow, where).toBe(want.worstRow);
  expect(got.finiteSqnrRows, where).toBe(want.finiteSqnrRows);
  expect(near(got.minSqnrDb, want.minSqnrDb, tol), `${where}: minSqnrDb ${got.minSqnrDb} vs ${want.minSqnrDb}`).toBe(true);
  const sumTol = tol * Math.max(want.finiteSqnrRows ?? want.rows, 1);
  expect(near(got.sumSqnrDb, want.sumSqnrDb, sumTol), `${where}: sumSqnrDb ${got.sumSqnrDb} vs ${want.sumSqnrDb}`).toBe(true);
}

interface RunResult {
  out: QuantizedRows;
  stats: QuantErrorStats;
}

type Fused = typeof quantizeRowsFromBytes;

function run(f: Fused, src: Uint8Array, dtype: FloatDType, rows: number, cols: number, opts: QuantOptions, rowBase = 0): RunResult {
  const out = alloc(rows, cols);
  const stats = emptyQuantErrorStats();
  f(out, src, dtype, rows, cols, opts, stats, rowBase);
  return { out, stats };
}

/** wasm (quantizeRowsFromBytes, f32 compute) vs the JS path and the Ref: codes exact, stats as documented. */
function checkAgainstJs(src: Uint8Array, dtype: FloatDType, rows: number, cols: number, opts: QuantOptions, where: string, withRef = true): void {
  const fast = run(quantizeRowsFromBytes, src, dtype, rows, cols, opts, 3);
  const js = run(quantizeRowsFromBytesJs, src, dtype, rows, cols, opts, 3);
  expect(firstDifference(fast.out.q, js.out.q), `${where}: q`).toBe(-1);
  expect(firstDifference(fast.out.scale, js.out.scale), `${where}: scale`).toBe(-1);
  expect(firstDifference(fast.out.offset, js.out.offset), `${where}: offset`).toBe(-1);
  expectStatsClose(fast.stats, js.stats, cols, where);
  // Codes only (no stats) take the other kernel: same codes.
  const codesOnly = alloc(rows, cols);
  quantizeRowsFromBytes(codesOnly, src, dtype, rows, cols, opts);
  expect(firstDifference(codesOnly.q, js.out.q), `${where}: q without stats`).toBe(-1);
  expect(firstDifference(codesOnly.scale, js.out.scale), `${where}: scale without stats`).toBe(-1);
  if (withRef) {
    const ref = run(quantizeRowsFromBytesRef, src, dtype, rows, cols, opts, 3);
    expect(firstDifference(js.out.q, ref.out.q), `${where}: JS vs Ref q`).toBe(-1);
    expect(firstDifference(js.out.scale, ref.out.scale), `${where}: JS vs Ref scale`).toBe(-1);
    expect(firstDifference(js.out.offset, ref.out.offset), `${where}: JS vs Ref offset`).toBe(-1);
    expect(js.stats, `${where}: JS vs Ref stats`).toEqual(ref.stats);
  }
}

/** Weight-like rows of several kinds, as values of `dtype`: normal, outliers, one-sided, tiny, zero, constant. */
function makeRows(seed: number, rows: number, cols: number, dtype: FloatDType): Float32Array {
  const rnd = mulberry32(seed);
  const normal = gaussian(rnd);
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const kind = r % 9;
    const std = kind === 5 ? 1e-6 : kind === 6 ? 3 : 0.02;
    for (let c = 0; c < cols; c++) {
      let x = normal() * std;
      if (kind === 3) x = Math.abs(x);
      if (kind === 4) x = -Math.abs(x);
      if (kind === 7) x = 0;
      if (kind === 8) x = -0.375;
      if (rnd() < 0.01) x = 0;
      w[r * cols + c] = x;
    }
    if (kind === 2 && cols > 0) w[r * cols + Math.floor(rnd() * cols)] *= 100;
  }
  const c: ComputeDType = dtype === 'F32' ? 'f32' : dtype === 'F16' ? 'f16' : 'bf16';
  for (let i = 0; i < w.length; i++) w[i] = roundTo(w[i], c);
  return w;
}

/** Random finite 16-bit patterns of dtype (every exponent: subnormals, zeros, the largest values). */
function randomHalfBits(seed: number, n: number, dtype: 'F16' | 'BF16'): Uint16Array {
  const rnd = mulberry32(seed);
  const bits = new Uint16Array(n);
  const expMask = dtype === 'F16' ? 0x7c00 : 0x7f80;
  for (let i = 0; i < n; i++) {
    let h = Math.floor(rnd() * 65536);
    if ((h & expMask) === expMask) h ^= dtype === 'F16' ? 0x4000 : 0x4000; // keep it finite
    bits[i] = h;
  }
  return bits;
}

describe('WebAssembly module', () => {
  it('the committed bytes are what tools/wasm/assemble.mjs makes of quantize.wat', async () => {
    const asm = (await import(pathToFileURL(path.join(REPO_ROOT, 'tools/wasm/assemble.mjs')).href)) as {
      assemble: (text: string) => Uint8Array;
      tsModule: (bytes: Uint8Array, source: string) => string;
    };
    const bytes = asm.assemble(readFileSync(path.join(HERE, 'wasm/quantize.wat'), 'utf8'));
    expect(Buffer.from(bytes).toString('base64')).toBe(QUANTIZE_WASM_BASE64);
    expect(asm.tsModule(bytes, 'quantize.wat')).toBe(readFileSync(path.join(HERE, 'wasm/quantize-wasm.ts'), 'utf8'));
  });

  it('is used on this Node (WebAssembly SIMD present), so the tests below exercise it', () => {
    expect(fusedQuantBackend()).toBe('wasm-simd');
  });

  it('the SQNR tolerance is small: under 1e-5 dB for a 4096-column row', () => {
    expect(fusedSqnrDbTolerance(4096)).toBeLessThan(1e-5);
    expect(FUSED_SUM_REL_TOL).toBeLessThan(1e-6);
  });
});

describe('golden vectors from msModelSlim (fixtures/quant-golden.json)', () => {
  interface GoldenCase {
    weight: number[][];
    weight_dtype: 'fp32' | 'fp16' | 'bf16';
    scale: number[];
    offset: number[];
    q: number[][];
  }
  const GOLDEN = readFixtureJson<Record<string, GoldenCase | string>>('quant-golden.json');
  const DTYPE_OF = { fp32: 'F32', fp16: 'F16', bf16: 'BF16' } as const;
  const COMPUTE_OF = { fp32: 'f32', fp16: 'f16', bf16: 'bf16' } as const;
  for (const key of ['fp32_asym', 'fp32_sym', 'fp16_asym', 'fp16_sym', 'bf16_asym', 'bf16_sym']) {
    it(`${key}: from the weight bytes, in its own arithmetic, matches msModelSlim; f32 arithmetic matches the JS path`, () => {
      const g = GOLDEN[key];
      if (typeof g !== 'object') throw new Error(`quant-golden.json: expected an object at '${key}'`);
      const rows = g.weight.length;
      const cols = g.weight[0].length;
      const dtype = DTYPE_OF[g.weight_dtype];
      const scheme = key.endsWith('_sym') ? 'sym' : 'asym';
      const src = encode(Float32Array.from(g.weight.flat()), dtype);
      const own = alloc(rows, cols);
      quantizeRowsFromBytes(own, src, dtype, rows, cols, { scheme, compute: COMPUTE_OF[g.weight_dtype] });
      expect(Array.from(own.q)).toEqual(g.q.flat());
      expect(Array.from(own.scale)).toEqual(g.scale);
      expect(Array.from(own.offset)).toEqual(g.offset);
      checkAgainstJs(src, dtype, rows, cols, { scheme, compute: 'f32' }, key);
    });
  }
});

describe('wasm == JS path (f32 arithmetic)', () => {
  const shapes: [number, number][] = [
    [1, 1],
    [1, 2],
    [3, 1],
    [1, 16],
    [2, 15],
    [9, 17],
    [5, 31],
    [18, 33],
    [9, 100],
    [4, 255],
    [27, 257],
    [3, 4096],
  ];
  for (const dtype of DTYPES) {
    for (const scheme of SCHEMES) {
      it(`${dtype} ${scheme}: seeded weight-like matrices (outliers, one-sided, tiny, zero, constant rows), odd widths`, () => {
        let seed = 1000;
        for (const [rows, cols] of shapes) {
          const w = makeRows(seed++, rows, cols, dtype);
          checkAgainstJs(encode(w, dtype), dtype, rows, cols, { scheme, compute: 'f32' }, `${rows}x${cols}`);
        }
      });
    }
  }

  for (const dtype of ['F16', 'BF16'] as const) {
    for (const scheme of SCHEMES) {
      it(`${dtype} ${scheme}: random finite bit patterns (subnormals, +-0, the largest values)`, () => {
        let seed = 2000;
        for (const [rows, cols] of [[7, 9], [16, 64], [5, 1000]] as const) {
          const bits = randomHalfBits(seed++, rows * cols, dtype);
          checkAgainstJs(bitsToBytes(bits), dtype, rows, cols, { scheme, compute: 'f32' }, `${rows}x${cols}`);
        }
      });
    }
  }

  it('F16 special values: subnormals, +-0, smallest normal, max finite, in rows of their own and mixed', () => {
    const sub = [0x0001, 0x0002, 0x03ff, 0x8001, 0x83ff, 0x0200];
    const rowsBits = [
      sub.concat(sub), // only subnormals: scale is eps (f32)
      [0x0000, 0x8000, 0x0000, 0x8000, 0x8000, 0x0000, 0x0000, 0x8000, 0, 0, 0, 0], // signed zeros
      [0x7bff, 0xfbff, 0x0001, 0x8001, 0x0400, 0x8400, 0x3c00, 0xbc00, 0x7bfe, 0x0000, 0x8000, 0x3555],
      [0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff, 0x7bff], // constant max
      [0xfbff, 0x8001, 0xfbff, 0x8400, 0xfbff, 0x8001, 0xfbff, 0x8400, 0xfbff, 0x8001, 0xfbff, 0x8400], // all negative
      [0x0400, 0x0401, 0x03ff, 0x0001, 0x0400, 0x0401, 0x03ff, 0x0001, 0x0400, 0x0401, 0x03ff, 0x0002], // around 2^-14
    ];
    const bits = Uint16Array.from(rowsBits.flat());
    for (const scheme of SCHEMES) checkAgainstJs(bitsToBytes(bits), 'F16', rowsBits.length, 12, { scheme, compute: 'f32' }, scheme);
  });

  it('BF16 special values: subnormals, +-0, huge values whose dequantization overflows f32 (JS stats recomputed)', () => {
    const rowsBits = [
      [0x0001, 0x8001, 0x007f, 0x0080, 0x0000, 0x8000, 0x0040], // subnormals and the smallest normal
      [0x7f7f, 0xff7f, 0x3f80, 0x0001, 0x7f00, 0x8000, 0x0000], // largest finite: (q - o) * scale overflows
      [0x2000, 0x2001, 0xa000, 0x2000, 0x2002, 0x1fff, 0x2000], // ~1e-19: squares underflow f32
      [0x5f00, 0x5f7f, 0xdf00, 0x5f10, 0x5f20, 0x5f30, 0x5f40], // ~1e19: squares near f32 overflow
      [0x0000, 0x0000, 0x0000, 0x0000, 0x0000, 0x0000, 0x0000],
      [0x3f80, 0x0d80, 0x0000, 0x0000, 0x3f80, 0x0000, 0x0000], // 1 and 2^-100: one tiny error, SQNR ~600 dB
    ];
    const bits = Uint16Array.from(rowsBits.flat());
    for (const scheme of SCHEMES) checkAgainstJs(bitsToBytes(bits), 'BF16', rowsBits.length, 7, { scheme, compute: 'f32' }, scheme);
  });

  it('F32 special values: subnormals, tiny and huge rows, a row with one tiny weight (exact SQNR near 600 dB)', () => {
    const w = Float32Array.from([
      ...[1e-45, -1e-45, 1.1754942e-38, 0, -0, 3e-39, 1e-40, 0],
      ...[3.4028234e38, -3.4028234e38, 1, 0, 2, -7, 1e30, -1e30],
      ...[1, 2 ** -100, 0, 0, 0, 0, 0, 0],
      ...[0.5 - 2 ** -25, 1, 0, 0.5, 0.25, -1.5 + 2 ** -23, 255 / 256, 0.125],
    ]);
    for (const scheme of SCHEMES) checkAgainstJs(encode(w, 'F32'), 'F32', 4, 8, { scheme, compute: 'f32' }, scheme);
  });

  it('holds each row to the per-row SQNR tolerance (one-row calls)', () => {
    for (const dtype of DTYPES) {
      const rows = 12;
      const cols = 777;
      const w = makeRows(77, rows, cols, dtype);
      const src = encode(w, dtype);
      const rowBytes = cols * BYTES[dtype];
      for (let r = 0; r < rows; r++) {
        const one = src.subarray(r * rowBytes, (r + 1) * rowBytes);
        const a = run(quantizeRowsFromBytes, one, dtype, 1, cols, { scheme: 'asym', compute: 'f32' });
        const b = run(quantizeRowsFromBytesJs, one, dtype, 1, cols, { scheme: 'asym', compute: 'f32' });
        expectStatsClose(a.stats, b.stats, cols, `${dtype} row ${r}`);
      }
    }
  });

  it('spans several internal chunks, reads sources at any byteOffset and grows its memory for long rows', () => {
    // 300 x 1000 F16 = 600 KB: three chunks. 2 x 150000 F32: one row is larger than a chunk.
    const big = makeRows(5, 300, 1000, 'F16');
    checkAgainstJs(encode(big, 'F16'), 'F16', 300, 1000, { scheme: 'asym', compute: 'f32' }, '300x1000', false);
    const bytes = encode(makeRows(6, 2, 150_000, 'F32'), 'F32');
    checkAgainstJs(bytes, 'F32', 2, 150_000, { scheme: 'sym', compute: 'f32' }, '2x150000', false);
    for (const dtype of DTYPES) {
      const src = encode(makeRows(8, 6, 37, dtype), dtype);
      const odd = new Uint8Array(new ArrayBuffer(src.length + 3), 3, src.length);
      odd.set(src);
      checkAgainstJs(odd, dtype, 6, 37, { scheme: 'asym', compute: 'f32' }, `${dtype} at byteOffset 3`);
    }
  });

  it('an all-zero row gives eps scale, offset -128, codes -128 and an infinite SQNR', () => {
    const src = new Uint8Array(2 * 40);
    const { out, stats } = run(quantizeRowsFromBytes, src, 'F16', 2, 20, { scheme: 'asym', compute: 'f32' });
    expect(Array.from(out.scale)).toEqual([2 ** -23, 2 ** -23]);
    expect(Array.from(out.offset)).toEqual([-128, -128]);
    expect(out.q.every((c) => c === -128)).toBe(true);
    expect([stats.maxAbsError, stats.minSqnrDb, stats.finiteSqnrRows]).toEqual([0, Infinity, 0]);
  });
});

describe('f16/bf16 arithmetic (JS path) and stats merging', () => {
  for (const compute of ['f16', 'bf16'] as const) {
    it(`compute ${compute}: equals the Ref composition exactly, from F16, BF16 and F32 bytes`, () => {
      for (const dtype of DTYPES) {
        for (const scheme of SCHEMES) {
          const w = makeRows(31, 11, 70, dtype);
          const src = encode(w, dtype);
          const a = run(quantizeRowsFromBytes, src, dtype, 11, 70, { scheme, compute }, 4);
          const b = run(quantizeRowsFromBytesRef, src, dtype, 11, 70, { scheme, compute }, 4);
          expect(a, `${dtype} ${scheme}`).toEqual(b);
        }
      }
    });
  }

  it('merges into the stats passed in (as mergeQuantErrorStats), numbering rows from rowBase', () => {
    const rows = 20;
    const cols = 64;
    const w = makeRows(41, rows, cols, 'F16');
    const src = encode(w, 'F16');
    const opts: QuantOptions = { scheme: 'asym', compute: 'f32' };
    // First half, then second half into the same stats object.
    const half = (rows / 2) * cols * 2;
    for (const f of [quantizeRowsFromBytes, quantizeRowsFromBytesJs]) {
      const stats = emptyQuantErrorStats();
      const out1 = alloc(rows / 2, cols);
      const out2 = alloc(rows / 2, cols);
      f(out1, src.subarray(0, half), 'F16', rows / 2, cols, opts, stats, 100);
      f(out2, src.subarray(half), 'F16', rows / 2, cols, opts, stats, 100 + rows / 2);
      const whole = Float32Array.from(w);
      const full = alloc(rows, cols);
      quantizeRowsFromBytesRef(full, src, 'F16', rows, cols, opts);
      const wantA = quantErrorStats(whole.subarray(0, (rows / 2) * cols), { q: full.q.subarray(0, (rows / 2) * cols), scale: full.scale.subarray(0, rows / 2), offset: full.offset.subarray(0, rows / 2) }, rows / 2, cols, 100);
      const wantB = quantErrorStats(whole.subarray((rows / 2) * cols), { q: full.q.subarray((rows / 2) * cols), scale: full.scale.subarray(rows / 2), offset: full.offset.subarray(rows / 2) }, rows / 2, cols, 110);
      const want = mergeQuantErrorStats(mergeQuantErrorStats(emptyQuantErrorStats(), wantA), wantB);
      if (f === quantizeRowsFromBytesJs) expect(stats).toEqual(want);
      else expectStatsClose(stats, want, cols, 'wasm merged');
      expect(stats.worstRow).toBeGreaterThanOrEqual(100);
    }
  });
});

describe('errors', () => {
  /** Bytes of a [rows, cols] matrix with a non-finite value (given as raw bits/float) at (row, col). */
  function withBad(dtype: FloatDType, rows: number, cols: number, row: number, col: number, bad: number): Uint8Array {
    const src = encode(makeRows(51, rows, cols, dtype), dtype);
    const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
    const i = row * cols + col;
    if (dtype === 'F32') dv.setFloat32(4 * i, bad, true);
    else dv.setUint16(2 * i, bad, true);
    // A later one is not reported.
    const j = (row + 1) * cols - 1;
    if (dtype === 'F32') dv.setFloat32(4 * j, NaN, true);
    else dv.setUint16(2 * j, dtype === 'F16' ? 0x7e00 : 0x7fc0, true);
    return src;
  }

  const cases: [FloatDType, number][] = [
    ['F16', 0x7c00],
    ['F16', 0xfc00],
    ['F16', 0x7e01],
    ['BF16', 0x7f80],
    ['BF16', 0xffc1],
    ['F32', Infinity],
    ['F32', -Infinity],
    ['F32', NaN],
  ];
  for (const [dtype, bad] of cases) {
    it(`${dtype} ${bad.toString(16)}: E_NONFINITE_WEIGHT at the same row/col as the Ref; earlier rows written, stats untouched`, () => {
      // 400 x 700 F16 is 560 KB: the bad row (333) is in the third internal chunk.
      const rows = 400;
      const cols = 700;
      const src = withBad(dtype, rows, cols, 333, 517, bad);
      for (const compute of ['f32', 'f16'] as const) {
        const opts: QuantOptions = { scheme: 'asym', compute };
        const got = alloc(rows, cols);
        const stats = emptyQuantErrorStats();
        const e = catchQuantError(() => quantizeRowsFromBytes(got, src, dtype, rows, cols, opts, stats));
        const want = alloc(rows, cols);
        const eRef = catchQuantError(() => quantizeRowsFromBytesRef(want, src, dtype, rows, cols, opts));
        expect([e.code, e.row, e.col], compute).toEqual(['E_NONFINITE_WEIGHT', 333, 517]);
        expect([eRef.code, eRef.row, eRef.col]).toEqual([e.code, e.row, e.col]);
        expect(e.message).toContain('row 333, col 517');
        expect(firstDifference(got.q.subarray(0, 333 * cols), want.q.subarray(0, 333 * cols))).toBe(-1);
        expect(firstDifference(got.scale.subarray(0, 333), want.scale.subarray(0, 333))).toBe(-1);
        expect(stats).toEqual(emptyQuantErrorStats());
      }
    });
  }

  it('F32 bytes overflowing fp16 are non-finite for f16 arithmetic only', () => {
    const src = encode(Float32Array.from([0.5, -1, 70000, 2]), 'F32');
    const e = catchQuantError(() => quantizeRowsFromBytes(alloc(2, 2), src, 'F32', 2, 2, { scheme: 'sym', compute: 'f16' }));
    expect([e.code, e.row, e.col]).toEqual(['E_NONFINITE_WEIGHT', 1, 0]);
    expect(() => quantizeRowsFromBytes(alloc(2, 2), src, 'F32', 2, 2, { scheme: 'sym', compute: 'f32' })).not.toThrow();
  });

  it('rejects wrong sizes (E_SIZE), dtypes (E_DTYPE), options (E_OPTIONS) and shapes (E_SHAPE)', () => {
    const opts: QuantOptions = { scheme: 'asym', compute: 'f32' };
    const src = new Uint8Array(12);
    expect(catchQuantError(() => quantizeRowsFromBytes(alloc(2, 3), src.subarray(1), 'F16', 2, 3, opts)).code).toBe('E_SIZE');
    expect(catchQuantError(() => quantizeRowsFromBytes(alloc(2, 2), src, 'F16', 2, 3, opts)).code).toBe('E_SIZE');
    expect(catchQuantError(() => quantizeRowsFromBytes(alloc(2, 3), src, 'I8' as FloatDType, 2, 3, opts)).code).toBe('E_DTYPE');
    expect(catchQuantError(() => quantizeRowsFromBytes(alloc(2, 3), src, 'F16', 2, 3, { ...opts, compute: 'f64' as ComputeDType })).code).toBe(
      'E_OPTIONS',
    );
    expect(catchQuantError(() => quantizeRowsFromBytes(alloc(2, 3), src, 'F16', 2, 3, opts, undefined, -1)).code).toBe('E_SHAPE');
    expect(catchQuantError(() => quantizeRowsFromBytesRef(alloc(2, 3), src, 'F16', 2.5, 3, opts)).code).toBe('E_SHAPE');
  });
});

describe('test data sanity', () => {
  it('encodes fp16/bf16 as the scalar converters do (the byte inputs above are what they claim)', () => {
    const w = Float32Array.from([0.1, -2.5, 65504, 1e-7, -0]);
    const h = new Uint16Array(encode(w, 'F16').buffer);
    const b = new Uint16Array(encode(w, 'BF16').buffer);
    expect(Array.from(h)).toEqual(Array.from(w, (x) => f32ToF16(x)));
    expect(Array.from(b)).toEqual(Array.from(w, (x) => f32ToBf16(x)));
  });
});
