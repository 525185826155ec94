// Per-channel int8 quantization: bit-exact against msModelSlim's golden vectors, edge rows, rounding,
// errors, and the fast path held to the op-by-op oracle on seeded random matrices.

import { describe, expect, it } from 'vitest';
import { roundTo, type ComputeDType, type QuantScheme } from './dtype';
import { QuantError } from './errors';
import {
  QUANT_EPS,
  dequantizeRows,
  fakeQuantizeRows,
  fakeQuantizeRowsRef,
  quantizePerChannel,
  quantizeRows,
  quantizeRowsRef,
  roundHalfEven,
  roundHalfEvenRef,
  type QuantOptions,
  type QuantizedRows,
} from './quantize';
import { firstDifference, gaussian, mulberry32, readFixtureJson } from './test-helpers';

interface GoldenCase {
  weight: number[][];
  weight_dtype: 'fp32' | 'fp16' | 'bf16';
  scale: number[];
  offset: number[];
  q: number[][];
}

const GOLDEN = readFixtureJson<Record<string, GoldenCase | string>>('quant-golden.json');
const GOLDEN_KEYS = ['fp32_asym', 'fp32_sym', 'fp16_asym', 'fp16_sym', 'bf16_asym', 'bf16_sym'] as const;
const COMPUTE_OF: Record<GoldenCase['weight_dtype'], ComputeDType> = { fp32: 'f32', fp16: 'f16', bf16: 'bf16' };

const ALL_OPTIONS: QuantOptions[] = (['f32', 'f16', 'bf16'] as const).flatMap((compute) =>
  (['asym', 'sym'] as const).map((scheme) => ({ scheme, compute })),
);

function golden(key: (typeof GOLDEN_KEYS)[number]): GoldenCase {
  const g = GOLDEN[key];
  if (typeof g !== 'object') throw new Error(`quant-golden.json: expected an object at '${key}'`);
  return g;
}

function alloc(rows: number, cols: number): QuantizedRows {
  return { q: new Int8Array(rows * cols), scale: new Float32Array(rows), offset: new Float32Array(rows) };
}

type Quantizer = typeof quantizeRows;
const QUANTIZERS: [string, Quantizer][] = [
  ['quantizeRows', quantizeRows],
  ['quantizeRowsRef', quantizeRowsRef],
];

function catchQuantError(f: () => void): QuantError {
  try {
    f();
  } catch (e) {
    if (e instanceof QuantError) return e;
    throw e;
  }
  throw new Error('expected a QuantError, nothing was thrown');
}

describe('golden vectors from msModelSlim (fixtures/quant-golden.json)', () => {
  for (const key of GOLDEN_KEYS) {
    for (const [name, quantize] of QUANTIZERS) {
      it(`${key}: ${name} reproduces q, scale and offset bit-exactly`, () => {
        const g = golden(key);
        const rows = g.weight.length;
        const cols = g.weight[0].length;
        const compute = COMPUTE_OF[g.weight_dtype];
        const w = Float32Array.from(g.weight.flat());
        // The fixture lists values of its dtype: casting them is a no-op.
        expect(firstDifference(w, Array.from(w, (x) => roundTo(x, compute)))).toBe(-1);
        const out = alloc(rows, cols);
        quantize(out, w, rows, cols, { scheme: key.endsWith('_sym') ? 'sym' : 'asym', compute });
        expect(Array.from(out.q)).toEqual(g.q.flat());
        expect(Array.from(out.scale)).toEqual(g.scale);
        expect(Array.from(out.offset)).toEqual(g.offset);
      });
    }
  }

  it('needs the fp16 arithmetic: fp32 arithmetic on the fp16 weights gives a different row-6 offset', () => {
    const g = golden('fp16_asym');
    const w = Float32Array.from(g.weight.flat());
    const out = alloc(8, 16);
    quantizeRows(out, w, 8, 16, { scheme: 'asym', compute: 'f32' });
    expect(g.offset[6]).toBe(0);
    expect(out.offset[6]).toBe(-1);
  });
});

