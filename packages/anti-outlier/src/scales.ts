// m3 smoothing scales (spec §2.3): the activation statistic a = mean_tokens |X|, the grid scale
// s = clamp(a^r, minScale) / sqrt(max·min), and folding s into a norm weight and its linears' columns.
// Arithmetic follows PyTorch CPU float32 op by op, because the folded γ/s must match msModelSlim to the bit.
// Not here: the grid search itself (search.ts), collecting activations or reading tensors (the app).

import { roundTo, type ComputeDType } from '@w8a16/quant-core';
import { AntiOutlierError } from './errors';
import { torchPowF32 } from './powf';

/** msModelSlim's `n_grid`: ratios g/20 for g = 0..19 (0 .. 0.95; 1.0 is never tried). */
export const M3_N_GRID = 20;
/** msModelSlim clamps a^r from below at 1e-4 (as a float32 scalar) before normalising. */
export const M3_MIN_SCALE = 1e-4;

/** Rounds to the compute dtype; f32 is the common case, so it skips the generic path. */
export function rounderFor(compute: ComputeDType): (x: number) => number {
  return compute === 'f32' ? Math.fround : (x: number) => roundTo(x, compute);
}

/** ceil(log2(x)), and 1 for x <= 2, as c10's `CeilLog2` (it drives torch's summation chunking). */
function ceilLog2(x: number): number {
  if (x <= 2) return 1;
  return Math.ceil(Math.log2(x));
}

/**
 * a[j] = mean over tokens of |x[t, j]| for a row-major `[tokens, channels]` activation matrix.
 * Summed in float32 in the order of PyTorch's CPU outer-dimension reduction (`multi_row_sum` in
 * aten SumKernel.cpp: running sums over chunks of 16 rows, chunk sums carried up to three levels),
 * then divided by `tokens` (`mean` = `sum(...).div_(n)` on CPU). For tokens <= 16 this is a plain
 * left-to-right sum. For f16/bf16 compute the sum is still float32 (torch accumulates reduced
 * floats in float) and the sum and the quotient are rounded to the compute dtype.
 */
export function meanAbsPerChannel(x: Float32Array, tokens: number, channels: number, compute: ComputeDType = 'f32'): Float32Array {
  checkDims('meanAbsPerChannel', tokens, channels);
  if (x.length !== tokens * channels) {
    throw new AntiOutlierError('E_SHAPE', `meanAbsPerChannel: expected x.length = tokens·channels = ${tokens}·${channels} = ${tokens * channels}, found ${x.length}`);
  }
  const f = Math.fround;
  const C = channels;
  const levelPower = Math.max(4, Math.floor(ceilLog2(tokens) / 4));
  const levelStep = 2 ** levelPower;
  const levelMask = levelStep - 1;
  const acc = [new Float32Array(C), new Float32Array(C), new Float32Array(C), new Float32Array(C)];
  const acc0 = acc[0];
  let i = 0;
  for (; i + levelStep <= tokens; ) {
    for (let k = 0; k < levelStep; k++, i++) {
      const base = i * C;
      for (let j = 0; j < C; j++) acc0[j] += Math.abs(x[base + j]); // the Float32Array store rounds each add
    }
    for (let l = 1; l < 4; l++) {
      const hi = acc[l];
      const lo = acc[l - 1];
      for (let j = 0; j < C; j++) {
        hi[j] += lo[j];
        lo[j] = 0;
      }
      // Carry on up only when this chunk completed a whole chunk of the next level.
      if ((i & (levelMask << (l * levelPower))) !== 0) break;
    }
  }
  for (; i < tokens; i++) {
    const base = i * C;
    for (let j = 0; j < C; j++) acc0[j] += Math.abs(x[base + j]);
  }
  const R = rounderFor(compute);
  const out = new Float32Array(C);
  for (let j = 0; j < C; j++) {
    const sum = R(f(f(f(acc0[j] + acc[1][j]) + acc[2][j]) + acc[3][j]));
    out[j] = R(sum / tokens);
  }
  return out;
}

/**
 * Writes the normalised m3 scales for one ratio into `out` (allocates nothing), PyTorch float32 op by op:
 * `s = a.pow(r)` (the exponent as a float32 scalar; 0 gives exactly 1, 0.5 is a sqrt as in torch),
 * `s = s.clamp(min=minScale)`, `s = s / sqrt(s.max() * s.min())`. With f16/bf16 compute every result
 * is rounded to that dtype instead (an inference; the fixtures are float32). Returns the divisor
 * sqrt(max·min).
 */
