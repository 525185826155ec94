// Seeded data for the tests (not exported from the package): the same seed always gives the same arrays.

import { createRng } from './sampling';

export interface Gen {
  /** uniform in [lo, hi) */
  uniform(lo: number, hi: number): number;
  /** standard normal (Box-Muller) */
  normal(): number;
  int(lo: number, hiInclusive: number): number;
  f32(n: number, scale?: number): Float32Array;
  i8(n: number): Int8Array;
}

export function gen(seed: number): Gen {
  const rng = createRng(seed);
  const g: Gen = {
    uniform: (lo, hi) => lo + (hi - lo) * rng.nextFloat(),
    normal: () => Math.sqrt(-2 * Math.log(1 - rng.nextFloat())) * Math.cos(2 * Math.PI * rng.nextFloat()),
    int: (lo, hi) => lo + Math.floor(rng.nextFloat() * (hi - lo + 1)),
    f32: (n, scale = 1) => Float32Array.from({ length: n }, () => g.normal() * scale),
    i8: (n) => Int8Array.from({ length: n }, () => g.int(-128, 127)),
  };
  return g;
}

/** Largest |a[i] − b[i]| / tol[i]; <= 1 means within tolerance everywhere. */
export function worstRatio(a: ArrayLike<number>, b: ArrayLike<number>, tol: (i: number) => number): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    const r = d === 0 ? 0 : d / tol(i);
    if (!(r <= worst)) worst = Number.isNaN(r) ? Infinity : r;
  }
  return worst;
}
