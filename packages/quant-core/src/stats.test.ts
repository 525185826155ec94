// Error metrics: hand-checked values, the SQNR conventions for exact rows, and merging of chunks.

import { describe, expect, it } from 'vitest';
import { QuantError } from './errors';
import { dequantizeRows, quantizePerChannel, type QuantizedRows } from './quantize';
import {
  emptyQuantErrorStats,
  maxAbsError,
  meanSqnrDb,
  mergeQuantErrorStats,
  quantErrorStats,
  sqnrDb,
  sqnrPerRow,
  type QuantErrorStats,
} from './stats';
import { gaussian, mulberry32 } from './test-helpers';

/** Sums of per-row dB values merged in a different order agree to this relative error. */
const SUM_ORDER_REL_TOL = 1e-12;

function randomWeights(seed: number, rows: number, cols: number): Float32Array {
  const normal = gaussian(mulberry32(seed));
  return Float32Array.from({ length: rows * cols }, (_, i) => normal() * (i % 97 === 0 ? 0.5 : 0.02));
}

function sliceRows(qr: QuantizedRows, from: number, to: number, cols: number): QuantizedRows {
  return { q: qr.q.subarray(from * cols, to * cols), scale: qr.scale.subarray(from, to), offset: qr.offset.subarray(from, to) };
}

describe('quantErrorStats', () => {
  it('computes max |w - deq|, its row and the SQNR of a hand-made example', () => {
    // Row 0: deq = (10 - 2) * 0.5 = 4 and (-5 - 2) * 0.5 = -3.5; row 1: deq = (1 - 0) * 0.25 = 0.25 (exact).
    const w = Float32Array.of(4.2, -3.5, 0.25, 0);
    const qr: QuantizedRows = { q: Int8Array.of(10, -5, 1, 0), scale: Float32Array.of(0.5, 0.25), offset: Float32Array.of(2, 0) };
    const st = quantErrorStats(w, qr, 2, 2, 100);
    const err = Math.fround(4.2) - 4;
    expect(st.rows).toBe(2);
    expect(st.maxAbsError).toBe(err);
    expect(st.worstRow).toBe(100);
    const want = 10 * Math.log10((Math.fround(4.2) ** 2 + 3.5 ** 2) / err ** 2);
    expect(st.minSqnrDb).toBeCloseTo(want, 10);
    expect(st.worstSqnrRow).toBe(100);
    // Row 1 is exact: +Infinity, left out of the sum.
    expect(st.sumSqnrDb).toBeCloseTo(want, 10);
    expect(st.finiteSqnrRows).toBe(1);
    expect(meanSqnrDb(st)).toBeCloseTo(want, 10);
  });

  it('gives all-zero rows +Infinity SQNR and leaves them out of the sum', () => {
    const w = new Float32Array(8);
    const qr = quantizePerChannel(w, 2, 4, { scheme: 'asym', compute: 'f32' });
    const st = quantErrorStats(w, qr, 2, 4);
    expect(st.maxAbsError).toBe(0);
    expect(st.worstRow).toBe(0);
    expect(st.minSqnrDb).toBe(Infinity);
    expect(st.worstSqnrRow).toBe(0);
    expect(st.sumSqnrDb).toBe(0);
    expect(st.finiteSqnrRows).toBe(0);
    expect(meanSqnrDb(st)).toBeUndefined();
  });

  it('agrees with sqnrPerRow + dequantizeRows + maxAbsError on a random matrix', () => {
    const rows = 30;
    const cols = 200;
    const w = randomWeights(1, rows, cols);
    const qr = quantizePerChannel(w, rows, cols, { scheme: 'asym', compute: 'f32' });
    const st = quantErrorStats(w, qr, rows, cols);
    const deq = new Float32Array(rows * cols);
    dequantizeRows(deq, qr.q, qr.scale, qr.offset, rows, cols);
    const per = new Float64Array(rows);
    sqnrPerRow(per, w, deq, rows, cols);
    expect(st.maxAbsError).toBe(maxAbsError(w, deq));
    expect(st.minSqnrDb).toBe(Math.min(...per));
    expect(st.worstSqnrRow).toBe(per.indexOf(st.minSqnrDb));
    expect(st.sumSqnrDb).toBe(per.reduce((a, b) => a + b, 0));
    // 8-bit per-row quantization of Gaussian rows: SQNR in the 30s of dB, not wildly off.
    expect(st.minSqnrDb).toBeGreaterThan(20);
    expect(st.minSqnrDb).toBeLessThan(60);
  });

  it('rejects inconsistent lengths with E_SIZE', () => {
    const qr = quantizePerChannel(new Float32Array(6), 2, 3, { scheme: 'asym', compute: 'f32' });
    const thrown = (f: () => void): unknown => {
      try {
        f();
      } catch (e) {
        return e;
      }
      return undefined;
    };
    const e1 = thrown(() => quantErrorStats(new Float32Array(5), qr, 2, 3));
    expect(e1).toBeInstanceOf(QuantError);
    expect((e1 as QuantError).code).toBe('E_SIZE');
    expect(() => quantErrorStats(new Float32Array(6), qr, 3, 2)).toThrow(/expected w and q of length 6 and scale\/offset of length 3/);
  });
});

