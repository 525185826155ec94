// The native m3GridLosses (src/native/m3.c) against a plain TypeScript twin built on quant-core's fakeQuantizeRows,
// at every instruction set this CPU has. If the addon is missing these FAIL; vitest.global-setup.ts builds it first.
import { describe, expect, it } from 'vitest';
import { fakeQuantizeRows } from '@w8a16/quant-core';
import { loadHostAddon, NATIVE_ISA } from './host/native';
import { gen, type Gen } from './test-data';

/**
 * Native vs Ref on random activations: the native dots are float32 FMA sums (16 lanes, then a float32 reduction)
 * where the Ref sums in float64, ~√C·2^-24 relative per dot; squared and summed over T·n dots the errors average
 * out (less so in these small shapes). Measured ≤ 3.1e-7 here; the m3 search's own float32-kernel bound is the
 * same 1e-6 (anti-outlier's M3_LOSS_REF_REL_TOL_F32).
 */
const M3_NATIVE_REL_TOL = 1e-6;
/**
 * With one-hot activations each dot is a single exact product, so only the float64 summation order of the squares
 * differs (≤ n·C·2^-53 relative): any float32 quantizer step that differed from quant-core's would show far above it
 * (one changed code moves a loss by ~1/(n·C) relative). Measured ≤ 2e-15.
 */
const M3_EXACT_REL_TOL = 1e-12;

/** Σ_t Σ_r (x_t · e_r)² in float64, e_r = fround(w_r − fround(fq_r / s)), fq = fakeQuantizeRows(fround(w ⊙ s)). */
function m3GridLossesRef(x: Float32Array, T: number, C: number, w: Float32Array, n: number, scales: Float32Array, nGrid: number, sym: boolean): Float64Array {
  const out = new Float64Array(nGrid);
  const ws = new Float32Array(n * C);
  const fq = new Float32Array(n * C);
  const e = new Float32Array(n * C);
  for (let g = 0; g < nGrid; g++) {
    const s = scales.subarray(g * C, (g + 1) * C);
    for (let i = 0; i < n * C; i++) ws[i] = w[i] * s[i % C];
    fakeQuantizeRows(fq, ws, n, C, { scheme: sym ? 'sym' : 'asym', compute: 'f32' });
    for (let i = 0; i < n * C; i++) e[i] = w[i] - Math.fround(fq[i] / s[i % C]);
    let total = 0;
    for (let t = 0; t < T; t++) {
      for (let r = 0; r < n; r++) {
        let d = 0;
        for (let j = 0; j < C; j++) d += x[t * C + j] * e[r * C + j];
        total += d * d;
      }
    }
    out[g] = total;
  }
  return out;
}

/** Weights with the quantizer's edge cases: an outlier row, an all-zero row, an all-positive row, a tiny row. */
function weights(r: Gen, n: number, C: number): Float32Array {
  const w = r.f32(n * C, 0.05);
  if (n > 1) w[C + (C >> 1)] = 3; // outlier
  if (n > 2) w.fill(0, 2 * C, 3 * C);
  if (n > 3) for (let j = 0; j < C; j++) w[3 * C + j] = Math.abs(w[3 * C + j]);
  if (n > 4) for (let j = 0; j < C; j++) w[4 * C + j] *= 1e-9;
  return w;
}

/** nGrid scale vectors: all ones first, then log-normal per channel of growing spread (as a^r normalised is). */
function gridScales(r: Gen, nGrid: number, C: number): Float32Array {
  const s = new Float32Array(nGrid * C);
  for (let g = 0; g < nGrid; g++) for (let j = 0; j < C; j++) s[g * C + j] = Math.exp((g / nGrid) * 2 * r.normal());
  return s;
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]) / Math.abs(b[i]);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  return worst;
}

const addon = loadHostAddon();
const isas = Object.entries(NATIVE_ISA).filter(([, v]) => v <= addon.bestIsa());

