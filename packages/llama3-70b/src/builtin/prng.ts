// Seeded random numbers for the checkpoint generator: xoshiro128** streams keyed by (seed, name) and an
// approximately normal sampler cheap enough for billions of weights. Not for cryptography or statistics work.
//
// Sampler: one 32-bit xoshiro128** output -> the sum of its four bytes (Irwin–Hall with n = 4 over
// 0..255: mean 510, sd sqrt(4·(256²−1)/12) = 147.80, 1021 levels, bounded at ±3.45 sd, kurtosis 2.7
// against a normal's 3). Everything up to the final cast is integer arithmetic or one IEEE multiply-add,
// so the same seed gives the same bytes on any platform. The hot path maps the byte sum through a
// 1021-entry table of already-encoded values (one table per mean/std/factor), which is what makes a
// 3 GB checkpoint take seconds.

import { f32ToBf16, f32ToF16, type FloatDType } from '@w8a16/quant-core';

/** Irwin–Hall(4) over bytes: the sum lies in 0..1020. */
export const IRWIN_HALL_LEVELS = 1021;
export const IRWIN_HALL_MEAN = 510;
/** sqrt(4 · (256² − 1) / 12): the sd of a sum of four independent uniform bytes. */
export const IRWIN_HALL_SD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** FNV-1a over the UTF-16 code units of a name (names are ASCII tensor names). */
export function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** splitmix32 step: advances `z` by the golden-ratio increment and returns a well-mixed word. */
function splitmix32(z: number): [next: number, out: number] {
  const next = (z + 0x9e3779b9) >>> 0;
  let t = next;
  t = Math.imul(t ^ (t >>> 16), 0x21f0aaad);
  t = Math.imul(t ^ (t >>> 15), 0x735a2d97);
  return [next, (t ^ (t >>> 15)) >>> 0];
}

/**
 * The 128-bit xoshiro128** state for stream `name` of `seed`: independent streams per tensor, so a
 * tensor's values depend only on (seed, its name), not on the order or the set of other tensors.
 */
export function streamState(seed: number, name: string): Uint32Array {
  const state = new Uint32Array(4);
  let z = (seed >>> 0) ^ Math.imul(fnv1a32(name), 0x85ebca6b);
  for (let i = 0; i < 4; i++) {
    const [next, out] = splitmix32(z);
    z = next;
    state[i] = out;
  }
  if ((state[0] | state[1] | state[2] | state[3]) === 0) state[0] = 1; // the all-zero state is a fixed point
  return state;
}

/** xoshiro128** (Blackman & Vigna): one 32-bit output, advancing `s` in place. The plain oracle. */
export function xoshiro128ssNext(s: Uint32Array): number {
  const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
  const t = s[1] << 9;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 11);
  return result;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Approximately standard-normal value of one 32-bit word (see the header). */
export function irwinHallZ(word: number): number {
  const sum = (word & 0xff) + ((word >>> 8) & 0xff) + ((word >>> 16) & 0xff) + (word >>> 24);
  return (sum - IRWIN_HALL_MEAN) / IRWIN_HALL_SD;
}

/** The value a weight gets: (mean + std·z)·factor, computed once in float64, then cast by the dtype. */
export function sampleValue(z: number, mean: number, std: number, factor: number): number {
  return (mean + std * z) * factor;
}

/** Bit pattern of x in dtype (F16/BF16: 16 bits, F32: 32 bits), round-to-nearest-even like torch. */
export function encodeBits(x: number, dtype: FloatDType): number {
  if (dtype === 'F16') return f32ToF16(x);
  if (dtype === 'BF16') return f32ToBf16(x);
  SCRATCH_F32[0] = x;
  return SCRATCH_U32[0];
}

const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

/** Typed array whose elements are one value of a dtype: 16-bit for F16/BF16, 32-bit for F32. */
export type BitsArray = Uint16Array | Uint32Array;

/** The 1021 encoded values of (mean + std·z)·factor, indexed by the byte sum. */
export function sampleTable(dtype: FloatDType, mean: number, std: number, factor: number): BitsArray {
  const table = dtype === 'F32' ? new Uint32Array(IRWIN_HALL_LEVELS) : new Uint16Array(IRWIN_HALL_LEVELS);
  for (let k = 0; k < IRWIN_HALL_LEVELS; k++) {
    table[k] = encodeBits(sampleValue((k - IRWIN_HALL_MEAN) / IRWIN_HALL_SD, mean, std, factor), dtype);
  }
  return table;
}

/**
 * Hot kernel: out[i] = table[byte sum of the i-th xoshiro128** output], advancing `state`.
 * Allocates nothing; the state lives in locals for the loop. `out` and `table` have the same width.
 */
export function fillSamples(out: BitsArray, table: BitsArray, state: Uint32Array): void {
  let s0 = state[0] | 0;
  let s1 = state[1] | 0;
  let s2 = state[2] | 0;
  let s3 = state[3] | 0;
  const n = out.length;
  for (let i = 0; i < n; i++) {
    const m = Math.imul(s1, 5);
    const r = Math.imul((m << 7) | (m >>> 25), 9);
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = (s3 << 11) | (s3 >>> 21);
    out[i] = table[(r & 0xff) + ((r >>> 8) & 0xff) + ((r >>> 16) & 0xff) + (r >>> 24)];
  }
  state[0] = s0;
  state[1] = s1;
  state[2] = s2;
  state[3] = s3;
}

/** Plain twin of fillSamples: one generator call, one z, one cast per element (no table). */
export function fillSamplesRef(out: BitsArray, dtype: FloatDType, mean: number, std: number, factor: number, state: Uint32Array): void {
  for (let i = 0; i < out.length; i++) {
    out[i] = encodeBits(sampleValue(irwinHallZ(xoshiro128ssNext(state)), mean, std, factor), dtype);
  }
}

/** A draw in 0..n-1 (n ≪ 2³²: the modulo bias is below n/2³² and the result is reproducible). */
export function nextBelow(state: Uint32Array, n: number): number {
  return xoshiro128ssNext(state) % n;
}