describe('mergeQuantErrorStats', () => {
  it('merging the stats of row chunks gives the stats of the whole', () => {
    const rows = 40;
    const cols = 120;
    const w = randomWeights(2, rows, cols);
    const qr = quantizePerChannel(w, rows, cols, { scheme: 'asym', compute: 'f32' });
    const whole = quantErrorStats(w, qr, rows, cols);
    for (const cut of [1, 13, 39]) {
      const a = quantErrorStats(w.subarray(0, cut * cols), sliceRows(qr, 0, cut, cols), cut, cols, 0);
      const b = quantErrorStats(w.subarray(cut * cols), sliceRows(qr, cut, rows, cols), rows - cut, cols, cut);
      const m = mergeQuantErrorStats(mergeQuantErrorStats(emptyQuantErrorStats(), a), b);
      expect({ ...m, sumSqnrDb: 0 }).toEqual({ ...whole, sumSqnrDb: 0 });
      expect(Math.abs(m.sumSqnrDb - whole.sumSqnrDb)).toBeLessThanOrEqual(Math.abs(whole.sumSqnrDb) * SUM_ORDER_REL_TOL);
    }
  });

  it('treats the empty stats as identity and a missing finiteSqnrRows as rows', () => {
    const e = emptyQuantErrorStats();
    expect(mergeQuantErrorStats(e, e)).toEqual(e);
    const handMade: QuantErrorStats = { rows: 4, maxAbsError: 0.5, worstRow: 7, minSqnrDb: 30, worstSqnrRow: 6, sumSqnrDb: 140 };
    expect(mergeQuantErrorStats(e, handMade)).toEqual({ ...handMade, finiteSqnrRows: 4 });
    expect(mergeQuantErrorStats(handMade, e)).toEqual({ ...handMade, finiteSqnrRows: 4 });
    expect(meanSqnrDb(handMade)).toBe(35);
    const other: QuantErrorStats = { ...emptyQuantErrorStats(), rows: 2, maxAbsError: 0.5, worstRow: 1, minSqnrDb: 20, worstSqnrRow: 0, sumSqnrDb: 40, finiteSqnrRows: 2 };
    const m = mergeQuantErrorStats(handMade, other);
    expect(m).toEqual({ rows: 6, maxAbsError: 0.5, worstRow: 7, minSqnrDb: 20, worstSqnrRow: 0, sumSqnrDb: 180, finiteSqnrRows: 6 });
  });
});

describe('small metrics', () => {
  it('sqnrDb follows the documented conventions', () => {
    expect(sqnrDb(100, 1)).toBe(20);
    expect(sqnrDb(0, 0)).toBe(Infinity);
    expect(sqnrDb(5, 0)).toBe(Infinity);
    expect(sqnrDb(0, 1)).toBe(-Infinity);
  });

  it('maxAbsError returns the largest difference, NaN for NaN, and checks lengths', () => {
    expect(maxAbsError(Float32Array.of(1, 2, 3), Float32Array.of(1, 2.5, 2))).toBe(1);
    expect(maxAbsError(new Float32Array(0), new Float32Array(0))).toBe(0);
    expect(maxAbsError(Float32Array.of(1, NaN), Float32Array.of(1, 0))).toBeNaN();
    expect(() => maxAbsError(new Float32Array(2), new Float32Array(3))).toThrow(QuantError);
  });

  it('sqnrPerRow checks its lengths', () => {
    expect(() => sqnrPerRow(new Float64Array(1), new Float32Array(4), new Float32Array(4), 2, 2)).toThrow(/expected out of length 2/);
  });
});
