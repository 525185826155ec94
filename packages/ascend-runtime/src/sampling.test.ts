import { describe, expect, it } from 'vitest';
import type { SamplingParams } from './backend';
import { argmaxRef, createRng, sampleRef } from './sampling';
import { gen } from './test-data';

/** The straightforward HF-order sampler (full sort, no candidate pruning): sampleRef must pick what it picks. */
function sampleNaive(row: Float32Array, p: SamplingParams, u: number): number {
  if (!(p.temperature > 0)) return argmaxRef(row);
  const idx = Array.from(row, (_, i) => i).sort((i, j) => row[j] - row[i] || i - j);
  const m = row[idx[0]];
  let w = idx.map((i) => Math.exp((row[i] - m) / p.temperature));
  if (p.topK && p.topK > 0) w = w.slice(0, p.topK);
  if (p.topP !== undefined && p.topP < 1) {
    const mass = w.reduce((a, b) => a + b, 0);
    let cum = 0;
    let keep = w.length;
    for (let r = 0; r < w.length; r++) if ((cum += w[r]) >= p.topP * mass) { keep = r + 1; break; }
    w = w.slice(0, keep);
  }
  const total = w.reduce((a, b) => a + b, 0);
  let cum = 0;
  for (let r = 0; r < w.length; r++) if (u * total < (cum += w[r])) return idx[r];
  return idx[w.length - 1];
}

describe('createRng', () => {
  it('is deterministic per seed, in [0, 1), and uniform on average', () => {
    const a = createRng(7);
    const b = createRng(7);
    const c = createRng(8);
    const xs = Array.from({ length: 100000 }, () => a.nextFloat());
    expect(xs.slice(0, 50)).toEqual(Array.from({ length: 50 }, () => b.nextFloat()));
    expect(c.nextFloat()).not.toBe(xs[0]);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.005); // 5.5 standard errors (σ/√n = 0.29/316)
  });
});

describe('argmaxRef', () => {
  it('takes the lowest index on ties and never a NaN', () => {
    expect(argmaxRef(Float32Array.from([1, 3, 3, 2]))).toBe(1);
    expect(argmaxRef(Float32Array.from([NaN, -1, NaN]))).toBe(1);
  });
});

describe('sampleRef', () => {
  it('is greedy at temperature 0 and with topK 1', () => {
    const row = gen(1).f32(500);
    const rng = createRng(1);
    for (let i = 0; i < 20; i++) {
      expect(sampleRef(row, { temperature: 0 }, rng)).toBe(argmaxRef(row));
      expect(sampleRef(row, { temperature: 5, topK: 1 }, rng)).toBe(argmaxRef(row));
    }
  });

  it('draws the nucleus with the renormalized probabilities', () => {
    // p = 0.4, 0.3, 0.2, 0.1: top-p 0.5 keeps {0, 1} (0.4 < 0.5 <= 0.7), so P(0) = 4/7
    const row = Float32Array.from([0.4, 0.3, 0.2, 0.1].map(Math.log));
    const rng = createRng(99);
    const n = 20000;
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < n; i++) counts[sampleRef(row, { temperature: 1, topP: 0.5 }, rng)]++;
    expect(counts[2] + counts[3]).toBe(0);
    const sigma = Math.sqrt((n * 4 * 3) / 49);
    expect(Math.abs(counts[0] - (n * 4) / 7)).toBeLessThan(4 * sigma);
  });

  it('picks what the naive full-sort sampler picks, over random logits, seeds and settings', () => {
    const g = gen(5);
    const settings: SamplingParams[] = [
      { temperature: 1 },
      { temperature: 0.7, topK: 40 },
      { temperature: 1.3, topP: 0.9 },
      { temperature: 0.8, topK: 50, topP: 0.95 },
      { temperature: 1, topK: 3, topP: 0.2 },
    ];
    let compared = 0;
    for (let trial = 0; trial < 40; trial++) {
      const row = g.f32(3000, g.uniform(0.5, 4));
      for (const p of settings) {
        const seed = trial * 10 + compared;
        const u = createRng(seed).nextFloat();
        expect(sampleRef(row, p, createRng(seed))).toBe(sampleNaive(row, p, u));
        compared++;
      }
    }
    expect(compared).toBe(200);
  });
});
