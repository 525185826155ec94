// The m3 grid search on generated (seeded) groups: the fast path against the oracle, the choice rule
// (first minimum, ratio 0 = no smoothing), a planted-outlier case, the kernel hooks and argument errors.

import { describe, expect, it } from 'vitest';
import {
  AntiOutlierError,
  M3_LOSS_REF_REL_TOL,
  M3_LOSS_REF_REL_TOL_F32,
  M3_ROW_BLOCK,
  searchM3Scales,
  searchM3ScalesRef,
  sumSquaredProducts,
  sumSquaredProductsRef,
  type SmoothGroupInput,
} from './index';
import { gaussianF32, seededRandom } from './test-support';

/** sumSquaredProducts vs its Ref: the same products summed in another order (float64): a few ulps. */
const KERNEL_REL_TOL = 1e-12;

function group(seed: number, tokens: number, channels: number, rows: number[], outliers: number[] = [], outlierGain = 1): SmoothGroupInput {
  const rand = seededRandom(seed);
  const x = gaussianF32(tokens * channels, rand);
  for (let t = 0; t < tokens; t++) for (const c of outliers) x[t * channels + c] *= outlierGain;
  const linears = rows.map((n, i) => ({ name: `linear${i}`, weight: gaussianF32(n * channels, rand, 0.05), n }));
  return { x, tokens, channels, linears };
}

function expectLossesClose(got: Float64Array, want: Float64Array, tol: number): void {
  expect(got.length).toBe(want.length);
  want.forEach((w, g) => expect(Math.abs(got[g] / w - 1), `grid ${g}: ${got[g]} vs ${w}`).toBeLessThan(tol));
}

function expectAntiOutlierError(fn: () => unknown, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(AntiOutlierError);
  expect((caught as AntiOutlierError).code).toBe(code);
}

describe('searchM3Scales vs searchM3ScalesRef', () => {
  // Shapes exercise every tail: tokens not a multiple of 4, odd row counts, more rows than one block.
  const cases: [string, SmoothGroupInput][] = [
    ['q/k/v-like, GQA rows', group(1, 13, 48, [48, 16, 16], [5, 17], 20)],
    ['gate/up-like', group(2, 9, 32, [80, 80], [3], 12)],
    ['one odd linear spanning blocks', group(3, 6, 24, [2 * M3_ROW_BLOCK + 3])],
    ['single token, single row', group(4, 1, 8, [1])],
  ];
  for (const [name, input] of cases) {
    for (const scheme of ['asym', 'sym'] as const) {
      it(`${name}, ${scheme}: same choice and scales, losses within M3_LOSS_REF_REL_TOL`, () => {
        const fast = searchM3Scales(input, { scheme });
        const ref = searchM3ScalesRef(input, { scheme });
        expect(fast.gridIndex).toBe(ref.gridIndex);
        expect(fast.ratio).toBe(ref.ratio);
        expect(Array.from(fast.scales)).toEqual(Array.from(ref.scales));
        expectLossesClose(fast.losses, ref.losses, M3_LOSS_REF_REL_TOL);
      });
    }
  }

  it('is unchanged by a float32-buffer kernel (kernelF32) and by a replaced float64 kernel', () => {
    const input = cases[0][1];
    const base = searchM3Scales(input, { scheme: 'asym' });
    const f32 = searchM3Scales(input, { scheme: 'asym', kernelF32: sumSquaredProductsRef });
    const ref64 = searchM3Scales(input, { scheme: 'asym', kernel: sumSquaredProductsRef });
    expect(f32.gridIndex).toBe(base.gridIndex);
    expect(ref64.gridIndex).toBe(base.gridIndex);
    expectLossesClose(f32.losses, base.losses, M3_LOSS_REF_REL_TOL_F32);
    expectLossesClose(ref64.losses, base.losses, KERNEL_REL_TOL);
  });

  it('agrees with the oracle for f16 and bf16 compute (scales, W·s, Q and Wq rounded to that dtype)', () => {
    const input = cases[1][1];
    for (const compute of ['f16', 'bf16'] as const) {
      const fast = searchM3Scales(input, { scheme: 'asym', compute });
      const ref = searchM3ScalesRef(input, { scheme: 'asym', compute });
      expect(fast.gridIndex).toBe(ref.gridIndex);
      expect(Array.from(fast.scales)).toEqual(Array.from(ref.scales));
      expectLossesClose(fast.losses, ref.losses, M3_LOSS_REF_REL_TOL);
    }
  });
});

describe('sumSquaredProducts', () => {
  it('equals its plain twin on every tile/tail combination', () => {
    const rand = seededRandom(11);
    for (const [tokens, rows, C] of [
      [1, 1, 1],
      [3, 5, 7],
      [4, 2, 16],
      [9, 7, 33],
      [16, 16, 64],
    ]) {
      const xs = Float64Array.from(gaussianF32(tokens * C, rand));
      const d = Float64Array.from(gaussianF32(rows * C + 5, rand)); // longer than needed: only the prefix counts
      const want = sumSquaredProductsRef(xs, d, tokens, rows, C);
      const got = sumSquaredProducts(xs, d, tokens, rows, C);
      expect(Math.abs(got / want - 1), `${tokens}x${rows}x${C}`).toBeLessThan(KERNEL_REL_TOL);
    }
  });
});