export function m3ScalesInto(
  out: Float32Array,
  a: Float32Array,
  ratio: number,
  minScale: number = M3_MIN_SCALE,
  compute: ComputeDType = 'f32',
): number {
  const C = a.length;
  if (out.length !== C || C === 0) {
    throw new AntiOutlierError('E_SHAPE', `m3ScalesInto: expected out.length = a.length > 0, found out.length = ${out.length}, a.length = ${C}`);
  }
  if (!Number.isFinite(ratio) || ratio < 0) {
    throw new AntiOutlierError('E_OPTION', `m3ScalesInto: expected a finite ratio >= 0, found ${ratio}`);
  }
  checkMinScale('m3ScalesInto', minScale);
  const R = rounderFor(compute);
  const e = Math.fround(ratio);
  const lo = R(minScale);
  let mx = -Infinity;
  let mn = Infinity;
  for (let j = 0; j < C; j++) {
    const aj = a[j];
    if (!(aj >= 0) || aj === Infinity) {
      throw new AntiOutlierError('E_NONFINITE', `m3ScalesInto: expected finite a >= 0 (a mean of |X|), found a[${j}] = ${aj}`);
    }
    const p = R(torchPowF32(aj, e));
    const s = p < lo ? lo : p;
    out[j] = s;
    if (s > mx) mx = s;
    if (s < mn) mn = s;
  }
  const norm = R(Math.sqrt(R(mx * mn)));
  if (!(norm > 0) || norm === Infinity) {
    throw new AntiOutlierError('E_NONFINITE', `m3ScalesInto: sqrt(max(s)·min(s)) = sqrt(${mx}·${mn}) = ${norm} for ratio ${ratio}; expected a finite positive number`);
  }
  for (let j = 0; j < C; j++) out[j] = R(out[j] / norm);
  return norm;
}

/** Allocating wrapper of m3ScalesInto: the normalised scales `[C]` for `ratio`. */
export function m3ScalesForRatio(a: Float32Array, ratio: number, minScale: number = M3_MIN_SCALE, compute: ComputeDType = 'f32'): Float32Array {
  const out = new Float32Array(a.length);
  m3ScalesInto(out, a, ratio, minScale, compute);
  return out;
}

/**
 * Folds smoothing scales into a norm and the linears it feeds, in place, as msModelSlim does after the
 * search: `γ[j] /= s[j]` and `W[:, j] *= s[j]` for every linear `[n, C]` (float32 results). The product
 * of the norm output and the linears is unchanged up to rounding.
 */
export function foldM3Scales(normWeight: Float32Array, linears: Float32Array[], channels: number, scales: Float32Array): void {
  checkFold('foldM3Scales', normWeight, linears, channels, scales);
  const C = channels;
  for (let j = 0; j < C; j++) normWeight[j] = normWeight[j] / scales[j];
  for (const w of linears) {
    for (let base = 0; base < w.length; base += C) {
      for (let j = 0; j < C; j++) w[base + j] = w[base + j] * scales[j];
    }
  }
}

/**
 * The inverse of foldM3Scales (`γ[j] *= s[j]`, `W[:, j] /= s[j]`): recovers the original tensors exactly
 * when every s is a power of two, otherwise within a couple of float32 ulps (each op rounds once).
 */
export function unfoldM3Scales(normWeight: Float32Array, linears: Float32Array[], channels: number, scales: Float32Array): void {
  checkFold('unfoldM3Scales', normWeight, linears, channels, scales);
  const C = channels;
  for (let j = 0; j < C; j++) normWeight[j] = normWeight[j] * scales[j];
  for (const w of linears) {
    for (let base = 0; base < w.length; base += C) {
      for (let j = 0; j < C; j++) w[base + j] = w[base + j] / scales[j];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Argument checks shared with search.ts.

export function checkDims(fn: string, tokens: number, channels: number): void {
  if (!Number.isSafeInteger(tokens) || tokens <= 0 || !Number.isSafeInteger(channels) || channels <= 0) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected positive integer tokens and channels, found tokens = ${tokens}, channels = ${channels}`);
  }
}

export function checkMinScale(fn: string, minScale: number): void {
  if (!(minScale > 0) || !Number.isFinite(minScale)) {
    throw new AntiOutlierError('E_OPTION', `${fn}: expected a finite minScale > 0, found ${minScale}`);
  }
}

function checkFold(fn: string, normWeight: Float32Array, linears: Float32Array[], channels: number, scales: Float32Array): void {
  if (!Number.isSafeInteger(channels) || channels <= 0) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected a positive integer channel count, found ${channels}`);
  }
  if (normWeight.length !== channels) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected normWeight.length = channels = ${channels}, found ${normWeight.length}`);
  }
  if (scales.length !== channels) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected scales.length = channels = ${channels}, found ${scales.length}`);
  }
  linears.forEach((w, i) => {
    if (w.length === 0 || w.length % channels !== 0) {
      throw new AntiOutlierError('E_SHAPE', `${fn}: expected linears[${i}].length to be a positive multiple of channels = ${channels} ([n, C] row-major), found ${w.length}`);
    }
  });
  for (let j = 0; j < channels; j++) {
    const s = scales[j];
    if (!Number.isFinite(s)) throw new AntiOutlierError('E_NONFINITE', `${fn}: expected finite scales, found scales[${j}] = ${s}`);
    if (!(s > 0)) throw new AntiOutlierError('E_SCALE', `${fn}: expected scales > 0, found scales[${j}] = ${s}`);
  }
}