describe('round half to even', () => {
  it('matches torch.round on the documented cases', () => {
    const cases: [number, number][] = [
      [0.5, 0],
      [1.5, 2],
      [2.5, 2],
      [-0.5, -0],
      [-1.5, -2],
      [-2.5, -2],
      [127.5, 128],
      [-128.5, -128],
      [0.49999999999999994, 0],
      [2 ** 52 + 1, 2 ** 52 + 1],
      [2 ** 51 + 0.5, 2 ** 51],
      [2 ** 51 + 1.5, 2 ** 51 + 2],
    ];
    // `+ 0` folds -0 into 0: torch gives -0 for -0.5, which is the same int8 code.
    for (const [x, want] of cases) {
      expect(roundHalfEven(x) + 0, `roundHalfEven(${x})`).toBe(want + 0);
      expect(roundHalfEvenRef(x) + 0, `roundHalfEvenRef(${x})`).toBe(want + 0);
    }
  });

  it('fast and plain forms agree on random halves and non-halves', () => {
    const rnd = mulberry32(3);
    for (let k = 0; k < 100_000; k++) {
      const base = Math.floor((rnd() - 0.5) * 1000);
      const x = k % 2 === 0 ? base + 0.5 : (rnd() - 0.5) * 2 ** Math.floor(rnd() * 40);
      if (roundHalfEven(x) !== roundHalfEvenRef(x)) throw new Error(`roundHalfEven(${x})`);
    }
  });

  it('quantizes codes at exact .5 to the even code', () => {
    // Row range [-100, 155]: scale = 255/255 = 1, offset = round(100) - 128 = -28. Then
    // w = 0.5 -> -27.5 -> -28, w = 1.5 -> -26.5 -> -26, w = 2.5 -> -25.5 -> -26, w = -0.5 -> -28.5 -> -28.
    const w = Float32Array.from([-100, 155, 0.5, 1.5, 2.5, -0.5]);
    for (const [name, quantize] of QUANTIZERS) {
      for (const compute of ['f32', 'f16', 'bf16'] as const) {
        const out = alloc(1, 6);
        quantize(out, w, 1, 6, { scheme: 'asym', compute });
        expect(out.scale[0], name).toBe(1);
        expect(out.offset[0], name).toBe(-28);
        expect(Array.from(out.q), `${name} ${compute}`).toEqual([-128, 127, -28, -26, -26, -28]);
      }
    }
  });
});

describe('edge rows (spec §1.1)', () => {
  for (const [name, quantize] of QUANTIZERS) {
    for (const compute of ['f32', 'f16', 'bf16'] as const) {
      it(`${name} ${compute}: all-zero, all-positive, all-negative and constant rows`, () => {
        const cols = 5;
        const rows = [
          [0, 0, 0, 0, 0],
          [0.25, 0.5, 1, 0.125, 0.75],
          [-0.25, -0.5, -1, -0.125, -0.75],
          [0.02, 0.02, 0.02, 0.02, 0.02],
          [-0, 0, -0, 0, 0],
        ];
        const w = Float32Array.from(rows.flat(), (x) => roundTo(x, compute));
        const out = alloc(rows.length, cols);
        quantize(out, w, rows.length, cols, { scheme: 'asym', compute });
        const R = (x: number): number => roundTo(x, compute);
        // The code of a row's maximum is 127 and the offset of an all-negative row +127, except in
        // bf16: there 1/255 rounds up to 0.003936767578125 and 1/scale = 254.02 rounds to 254, so
        // both are 126 (msModelSlim's bf16 golden row 4, a constant row, has 126 everywhere too).
        const top = compute === 'bf16' ? 126 : 127;
        // all-zero: scale eps, offset -128, every code -128 (dequantizes to exactly 0)
        expect(out.scale[0]).toBe(QUANT_EPS);
        expect(out.offset[0]).toBe(-128);
        expect(Array.from(out.q.subarray(0, 5))).toEqual([-128, -128, -128, -128, -128]);
        // all-positive: mn = 0 -> offset -128
        expect(out.scale[1]).toBe(R(1 / 255));
        expect(out.offset[1]).toBe(-128);
        expect(out.q[7]).toBe(top);
        // all-negative: mx = 0 -> offset +127
        expect(out.offset[2]).toBe(top);
        expect(out.q[12]).toBe(-128);
        // constant c > 0: scale = c/255, offset -128, all codes at the top
        expect(out.scale[3]).toBe(R(R(0.02) / 255));
        expect(out.offset[3]).toBe(-128);
        expect(Array.from(out.q.subarray(15, 20))).toEqual([top, top, top, top, top]);
        // signed zeros behave as zeros
        expect(out.scale[4]).toBe(QUANT_EPS);
        expect(Array.from(out.q.subarray(20, 25))).toEqual([-128, -128, -128, -128, -128]);
      });

      it(`${name} ${compute}: symmetric all-zero and constant rows`, () => {
        const w = Float32Array.from([0, 0, 0, 0.5, 0.5, 0.5, -0.5, 0.25, 0]);
        const out = alloc(3, 3);
        quantize(out, w, 3, 3, { scheme: 'sym', compute });
        expect(Array.from(out.scale)).toEqual([QUANT_EPS, roundTo(0.5 / 127, compute), roundTo(0.5 / 127, compute)]);
        expect(Array.from(out.offset)).toEqual([0, 0, 0]);
        expect(Array.from(out.q.subarray(0, 6))).toEqual([0, 0, 0, 127, 127, 127]);
        expect(out.q[6]).toBe(-127);
      });
    }
  }

  it('a zero-column matrix gives eps scales and no codes', () => {
    const out = alloc(2, 0);
    quantizeRows(out, new Float32Array(0), 2, 0, { scheme: 'asym', compute: 'f32' });
    expect(Array.from(out.scale)).toEqual([QUANT_EPS, QUANT_EPS]);
    expect(Array.from(out.offset)).toEqual([-128, -128]);
  });
});

