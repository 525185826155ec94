import { quantizePerChannel } from '@w8a16/quant-core';
import { describe, expect, it } from 'vitest';
import { KvCacheError, createMinMax, kvScalesFromMinMax, updateMinMax } from './index';

describe('kvScalesFromMinMax (spec §3.2)', () => {
  it('is symmetric by default: scale = max(|min|, max)/127, offset 0', () => {
    const { scale, offset } = kvScalesFromMinMax(Float32Array.of(-2.54, -1, 0.5, 3), Float32Array.of(1, 1.27, 2, 4));
    const f = Math.fround;
    expect([...scale]).toEqual([f(f(2.54) / 127), f(f(1.27) / 127), f(2 / 127), f(4 / 127)]);
    expect([...offset]).toEqual([0, 0, 0, 0]);
  });

  it('clamps an all-zero channel to eps = 2^-23', () => {
    expect(kvScalesFromMinMax(Float32Array.of(0), Float32Array.of(0)).scale[0]).toBe(2 ** -23);
    expect(kvScalesFromMinMax(Float32Array.of(0), Float32Array.of(0), { sym: false })).toEqual({ scale: Float32Array.of(2 ** -23), offset: Float32Array.of(-128) });
  });

  it('asym: widened to 0, (max-min)/255, offset round_half_even(-min/scale) - 128', () => {
    const { scale, offset } = kvScalesFromMinMax(Float32Array.of(-0.5, 1, -3), Float32Array.of(0.5, 2, -1), { sym: false });
    expect(scale[0]).toBe(Math.fround(1 / 255));
    expect(offset[1]).toBe(-128); // all-positive channel: min widened to 0
    expect(offset[2]).toBe(127); // all-negative channel: max widened to 0
    expect(scale[2]).toBe(Math.fround(3 / 255));
    // -min/scale = 0.5 / f32(1/255) = 127.49999... in f32, so it rounds to 127 and the offset is -1
    expect(Math.fround(0.5 / Math.fround(1 / 255))).toBeLessThan(127.5);
    expect(offset[0]).toBe(-1);
  });

  it('equals the W8A16 per-row quantizer on a row holding only [min, max] (same msModelSlim formula), sym and asym', () => {
    let seed = 7;
    const rnd = () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return (seed / 2 ** 32 - 0.5) * 8;
    };
    const n = 500;
    const min = new Float32Array(n);
    const max = new Float32Array(n);
    for (let c = 0; c < n; c++) {
      const a = rnd();
      const b = rnd();
      min[c] = Math.min(a, b);
      max[c] = c % 10 === 0 ? min[c] : Math.max(a, b);
    }
    const rows = new Float32Array(2 * n);
    for (let c = 0; c < n; c++) {
      rows[2 * c] = min[c];
      rows[2 * c + 1] = max[c];
    }
    for (const scheme of ['sym', 'asym'] as const) {
      const ref = quantizePerChannel(rows, n, 2, { scheme, compute: 'f32' });
      const got = kvScalesFromMinMax(min, max, { sym: scheme === 'sym' });
      expect(got.scale).toEqual(ref.scale);
      expect(got.offset).toEqual(ref.offset);
    }
  });

  it('rejects mismatched lengths and unobserved channels', () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (e) {
        return (e as KvCacheError).code;
      }
      return undefined;
    };
    expect(code(() => kvScalesFromMinMax(new Float32Array(2), new Float32Array(3)))).toBe('E_KV_ARGUMENT');
    const { min, max } = createMinMax(2);
    expect(code(() => kvScalesFromMinMax(min, max))).toBe('E_KV_ARGUMENT');
  });
});

describe('updateMinMax', () => {
  it('tracks per-channel extremes over rows and calls', () => {
    const { min, max } = createMinMax(3);
    updateMinMax(min, max, Float32Array.of(1, -2, 3, 4, 5, -6), 2);
    updateMinMax(min, max, Float32Array.of(0, 9, 0), 1);
    expect([...min]).toEqual([0, -2, -6]);
    expect([...max]).toEqual([4, 9, 3]);
  });
});
