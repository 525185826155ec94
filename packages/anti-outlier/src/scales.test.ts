// m3's activation statistic, grid scales, PyTorch's float32 pow and folding, on generated data.

import { describe, expect, it } from 'vitest';
import { AntiOutlierError, M3_MIN_SCALE, foldM3Scales, m3ScalesForRatio, m3ScalesInto, meanAbsPerChannel, unfoldM3Scales } from './index';
import { fmaF32, torchPowF32 } from './powf';
import { gaussianF32, seededRandom } from './test-support';

const f = Math.fround;
/** One float32 ulp, relative: the most a single float32 rounding can move a value. */
const F32_ULP_REL = 2 ** -23;

function expectCode(fn: () => unknown, code: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(AntiOutlierError);
  expect((caught as AntiOutlierError).code).toBe(code);
}

/** Left-to-right float32 sum of |x[t, c]| over rows [from, to), starting from 0. */
function seqAbs(x: Float32Array, C: number, c: number, from: number, to: number): number {
  let s = 0;
  for (let t = from; t < to; t++) s = f(s + Math.abs(x[t * C + c]));
  return s;
}

describe('meanAbsPerChannel (PyTorch CPU float32 summation order)', () => {
  const C = 5;
  const rand = seededRandom(41);

  it('is a left-to-right float32 sum divided by tokens for tokens <= 16', () => {
    const x = gaussianF32(16 * C, rand, 3);
    const a = meanAbsPerChannel(x, 16, C);
    for (let c = 0; c < C; c++) expect(a[c]).toBe(f(seqAbs(x, C, c, 0, 16) / 16));
  });

  it('sums 16-row chunks, then chunk sums, then the leftover rows first (40 tokens)', () => {
    const x = gaussianF32(40 * C, rand, 3);
    const a = meanAbsPerChannel(x, 40, C);
    for (let c = 0; c < C; c++) {
      const chunks = f(seqAbs(x, C, c, 0, 16) + seqAbs(x, C, c, 16, 32));
      expect(a[c]).toBe(f(f(seqAbs(x, C, c, 32, 40) + chunks) / 40));
    }
  });

  it('carries 16 chunk sums up one more level (300 tokens)', () => {
    const x = gaussianF32(300 * C, rand, 3);
    const a = meanAbsPerChannel(x, 300, C);
    for (let c = 0; c < C; c++) {
      let level2 = 0;
      for (let k = 0; k < 16; k++) level2 = f(level2 + seqAbs(x, C, c, 16 * k, 16 * k + 16));
      const level1 = f(seqAbs(x, C, c, 256, 272) + seqAbs(x, C, c, 272, 288));
      const sum = f(f(seqAbs(x, C, c, 288, 300) + level1) + level2);
      expect(a[c]).toBe(f(sum / 300));
    }
  });

  it('rejects a length that does not match tokens × channels (E_SHAPE)', () => {
    expectCode(() => meanAbsPerChannel(new Float32Array(9), 2, 5), 'E_SHAPE');
    expectCode(() => meanAbsPerChannel(new Float32Array(0), 0, 5), 'E_SHAPE');
  });
});

describe('m3ScalesForRatio', () => {
  const rand = seededRandom(42);
  const a = Float32Array.from(gaussianF32(64, rand), (v) => f(Math.abs(v) * 2));
  a[3] = 0; // a dead channel: a^r = 0 for r > 0, clamped to minScale

  it('gives exactly 1 everywhere at ratio 0', () => {
    expect(Array.from(m3ScalesForRatio(a, 0)).every((v) => v === 1)).toBe(true);
  });

  it('normalises so that sqrt(max · min) is 1 (to float32 rounding)', () => {
    for (const r of [0.05, 0.35, 0.5, 0.95]) {
      const s = m3ScalesForRatio(a, r);
      const mx = Math.max(...s);
      const mn = Math.min(...s);
      expect(Math.abs(Math.sqrt(mx * mn) - 1), `ratio ${r}`).toBeLessThan(4 * F32_ULP_REL);
    }
  });

  it('follows the literal float32 formula clamp(a^r, 1e-4) / fround(sqrt(fround(max·min)))', () => {
    const r = 0.45;
    const p = Array.from(a, (v) => Math.max(torchPowF32(v, f(r)), f(M3_MIN_SCALE)));
    const norm = f(Math.sqrt(f(Math.max(...p) * Math.min(...p))));
    expect(Array.from(m3ScalesForRatio(a, r))).toEqual(p.map((v) => f(v / norm)));
    expect(p[3]).toBe(f(M3_MIN_SCALE));
  });

  it('writes in place without allocating a result (m3ScalesInto) and returns the divisor', () => {
    const out = new Float32Array(a.length);
    const norm = m3ScalesInto(out, a, 0.3);
    expect(norm).toBeGreaterThan(0);
    expect(Array.from(out)).toEqual(Array.from(m3ScalesForRatio(a, 0.3)));
  });

  it('rejects bad inputs', () => {
    expectCode(() => m3ScalesInto(new Float32Array(3), a, 0.3), 'E_SHAPE');
    expectCode(() => m3ScalesForRatio(Float32Array.of(1, NaN), 0.3), 'E_NONFINITE');
    expectCode(() => m3ScalesForRatio(Float32Array.of(1, -2), 0.3), 'E_NONFINITE');
    expectCode(() => m3ScalesForRatio(a, -0.1), 'E_OPTION');
    expectCode(() => m3ScalesForRatio(a, 0.3, 0), 'E_OPTION');
  });
});