/** Weight-like seeded matrix with planted outliers, tiny-range rows, one-sided rows and exact zeros. */
function makeMatrix(seed: number, rows: number, cols: number, compute: ComputeDType, castToCompute: boolean): Float32Array {
  const rnd = mulberry32(seed);
  const normal = gaussian(rnd);
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const kind = r % 7;
    const std = kind === 5 ? 1e-6 : kind === 6 ? 3 : 0.02;
    for (let c = 0; c < cols; c++) {
      let x = normal() * std;
      if (kind === 3) x = Math.abs(x);
      if (kind === 4) x = -Math.abs(x);
      if (rnd() < 0.01) x = 0;
      w[r * cols + c] = x;
    }
    if (kind === 2 && cols > 0) w[r * cols + Math.floor(rnd() * cols)] *= 100; // planted outlier
  }
  if (castToCompute) for (let i = 0; i < w.length; i++) w[i] = roundTo(w[i], compute);
  return w;
}

describe('fast path == oracle', () => {
  const shapes: [number, number][] = [
    [1, 1],
    [3, 17],
    [14, 64],
    [64, 257],
    [21, 1000],
  ];
  for (const opts of ALL_OPTIONS) {
    it(`${opts.compute} ${opts.scheme}: identical q, scale, offset on seeded random matrices`, () => {
      let seed = 100;
      for (const [rows, cols] of shapes) {
        // For f16/bf16 compute also feed values not representable in it: both paths cast them first.
        for (const cast of opts.compute === 'f32' ? [true] : [true, false]) {
          const w = makeMatrix(seed++, rows, cols, opts.compute, cast);
          const fast = alloc(rows, cols);
          const ref = alloc(rows, cols);
          quantizeRows(fast, w, rows, cols, opts);
          quantizeRowsRef(ref, w, rows, cols, opts);
          const where = `${rows}x${cols} cast=${cast}`;
          expect(firstDifference(fast.q, ref.q), where).toBe(-1);
          expect(firstDifference(fast.scale, ref.scale), where).toBe(-1);
          expect(firstDifference(fast.offset, ref.offset), where).toBe(-1);
        }
      }
    });
  }

  it('codes lie in -128..127 (asym) and -127..127 (sym); offsets are integers, in -128..127 for f32', () => {
    for (const opts of ALL_OPTIONS) {
      const w = makeMatrix(7, 28, 300, opts.compute, true);
      const out = quantizePerChannel(w, 28, 300, opts);
      const lo = opts.scheme === 'asym' ? -128 : -127;
      expect(Math.min(...out.q)).toBeGreaterThanOrEqual(lo);
      expect(Math.max(...out.q)).toBeLessThanOrEqual(127);
      for (const o of out.offset) {
        expect(Number.isInteger(o)).toBe(true);
        // In f32, -mn/scale <= 255 * (1 + 2^-23) rounds to <= 255. fp16/bf16 rounding can exceed it.
        if (opts.compute === 'f32') expect(o >= -128 && o <= 127).toBe(true);
      }
    }
  });

  it('f16 compute can give an offset of 128 on a tiny row, as the fp16 arithmetic dictates', () => {
    // w = -511 * 2^-24 (an fp16 subnormal). range/255 = 2.004 * 2^-24 rounds to 2 * 2^-24 = eps,
    // -mn/scale = 255.5 ties to 256, offset = 128. In f32 the scale stays range/255 and offset is 127.
    const w = Float32Array.of(-511 * 2 ** -24);
    for (const [name, quantize] of QUANTIZERS) {
      const f16 = alloc(1, 1);
      quantize(f16, w, 1, 1, { scheme: 'asym', compute: 'f16' });
      expect([f16.scale[0], f16.offset[0], f16.q[0]], name).toEqual([QUANT_EPS, 128, -128]);
      const f32 = alloc(1, 1);
      quantize(f32, w, 1, 1, { scheme: 'asym', compute: 'f32' });
      expect([f32.offset[0], f32.q[0]], name).toEqual([127, -128]);
    }
  });

  it('quantizePerChannel equals quantizeRows into caller buffers', () => {
    const w = makeMatrix(8, 10, 50, 'f32', true);
    const a = quantizePerChannel(w, 10, 50, { scheme: 'asym', compute: 'f32' });
    const b = alloc(10, 50);
    quantizeRows(b, w, 10, 50, { scheme: 'asym', compute: 'f32' });
    expect(a).toEqual(b);
  });
});

