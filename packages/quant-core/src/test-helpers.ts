// Seeded data generators and fixture paths shared by this package's tests (not part of the build).

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repo root = three levels above this file (packages/quant-core/src). */
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** Reference fixtures live beside the repo, read in place (never copied in). */
export const FIXTURES_DIR = path.resolve(REPO_ROOT, '../shared/fixtures');

export function readFixtureJson<T>(rel: string): T {
  return JSON.parse(readFileSync(path.join(FIXTURES_DIR, rel), 'utf8')) as T;
}

/** mulberry32: tiny seeded PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box-Muller) from a uniform source. */
export function gaussian(rnd: () => number): () => number {
  return () => {
    const u = 1 - rnd();
    const v = rnd();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** Random uint32 bit patterns. */
export function randomU32(rnd: () => number): () => number {
  return () => (Math.floor(rnd() * 65536) * 65536 + Math.floor(rnd() * 65536)) >>> 0;
}

/** float32 whose bit pattern is `bits`. */
export function f32FromBits(bits: number): number {
  const u = new Uint32Array([bits >>> 0]);
  return new Float32Array(u.buffer)[0];
}

/** Index of the first element where a and b differ (Object.is: NaN equals NaN, 0 differs from -0), or -1. */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}
