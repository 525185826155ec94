// The per-row metrics against hand-computed values and their defining properties (KL ≥ 0, shift invariance,
// exact 0 on identical rows, no overflow on extreme logits).

import { describe, expect, it } from 'vitest';
import { argmaxRow, compareRows, emptyTotals, klDivergenceRows, logSumExp, mergeTotals, nllOf, refRowStats } from './metrics';

/** f64 results of a few exp/log over ≤ 16 terms: a handful of ulps of the values involved. */
const F64_TOL = 1e-12;

/** Seeded logits on a 1/1024 grid, so adding a constant like 3.5 to them is exact in f32. */
function seededRows(seed: number, n: number, scale: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = Math.round((s / 2 ** 32 - 0.5) * scale * 1024) / 1024;
  }
  return out;
}

const kl = (p: Float32Array, q: Float32Array) => klDivergenceRows(p, 0, logSumExp(p, 0, p.length), q, 0, logSumExp(q, 0, q.length), p.length);

describe('logSumExp / argmax / nll', () => {
  it('is stable for logits that overflow exp', () => {
    const x = Float32Array.from([1000, 1000]);
    expect(logSumExp(x, 0, 2)).toBeCloseTo(1000 + Math.LN2, 12);
    const y = Float32Array.from([-1000, -1000, -1000, -1000]);
    expect(logSumExp(y, 0, 4)).toBeCloseTo(-1000 + Math.log(4), 12);
  });

  it('reads the row at its offset; argmax takes the first of equal maxima', () => {
    const rows = Float32Array.from([9, 9, 9, 0, 2, 2, 1]);
    expect(argmaxRow(rows, 3, 4)).toBe(1);
    expect(logSumExp(rows, 3, 4)).toBeCloseTo(Math.log(1 + 2 * Math.exp(2) + Math.E), 12);
    const lse = logSumExp(rows, 3, 4);
    expect(nllOf(rows, 3, lse, 3)).toBeCloseTo(lse - 1, 12);
  });
});

describe('klDivergenceRows', () => {
  it('equals the hand value: P = (1/4, 3/4), Q = (1/2, 1/2)', () => {
    const p = Float32Array.from([0, Math.log(3)]);
    const q = Float32Array.from([0, 0]);
    expect(Math.abs(kl(p, q) - (0.25 * Math.log(0.5) + 0.75 * Math.log(1.5)))).toBeLessThan(1e-7); // log 3 rounded to f32
  });

  it('is exactly 0 for identical rows, ≥ 0 otherwise, and invariant to shifting a row', () => {
    const p = seededRows(1, 512, 8);
    expect(kl(p, p)).toBe(0);
    for (let seed = 2; seed < 12; seed++) {
      const q = seededRows(seed, 512, 8);
      const d = kl(p, q);
      expect(d).toBeGreaterThan(0);
      const shifted = q.map((v) => v + 3.5);
      expect(Math.abs(kl(p, shifted) - d)).toBeLessThan(F64_TOL);
    }
  });

  it('stays finite when the rows put their mass on different tokens with logits 1e4 apart', () => {
    const p = Float32Array.from([1e4, 0, 0]);
    const q = Float32Array.from([0, 1e4, 0]);
    const d = kl(p, q);
    expect(Number.isFinite(d)).toBe(true);
    expect(d).toBeCloseTo(1e4, 6); // all of P's mass where Q has log q = -1e4
  });
});

describe('compareRows', () => {
  it('counts top-1 agreement, KL per row and NLL of the actual next token', () => {
    const vocab = 3;
    const ids = [0, 2, 1];
    const ref = Float32Array.from([0, 1, 2, 2, 1, 0, 0, 3, 0]); // argmax 2, 0, 1
    const got = Float32Array.from([0, 1, 2, 0, 1, 0, 0, 3, 0]); // argmax 2, 1, 1
    const stats = refRowStats(ref, 3, vocab);
    const t = emptyTotals();
    const kls = compareRows(t, 5, 0, ids, ref, stats, got, 3, vocab);
    expect(t.positions).toBe(3);
    expect(t.top1Agree).toBe(2);
    expect(kls[0]).toBe(0);
    expect(kls[2]).toBe(0);
    expect(kls[1]).toBeGreaterThan(0);
    expect(t.klMax).toBe(kls[1]);
    expect(t.klMaxAt).toEqual({ sequence: 5, position: 1 });
    expect(t.predicted).toBe(2); // the last position has no next token
    const nllRef = stats.lse[0] - ref[2] + (stats.lse[1] - ref[3 + 1]);
    expect(Math.abs(t.nllSumRef - nllRef)).toBeLessThan(F64_TOL);
    const nllGot = logSumExp(got, 0, 3) - got[2] + (logSumExp(got, 3, 3) - got[4]);
    expect(Math.abs(t.nllSum - nllGot)).toBeLessThan(F64_TOL);
  });

  it('mergeTotals adds counts and keeps the larger maximum with its place', () => {
    const a = { ...emptyTotals(), positions: 2, top1Agree: 1, klSum: 0.5, klMax: 0.4, klMaxAt: { sequence: 0, position: 1 }, predicted: 1, nllSumRef: 1, nllSum: 2 };
    const b = { ...emptyTotals(), positions: 3, top1Agree: 3, klSum: 0.3, klMax: 0.2, klMaxAt: { sequence: 1, position: 0 }, predicted: 2, nllSumRef: 1, nllSum: 1 };
    const t = emptyTotals();
    mergeTotals(t, b);
    mergeTotals(t, a);
    expect(t).toEqual({ positions: 5, top1Agree: 4, klSum: 0.8, klMax: 0.4, klMaxAt: { sequence: 0, position: 1 }, predicted: 3, nllSumRef: 2, nllSum: 3 });
  });
});