describe('dequantization', () => {
  /**
   * f32 asym/sym: each code is within half a step of w/scale + offset except for float32 rounding
   * of the quotient, the scale (relative 2^-24 each) and the dequantized product. 1e-5 of a step
   * covers those with a wide margin on rows of up to 1000 values of magnitude <= 256 steps.
   */
  const F32_STEP_SLACK = 1e-5;

  it('(q - offset) * scale is within scale/2 of w for f32 compute', () => {
    for (const scheme of ['asym', 'sym'] as const) {
      const rows = 35;
      const cols = 400;
      const w = makeMatrix(9, rows, cols, 'f32', true);
      const out = quantizePerChannel(w, rows, cols, { scheme, compute: 'f32' });
      const deq = new Float32Array(rows * cols);
      dequantizeRows(deq, out.q, out.scale, out.offset, rows, cols);
      for (let r = 0; r < rows; r++) {
        const s = out.scale[r];
        for (let c = 0; c < cols; c++) {
          const i = r * cols + c;
          const err = Math.abs(w[i] - deq[i]);
          if (err > s * (0.5 + F32_STEP_SLACK) + Math.abs(w[i]) * 2 ** -23) {
            throw new Error(`${scheme} row ${r} col ${c}: |w - deq| = ${err} > scale/2 = ${s / 2}`);
          }
        }
      }
    }
  });

  it('dequantizes an all-zero row to exact zeros and computes (q - offset) * scale in float32', () => {
    const out = quantizePerChannel(new Float32Array(4), 1, 4, { scheme: 'asym', compute: 'f32' });
    const deq = new Float32Array(4).fill(1);
    dequantizeRows(deq, out.q, out.scale, out.offset, 1, 4);
    expect(Array.from(deq)).toEqual([0, 0, 0, 0]);
    const d2 = new Float32Array(2);
    dequantizeRows(d2, Int8Array.of(5, -128), Float32Array.of(0.1), Float32Array.of(-3), 1, 2);
    expect(Array.from(d2)).toEqual([Math.fround(8 * Math.fround(0.1)), Math.fround(-125 * Math.fround(0.1))]);
  });

  it('fakeQuantizeRows equals its oracle and, for f32, dequantize(quantize(w))', () => {
    for (const opts of ALL_OPTIONS) {
      const rows = 21;
      const cols = 130;
      const w = makeMatrix(12, rows, cols, opts.compute, opts.compute === 'f32');
      const fast = new Float32Array(rows * cols);
      const ref = new Float32Array(rows * cols);
      fakeQuantizeRows(fast, w, rows, cols, opts);
      fakeQuantizeRowsRef(ref, w, rows, cols, opts);
      expect(firstDifference(fast, ref), `${opts.compute} ${opts.scheme}`).toBe(-1);
      if (opts.compute === 'f32') {
        const qr = quantizePerChannel(w, rows, cols, opts);
        const deq = new Float32Array(rows * cols);
        dequantizeRows(deq, qr.q, qr.scale, qr.offset, rows, cols);
        expect(firstDifference(fast, deq)).toBe(-1);
      }
      // In place (out === w) gives the same result.
      const inPlace = w.slice();
      fakeQuantizeRows(inPlace, inPlace, rows, cols, opts);
      expect(firstDifference(inPlace, fast)).toBe(-1);
    }
  });
});