describe('torchPowF32 (SLEEF xpowf as PyTorch CPU runs it) and fmaF32', () => {
  it('special-cases exponents 0, 1 and 0.5 as torch does', () => {
    expect(torchPowF32(f(3.7), 0)).toBe(1);
    expect(torchPowF32(0, 0)).toBe(1);
    expect(torchPowF32(f(3.7), 1)).toBe(f(3.7));
    expect(torchPowF32(f(2), 0.5)).toBe(f(Math.SQRT2));
    expect(torchPowF32(0, f(0.35))).toBe(0);
    expect(torchPowF32(1, f(0.35))).toBe(1);
  });

  it('is within one float32 ulp of the correctly rounded power, and usually equal to it', () => {
    const rand = seededRandom(43);
    let differ = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) {
      const base = f(Math.exp((rand() - 0.5) * 40));
      const e = f(Math.floor(1 + rand() * 19) / 20);
      const want = f(Math.pow(base, e));
      const got = torchPowF32(base, e);
      expect(Math.abs(got / want - 1)).toBeLessThanOrEqual(F32_ULP_REL);
      if (got !== want) differ++;
    }
    // SLEEF's u10 pow is not correctly rounded: ~1.5% of these inputs come out one ulp away.
    expect(differ).toBeGreaterThan(0);
    expect(differ / n).toBeLessThan(0.05);
  });

  it('rounds a·b + c once, including float64 sums that land exactly on a float32 tie', () => {
    const a = f(1 + 2 ** -12); // a·a = 1 + 2^-11 + 2^-24: exactly halfway between two float32s
    const up = f(1 + 2 ** -11 + 2 ** -23);
    const down = f(1 + 2 ** -11);
    expect(fmaF32(a, a, 2 ** -80)).toBe(up); // a plain fround(a·a + c) would tie to even: down
    expect(fmaF32(a, a, -(2 ** -80))).toBe(down);
    expect(fmaF32(a, a, 0)).toBe(down); // a true tie: to even
    expect(fmaF32(f(1.5), f(1.5), f(-2.25))).toBe(0);
  });
});

describe('foldM3Scales / unfoldM3Scales', () => {
  const C = 24;
  const rand = seededRandom(44);
  const gamma = Float32Array.from(gaussianF32(C, rand), (v) => f(1 + 0.1 * v));
  const q = gaussianF32(16 * C, rand, 0.05);
  const k = gaussianF32(8 * C, rand, 0.05);

  it('divides γ and multiplies W columns, each op rounded once to float32', () => {
    const s = m3ScalesForRatio(Float32Array.from(gaussianF32(C, rand), (v) => f(Math.abs(v) + 0.01)), 0.4);
    const g = gamma.slice();
    const w = q.slice();
    foldM3Scales(g, [w], C, s);
    for (let j = 0; j < C; j++) expect(g[j]).toBe(f(gamma[j] / s[j]));
    for (let i = 0; i < w.length; i++) expect(w[i]).toBe(f(q[i] * s[i % C]));
  });

  it('is undone exactly by unfoldM3Scales for power-of-two scales', () => {
    const s = Float32Array.from({ length: C }, (_, j) => 2 ** ((j % 7) - 3));
    const g = gamma.slice();
    const ws = [q.slice(), k.slice()];
    foldM3Scales(g, ws, C, s);
    unfoldM3Scales(g, ws, C, s);
    expect(Array.from(g)).toEqual(Array.from(gamma));
    expect(Array.from(ws[0])).toEqual(Array.from(q));
    expect(Array.from(ws[1])).toEqual(Array.from(k));
  });

  it('is undone within two float32 roundings for general scales', () => {
    const s = m3ScalesForRatio(Float32Array.from(gaussianF32(C, rand), (v) => f(Math.abs(v) + 0.01)), 0.9);
    const g = gamma.slice();
    const ws = [q.slice(), k.slice()];
    foldM3Scales(g, ws, C, s);
    unfoldM3Scales(g, ws, C, s);
    const close = (got: Float32Array, want: Float32Array) => {
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThanOrEqual(2 * F32_ULP_REL * Math.abs(want[i]));
    };
    close(g, gamma);
    close(ws[0], q);
    close(ws[1], k);
  });

  it('rejects mismatched shapes, non-finite and non-positive scales', () => {
    const s = new Float32Array(C).fill(1);
    expectCode(() => foldM3Scales(new Float32Array(C - 1), [q.slice()], C, s), 'E_SHAPE');
    expectCode(() => foldM3Scales(gamma.slice(), [new Float32Array(C + 1)], C, s), 'E_SHAPE');
    expectCode(() => foldM3Scales(gamma.slice(), [q.slice()], C, new Float32Array(C - 1)), 'E_SHAPE');
    expectCode(() => unfoldM3Scales(gamma.slice(), [q.slice()], 0, s), 'E_SHAPE');
    const bad = s.slice();
    bad[5] = Infinity;
    expectCode(() => foldM3Scales(gamma.slice(), [q.slice()], C, bad), 'E_NONFINITE');
    bad[5] = 0;
    expectCode(() => foldM3Scales(gamma.slice(), [q.slice()], C, bad), 'E_SCALE');
  });

  it('leaves the tensors untouched when it rejects its arguments', () => {
    const s = new Float32Array(C).fill(2);
    s[C - 1] = -1;
    const g = gamma.slice();
    expectCode(() => foldM3Scales(g, [q.slice()], C, s), 'E_SCALE');
    expect(Array.from(g)).toEqual(Array.from(gamma));
  });
});
