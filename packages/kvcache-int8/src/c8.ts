// C8 (int8 KV cache) calibration math, spec §3.2: per-channel running min/max of the k_proj / v_proj outputs
// and the scale/offset msModelSlim derives from them. Pure functions on typed arrays; the quantize-on-write and
// dequantize-in-attention kernels live in the backends (ascend-runtime), not here.

import { ASYM_LEVELS, ASYM_Q_MIN, QUANT_EPS, SYM_Q_MAX, roundHalfEven } from '@w8a16/quant-core';
import { KvCacheError } from './errors';

const f = Math.fround;

export interface KvScaleOptions {
  /** Symmetric (offset 0), msModelSlim's default (`kv_sym` absent -> True). */
  sym?: boolean;
}

export interface KvQuantScales {
  /** `[channels]` f32, never below QUANT_EPS. */
  scale: Float32Array;
  /** `[channels]` integral values in −128..127 stored as f32; all zero when symmetric. */
  offset: Float32Array;
}

/**
 * Per-channel C8 parameters from observed min/max (f32 arithmetic, as the CPU path computes them):
 * sym: `scale = max(max(|min|, max)/127, eps)`, `offset = 0`;
 * asym: min/max widened to include 0, `scale = max((max − min)/255, eps)`, `offset = round_half_even(−min/scale) − 128`.
 * Quantization is then `q = clamp(round(x/scale + offset), −128, 127)`, dequantization `(q − offset)·scale`.
 */
export function kvScalesFromMinMax(min: Float32Array, max: Float32Array, options: KvScaleOptions = {}): KvQuantScales {
  if (min.length !== max.length) {
    throw new KvCacheError('E_KV_ARGUMENT', `kvScalesFromMinMax: min has ${min.length} channels, max has ${max.length}; expected the same count`);
  }
  const sym = options.sym ?? true;
  const n = min.length;
  const scale = new Float32Array(n);
  const offset = new Float32Array(n);
  for (let c = 0; c < n; c++) {
    if (Number.isNaN(min[c]) || Number.isNaN(max[c]) || min[c] > max[c]) {
      throw new KvCacheError('E_KV_ARGUMENT', `kvScalesFromMinMax: channel ${c} has min ${min[c]} and max ${max[c]}; expected min <= max (no samples observed?)`);
    }
    const mn = Math.min(min[c], 0);
    const mx = Math.max(max[c], 0);
    if (sym) {
      scale[c] = Math.max(f(Math.max(-mn, mx) / SYM_Q_MAX), QUANT_EPS);
      offset[c] = 0;
    } else {
      const s = Math.max(f(f(mx - mn) / ASYM_LEVELS), QUANT_EPS);
      scale[c] = s;
      offset[c] = roundHalfEven(f(-mn / s)) + ASYM_Q_MIN;
    }
  }
  return { scale, offset };
}

/** Fresh running min/max for `channels` channels (+Inf / −Inf, so the first sample sets them). */
export function createMinMax(channels: number): { min: Float32Array; max: Float32Array } {
  if (!Number.isSafeInteger(channels) || channels < 0) {
    throw new KvCacheError('E_KV_ARGUMENT', `createMinMax: channels must be a non-negative integer, found ${channels}`);
  }
  return { min: new Float32Array(channels).fill(Infinity), max: new Float32Array(channels).fill(-Infinity) };
}

/** Folds `x [rows, channels]` (row-major) into the running per-channel `min` / `max`, in place. */
export function updateMinMax(min: Float32Array, max: Float32Array, x: Float32Array, rows: number): void {
  const channels = min.length;
  if (max.length !== channels || x.length !== rows * channels) {
    throw new KvCacheError(
      'E_KV_ARGUMENT',
      `updateMinMax: expected max of ${channels} channels and x of ${rows}x${channels} = ${rows * channels} values, found max ${max.length}, x ${x.length}`,
    );
  }
  for (let r = 0; r < rows; r++) {
    const base = r * channels;
    for (let c = 0; c < channels; c++) {
      const v = x[base + c];
      if (v < min[c]) min[c] = v;
      if (v > max[c]) max[c] = v;
    }
  }
}