describe('the choice', () => {
  it('picks a ratio > 0 when activations have planted outlier channels', () => {
    const input = group(21, 32, 64, [64, 16, 16], [7, 40], 30);
    const r = searchM3Scales(input, { scheme: 'asym' });
    expect(r.ratio).toBeGreaterThan(0);
    expect(r.losses[r.gridIndex]).toBeLessThan(r.losses[0]);
    // The scales grow with the activation: the outlier channels get the largest ones.
    const top = Array.from(r.scales)
      .map((v, j) => [v, j])
      .sort((p, q) => q[0] - p[0])
      .slice(0, 2)
      .map((p) => p[1])
      .sort((p, q) => p - q);
    expect(top).toEqual([7, 40]);
  });

  it('keeps the first of equal losses: every channel alike → s = 1 at every ratio → grid 0', () => {
    const input = group(22, 5, 16, [8, 8]);
    // |X| identical in every channel: a is constant, so every a^r normalises to exactly 1.
    for (let t = 0; t < 5; t++) for (let c = 0; c < 16; c++) input.x[t * 16 + c] = t % 2 === 0 ? 0.75 : -0.75;
    const r = searchM3Scales(input, { scheme: 'asym' });
    expect(new Set(r.losses).size).toBe(1);
    expect(r.gridIndex).toBe(0);
    expect(r.ratio).toBe(0);
    expect(Array.from(r.scales).every((v) => v === 1)).toBe(true);
  });

  it('keeps the first of equal minima (strictly-less comparison), whatever their position', () => {
    const input = group(23, 4, 8, [4]); // one linear of 4 rows: one kernel call per grid point
    const pattern = [5, 3, 4, 2, 7, 2, 2, 9];
    let call = 0;
    const r = searchM3Scales(input, { scheme: 'asym', nGrid: pattern.length, kernel: () => pattern[call++] });
    expect(call).toBe(pattern.length);
    expect(r.gridIndex).toBe(3);
    expect(r.ratio).toBe(3 / pattern.length);
    expect(Array.from(r.losses)).toEqual(pattern.map((p) => p / (4 * 4)));
  });

  it('with nGrid = 1 evaluates only ratio 0: scales exactly 1 (plain round-to-nearest)', () => {
    const input = group(24, 6, 12, [6], [2], 50);
    const r = searchM3Scales(input, { scheme: 'sym', nGrid: 1 });
    expect(r.gridIndex).toBe(0);
    expect(Array.from(r.scales).every((v) => v === 1)).toBe(true);
  });
});

describe('argument errors', () => {
  const good = () => group(31, 4, 8, [4, 2]);

  it('E_SHAPE for inconsistent or non-positive dimensions', () => {
    expectAntiOutlierError(() => searchM3Scales({ ...good(), tokens: 5 }, { scheme: 'asym' }), 'E_SHAPE');
    expectAntiOutlierError(() => searchM3Scales({ ...good(), tokens: 0, x: new Float32Array(0) }, { scheme: 'asym' }), 'E_SHAPE');
    expectAntiOutlierError(() => searchM3Scales({ ...good(), channels: 7 }, { scheme: 'asym' }), 'E_SHAPE');
    expectAntiOutlierError(() => searchM3Scales({ ...good(), linears: [] }, { scheme: 'asym' }), 'E_SHAPE');
    const g = good();
    g.linears[1] = { ...g.linears[1], n: 3 };
    expectAntiOutlierError(() => searchM3Scales(g, { scheme: 'asym' }), 'E_SHAPE');
    const h = good();
    h.linears[0] = { ...h.linears[0], n: 1.5, weight: new Float32Array(12) };
    expectAntiOutlierError(() => searchM3ScalesRef(h, { scheme: 'asym' }), 'E_SHAPE');
  });

  it('E_NONFINITE for NaN/Inf activations or weights, naming where', () => {
    const g = good();
    g.x[9] = NaN;
    expectAntiOutlierError(() => searchM3Scales(g, { scheme: 'asym' }), 'E_NONFINITE');
    expect(() => searchM3Scales(g, { scheme: 'asym' })).toThrow(/token 1, channel 1/);
    const h = good();
    h.linears[1].weight[3] = -Infinity;
    expectAntiOutlierError(() => searchM3ScalesRef(h, { scheme: 'asym' }), 'E_NONFINITE');
    expect(() => searchM3Scales(h, { scheme: 'asym' })).toThrow(/linear1.*row 0, col 3/);
  });

  it('E_NONFINITE when W·s overflows float32 during the search', () => {
    // Channel 0's activations are 1e30 and channel 1's 1e-30: after the 1e-4 clamp and normalisation channel 0 scales by ~1e16 at ratio 0.95, and 1e30·1e16 overflows.
    const x = new Float32Array([1e30, 1e-30, 1e30, 1e-30]);
    const weight = new Float32Array([1e30, 1, 1, 1]);
    const input = { x, tokens: 2, channels: 2, linears: [{ name: 'big', weight, n: 2 }] };
    expectAntiOutlierError(() => searchM3Scales(input, { scheme: 'asym' }), 'E_NONFINITE');
    expect(() => searchM3Scales(input, { scheme: 'asym' })).toThrow(/linear 'big'.*row 0/);
  });

  it('E_OPTION for options outside their domain', () => {
    const bad: object[] = [{ scheme: 'int4' }, { scheme: 'asym', compute: 'f64' }, { scheme: 'asym', nGrid: 0 }, { scheme: 'asym', nGrid: 2.5 }, { scheme: 'asym', minScale: 0 }, { scheme: 'asym', minScale: NaN }];
    for (const opts of bad) expectAntiOutlierError(() => searchM3Scales(good(), opts as never), 'E_OPTION');
  });
});