const SHAPES: { T: number; C: number; n: number; nGrid: number }[] = [
  { T: 13, C: 64, n: 19, nGrid: 5 }, // n not a multiple of the 12-row chunk nor of the 6-row tile, T not of the 4-token tile
  { T: 7, C: 77, n: 6, nGrid: 4 }, // odd C: a masked tail of 13 columns
  { T: 5, C: 33, n: 1, nGrid: 3 }, // a single row
  { T: 1, C: 16, n: 9, nGrid: 2 }, // one token, C exactly one vector
  { T: 24, C: 300, n: 40, nGrid: 20 },
];

describe.each(isas)('m3GridLosses (%s)', (_name, isa) => {
  for (const sym of [false, true]) {
    for (const { T, C, n, nGrid } of SHAPES) {
      it(`${sym ? 'sym' : 'asym'} T=${T} C=${C} n=${n} nGrid=${nGrid}: within M3_NATIVE_REL_TOL of the Ref, same bits at 1 and 2 threads`, () => {
        const r = gen(1000 + T * 7 + C * 13 + n);
        const x = r.f32(T * C);
        const w = weights(r, n, C);
        const scales = gridScales(r, nGrid, C);
        const ref = m3GridLossesRef(x, T, C, w, n, scales, nGrid, sym);
        const one = new Float64Array(nGrid);
        const two = new Float64Array(nGrid);
        expect(addon.m3GridLosses(one, x, T, C, w, n, scales, nGrid, sym ? 1 : 0, 1, isa)).toBe(-1);
        expect(addon.m3GridLosses(two, x, T, C, w, n, scales, nGrid, sym ? 1 : 0, 2, isa)).toBe(-1);
        expect(relErr(one, ref)).toBeLessThanOrEqual(M3_NATIVE_REL_TOL);
        expect(Array.from(two)).toEqual(Array.from(one));
      });
    }
    it(`${sym ? 'sym' : 'asym'}: one-hot activations expose the quantizer bits (M3_EXACT_REL_TOL)`, () => {
      for (const C of [48, 61]) {
        const r = gen(77 + C);
        const n = 11;
        const x = new Float32Array(C * C);
        for (let t = 0; t < C; t++) x[t * C + t] = 1;
        const w = weights(r, n, C);
        const scales = gridScales(r, 6, C);
        const ref = m3GridLossesRef(x, C, C, w, n, scales, 6, sym);
        const out = new Float64Array(6);
        addon.m3GridLosses(out, x, C, C, w, n, scales, 6, sym ? 1 : 0, 1, isa);
        expect(relErr(out, ref)).toBeLessThanOrEqual(M3_EXACT_REL_TOL);
      }
    });
  }

  it('returns the first row whose W⊙s is non-finite', () => {
    const r = gen(5);
    const C = 40;
    const n = 20;
    const w = r.f32(n * C);
    w[13 * C + 39] = Number.NaN;
    w[17 * C + 2] = Infinity;
    const scales = gridScales(r, 2, C);
    expect(addon.m3GridLosses(new Float64Array(2), r.f32(3 * C), 3, C, w, n, scales, 2, 0, 2, isa)).toBe(13);
    const big = new Float32Array(n * C).fill(1);
    big[5 * C] = 3e38; // finite weight, W⊙s overflows at s = 2
    expect(addon.m3GridLosses(new Float64Array(1), r.f32(3 * C), 3, C, big, n, new Float32Array(C).fill(2), 1, 1, 1, isa)).toBe(5);
  });
});

describe('m3GridLosses arguments', () => {
  it('rejects short arrays with E_SHAPE and wrong types with E_ARGUMENT', () => {
    const C = 8;
    const ok = () => [new Float64Array(2), new Float32Array(3 * C), 3, C, new Float32Array(4 * C), 4, new Float32Array(2 * C), 2, 0, 1] as const;
    const a = ok();
    expect(() => addon.m3GridLosses(a[0], a[1], a[2], a[3], new Float32Array(4 * C - 1), a[5], a[6], a[7], a[8], a[9])).toThrow(
      expect.objectContaining({ code: 'E_SHAPE' }),
    );
    expect(() => addon.m3GridLosses(new Float32Array(2) as unknown as Float64Array, a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9])).toThrow(
      expect.objectContaining({ code: 'E_ARGUMENT' }),
    );
  });
});