describe('errors', () => {
  const opts: QuantOptions = { scheme: 'asym', compute: 'f32' };

  for (const [name, quantize] of QUANTIZERS) {
    it(`${name}: E_NONFINITE_WEIGHT names the row and column of the first bad weight`, () => {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const w = makeMatrix(13, 6, 40, 'f32', true);
        w[3 * 40 + 17] = bad;
        w[4 * 40 + 2] = NaN; // a later one is not reported
        const e = catchQuantError(() => quantize(alloc(6, 40), w, 6, 40, opts));
        expect(e.code).toBe('E_NONFINITE_WEIGHT');
        expect(e.row).toBe(3);
        expect(e.col).toBe(17);
        expect(e.message).toContain('row 3, col 17');
      }
    });

    it(`${name}: a finite weight that overflows fp16 is non-finite for f16 compute, fine for bf16`, () => {
      const w = Float32Array.from([0.5, -1, 70000, 2]);
      const e = catchQuantError(() => quantize(alloc(2, 2), w, 2, 2, { scheme: 'sym', compute: 'f16' }));
      expect(e.code).toBe('E_NONFINITE_WEIGHT');
      expect([e.row, e.col]).toEqual([1, 0]);
      expect(e.message).toContain('overflows f16');
      expect(() => quantize(alloc(2, 2), w, 2, 2, { scheme: 'sym', compute: 'bf16' })).not.toThrow();
    });
  }

  it('fakeQuantizeRows reports non-finite weights too', () => {
    const w = Float32Array.from([1, 2, 3, NaN]);
    const e = catchQuantError(() => fakeQuantizeRows(new Float32Array(4), w, 2, 2, opts));
    expect([e.code, e.row, e.col]).toEqual(['E_NONFINITE_WEIGHT', 1, 1]);
  });

  it('rejects wrong lengths (E_SIZE), shapes (E_SHAPE) and options (E_OPTIONS)', () => {
    const w = new Float32Array(6);
    expect(catchQuantError(() => quantizeRows(alloc(2, 3), new Float32Array(5), 2, 3, opts)).code).toBe('E_SIZE');
    expect(catchQuantError(() => quantizeRows({ ...alloc(2, 3), scale: new Float32Array(1) }, w, 2, 3, opts)).code).toBe(
      'E_SIZE',
    );
    expect(catchQuantError(() => quantizeRowsRef(alloc(3, 2), w, 2, 3, { ...opts })).code).toBe('E_SIZE');
    expect(catchQuantError(() => quantizeRows(alloc(2, 3), w, -2, -3, opts)).code).toBe('E_SHAPE');
    expect(catchQuantError(() => quantizeRows(alloc(2, 3), w, 2.5, 3, opts)).code).toBe('E_SHAPE');
    const badScheme = { scheme: 'int4' as QuantScheme, compute: 'f32' as ComputeDType };
    expect(catchQuantError(() => quantizeRows(alloc(2, 3), w, 2, 3, badScheme)).code).toBe('E_OPTIONS');
    const badCompute = { scheme: 'asym' as QuantScheme, compute: 'f64' as ComputeDType };
    expect(catchQuantError(() => quantizeRowsRef(alloc(2, 3), w, 2, 3, badCompute)).code).toBe('E_OPTIONS');
    expect(catchQuantError(() => dequantizeRows(new Float32Array(5), new Int8Array(6), new Float32Array(2), new Float32Array(2), 2, 3)).code).toBe(
      'E_SIZE',
    );
    expect(catchQuantError(() => fakeQuantizeRows(new Float32Array(6), new Float32Array(7), 2, 3, opts)).code).toBe('E_SIZE');
  });
});
