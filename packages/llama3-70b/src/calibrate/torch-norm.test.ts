// The PyTorch-order float32 sum and RMSNorm used by calibration. Their bit-exactness against PyTorch is shown
// end to end by collect.test.ts (layer 0's folded γ equals msModelSlim's to the bit); here: the simple form for
// short rows, error bounds for long ones, and the norm's float32 op sequence.

import { describe, expect, it } from 'vitest';
import { rmsNormTorchF32, TORCH_F32_LANES, torchInnerSumF32 } from './torch-norm';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * For rows of at most 16 groups of 4 vectors (no cascade carry), PyTorch's order is: four vector accumulators
 * over interleaved vectors, combined 0+1+2+3, lanes added left to right onto 0 (the form that reproduces the
 * fixture, hidden size 128).
 */
function shortRowSum(p: Float32Array): number {
  const f = Math.fround;
  const V = TORCH_F32_LANES;
  const nv = p.length / V;
  let total = 0;
  for (let l = 0; l < V; l++) {
    const ps = [0, 0, 0, 0];
    for (let i = 0; i < nv / 4; i++) for (let k = 0; k < 4; k++) ps[k] = f(ps[k] + p[(i * 4 + k) * V + l]);
    total = f(total + f(f(f(ps[0] + ps[1]) + ps[2]) + ps[3]));
  }
  return total;
}

const acc = new Float32Array(4 * 4 * TORCH_F32_LANES);

describe('torchInnerSumF32', () => {
  it.each([32, 128, 256, 512])('equals the four-accumulator lane sum for %i floats (no cascade)', (n) => {
    const r = rng(n);
    for (let rep = 0; rep < 20; rep++) {
      const p = new Float32Array(n).map(() => (r() - 0.5) * 2 ** Math.floor(r() * 20 - 10));
      expect(torchInnerSumF32(p, 0, n, acc)).toBe(shortRowSum(p));
    }
  });

  it.each([7, 100, 2048, 8192, 8195, 28672])('stays within the float32 summation bound of the exact sum (%i floats)', (n) => {
    const r = rng(n + 1);
    const p = new Float32Array(n).map(() => r() * r());
    let exact = 0;
    let abs = 0;
    for (const v of p) {
      exact += v;
      abs += Math.abs(v);
    }
    // A cascade of depth ~log2(n) float32 adds: error below depth · 2^-24 · Σ|p| (plus the lane fold).
    const bound = (Math.log2(n) + 16) * 2 ** -24 * abs;
    expect(Math.abs(torchInnerSumF32(p, 0, n, acc) - exact)).toBeLessThan(bound);
  });

  it('reads only its window of the array', () => {
    const p = new Float32Array(300).fill(1e30);
    p.fill(0.5, 100, 228);
    expect(torchInnerSumF32(p, 100, 128, acc)).toBe(64);
  });
});

describe('rmsNormTorchF32', () => {
  it('is weight · (x · (1 / sqrt(mean(x²) + eps))) with float32 rounding at every step', () => {
    const r = rng(5);
    const rows = 3;
    const cols = 128;
    const f = Math.fround;
    const x = new Float32Array(rows * cols).map(() => r() - 0.5);
    const w = new Float32Array(cols).map(() => 1 + 0.1 * (r() - 0.5));
    const out = new Float32Array(rows * cols);
    rmsNormTorchF32(out, x, rows, cols, w, 1e-5, new Float32Array(cols));
    for (let row = 0; row < rows; row++) {
      const sq = new Float32Array(cols).map((_, j) => x[row * cols + j] * x[row * cols + j]);
      const rs = f(1 / f(Math.sqrt(f(f(shortRowSum(sq) / cols) + f(1e-5)))));
      for (let j = 0; j < cols; j++) expect(out[row * cols + j]).toBe(f(w[j] * f(x[row * cols + j] * rs)));
    }
  });

  it('may write in place', () => {
    const r = rng(6);
    const x = new Float32Array(2 * 64).map(() => r() - 0.5);
    const w = new Float32Array(64).fill(1.5);
    const out = new Float32Array(x.length);
    rmsNormTorchF32(out, x, 2, 64, w, 1e-6, new Float32Array(64));
    rmsNormTorchF32(x, x, 2, 64, w, 1e-6, new Float32Array(64));
    expect(Array.from(x)).toEqual(Array.from(out));
  });
});
