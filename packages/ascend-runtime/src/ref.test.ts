import { describe, expect, it } from 'vitest';
import { kvDequantRef, kvQuantizeRef, w8a16LinearRef } from './ref';

describe('kvQuantizeRef', () => {
  it('rounds half to even and clamps to -128..127', () => {
    const scale = new Float32Array(8).fill(0.5);
    const offset = new Float32Array(8);
    // x/scale: 0.5, 1.5, 2.5, -0.5, -2.5, 300, -300, 3.25
    const x = Float32Array.from([0.25, 0.75, 1.25, -0.25, -1.25, 150, -150, 1.625]);
    const q = new Int8Array(8);
    kvQuantizeRef(q, x, scale, offset);
    expect(Array.from(q)).toEqual([0, 2, 2, 0, -2, 127, -128, 3]); // Int8Array has no −0
  });

  it('applies the offset before rounding and dequantizes as (q - offset)·scale', () => {
    const scale = Float32Array.from([0.1, 0.2]);
    const offset = Float32Array.from([-3, 5]);
    const x = Float32Array.from([0.52, -0.33]);
    const q = new Int8Array(2);
    kvQuantizeRef(q, x, scale, offset);
    expect(Array.from(q)).toEqual([2, 3]); // round(5.2 − 3) = 2, round(−1.65 + 5) = 3
    const back = new Float32Array(2);
    kvDequantRef(back, q, scale, offset);
    for (let c = 0; c < 2; c++) expect(Math.abs(back[c] - x[c])).toBeLessThanOrEqual(scale[c] / 2 + 1e-7);
  });
});

describe('w8a16LinearRef', () => {
  it('computes y = x·((q − offset)·scale)ᵀ + bias (hand-checked 2×3 case)', () => {
    const q = Int8Array.from([1, -2, 3, 127, -128, 0]);
    const scale = Float32Array.from([0.5, 0.25]);
    const offset = Float32Array.from([1, -1]);
    const x = Float32Array.from([1, 2, 3]);
    const y = new Float32Array(2);
    w8a16LinearRef(y, x, 1, q, scale, offset, 2, 3, Float32Array.from([10, 20]));
    // row 0: (0, −3, 2)·0.5 → 0 − 3 + 3 = 0 → +10; row 1: (128, −127, 1)·0.25 → 32 − 63.5 + 0.75 = −30.75 → +20
    expect(Array.from(y)).toEqual([10, -10.75]);
  });
});
