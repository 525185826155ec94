// Plain-JavaScript fast paths of the host backend (single thread): the `js` kernels, and the non-linear ops
// of the `native` kernels too. Output first, no allocation except scratch owned by the caller.

import type { AttentionBatch, KvQuantParams } from '../backend';
import { f32ToF16, roundHalfEven } from '@w8a16/quant-core';
import { f16ToF32Table } from '../dtype';
import type { KvStorageRef } from '../ref';

/** W8A16: y = scale·(Σ x·q − offset·Σ x) + bias, f64 sums; each weight row is read once for all T tokens. */
export function w8a16LinearJs(
  out: Float32Array,
  x: Float32Array,
  T: number,
  q: Int8Array,
  scale: Float32Array,
  offset: Float32Array,
  n: number,
  k: number,
  bias: Float32Array | undefined,
  xSums: Float64Array,
): void {
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let j = 0; j < k; j++) s += x[t * k + j];
    xSums[t] = s;
  }
  for (let i = 0; i < n; i++) {
    const row = i * k;
    for (let t = 0; t < T; t++) {
      const xo = t * k;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let j = 0;
      for (; j + 4 <= k; j += 4) {
        a0 += x[xo + j] * q[row + j];
        a1 += x[xo + j + 1] * q[row + j + 1];
        a2 += x[xo + j + 2] * q[row + j + 2];
        a3 += x[xo + j + 3] * q[row + j + 3];
      }
      for (; j < k; j++) a0 += x[xo + j] * q[row + j];
      out[t * n + i] = scale[i] * (a0 + a1 + a2 + a3 - offset[i] * xSums[t]) + (bias ? bias[i] : 0);
    }
  }
}

/**
 * Float weights: each row is converted to f32 once (into `rowScratch`, k floats) and used for all T tokens.
 * `w` holds f32 values or f16/bf16 bits.
 */
export function floatLinearJs(
  out: Float32Array,
  x: Float32Array,
  T: number,
  w: Float32Array | Uint16Array,
  dtype: 'f32' | 'f16' | 'bf16',
  n: number,
  k: number,
  bias: Float32Array | undefined,
  rowScratch: Float32Array,
): void {
  const table = dtype === 'f16' ? f16ToF32Table() : undefined;
  const rowBits = new Uint32Array(rowScratch.buffer, rowScratch.byteOffset, rowScratch.length);
  for (let i = 0; i < n; i++) {
    const base = i * k;
    let wr: Float32Array;
    if (dtype === 'f32') {
      wr = w as Float32Array;
    } else {
      if (table) for (let j = 0; j < k; j++) rowScratch[j] = table[w[base + j]];
      else for (let j = 0; j < k; j++) rowBits[j] = w[base + j] << 16;
      wr = rowScratch;
    }
    const wo = dtype === 'f32' ? base : 0;
    for (let t = 0; t < T; t++) {
      const xo = t * k;
      let a0 = 0;
      let a1 = 0;
      let j = 0;
      for (; j + 2 <= k; j += 2) {
        a0 += x[xo + j] * wr[wo + j];
        a1 += x[xo + j + 1] * wr[wo + j + 1];
      }
      if (j < k) a0 += x[xo + j] * wr[wo + j];
      out[t * n + i] = a0 + a1 + (bias ? bias[i] : 0);
    }
  }
}

/** kvWriteRef without temporaries; int8 codes must equal the Ref's bit for bit. */
export function kvWriteJs(cache: KvStorageRef, k: Float32Array, v: Float32Array, T: number, slots: Int32Array): void {
  const kvDim = cache.nKvHeads * cache.headDim;
  const f = Math.fround;
  for (let t = 0; t < T; t++) {
    const slot = slots[t];
    if (slot < 0) continue;
    const dst = slot * kvDim;
    const src = t * kvDim;
    if (cache.dtype === 'int8') {
      const { kScale, kOffset, vScale, vOffset } = cache.quant as KvQuantParams;
      const kc = cache.k as Int8Array;
      const vc = cache.v as Int8Array;
      for (let c = 0; c < kvDim; c++) {
        kc[dst + c] = Math.min(127, Math.max(-128, roundHalfEven(f(f(k[src + c] / kScale[c]) + kOffset[c]))));
        vc[dst + c] = Math.min(127, Math.max(-128, roundHalfEven(f(f(v[src + c] / vScale[c]) + vOffset[c]))));
      }
    } else if (cache.dtype === 'f16') {
      const kc = cache.k as Uint16Array;
      const vc = cache.v as Uint16Array;
      for (let c = 0; c < kvDim; c++) {
        kc[dst + c] = f32ToF16(k[src + c]);
        vc[dst + c] = f32ToF16(v[src + c]);
      }
    } else {
      const kc = cache.k as Float32Array;
      const vc = cache.v as Float32Array;
      for (let c = 0; c < kvDim; c++) {
        kc[dst + c] = k[src + c];
        vc[dst + c] = v[src + c];
      }
    }
  }
}

/** Scratch for pagedAttentionJs, grown by the caller to the longest context and headDim. */
export interface AttentionScratch {
  scores: Float64Array; // [context]
  acc: Float64Array; // [headDim]
  qs: Float64Array; // [headDim]
}

/**
 * Paged causal GQA attention (see Backend.pagedAttention) in f64 JS numbers. For int8 caches the dequantization
 * is folded: q·((k_q − off)·s) = Σ (q·s)·k_q − Σ q·s·off, and Σ p·(v_q − off)·s = s·(Σ p·v_q − off·Σ p).
 */
export function pagedAttentionJs(
  out: Float32Array,
  q: Float32Array,
  nHeads: number,
  cache: KvStorageRef,
  batch: AttentionBatch,
  scale: number,
  scratch: AttentionScratch,
): void {
  const { headDim, nKvHeads, blockSize, dtype } = cache;
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const qCols = nHeads * headDim;
  const table = dtype === 'f16' ? f16ToF32Table() : undefined;
  const quant = dtype === 'int8' ? (cache.quant as KvQuantParams) : undefined;
  const K = cache.k;
  const V = cache.v;
  const { scores, acc, qs } = scratch;
  const val = (arr: Float32Array | Uint16Array | Int8Array, i: number): number => (table ? table[arr[i]] : arr[i]);

  for (let s = 0; s < batch.numSeqs; s++) {
    const bt = s * batch.maxBlocksPerSeq;
    for (let r = batch.queryStart[s]; r < batch.queryStart[s + 1]; r++) {
      const n = batch.positions[r] + 1;
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / group);
        const qo = r * qCols + h * headDim;
        const co = g * headDim;
        let bias = 0;
        for (let d = 0; d < headDim; d++) {
          qs[d] = quant ? q[qo + d] * quant.kScale[co + d] : q[qo + d];
          if (quant) bias += qs[d] * quant.kOffset[co + d];
        }
        let m = -Infinity;
        for (let j = 0; j < n; j++) {
          const ko = (batch.blockTables[bt + ((j / blockSize) | 0)] * blockSize + (j % blockSize)) * kvDim + co;
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += qs[d] * val(K, ko + d);
          const x = (dot - bias) * scale;
          scores[j] = x;
          if (x > m) m = x;
        }
        let z = 0;
        for (let j = 0; j < n; j++) z += scores[j] = Math.exp(scores[j] - m);
        acc.fill(0, 0, headDim);
        for (let j = 0; j < n; j++) {
          const vo = (batch.blockTables[bt + ((j / blockSize) | 0)] * blockSize + (j % blockSize)) * kvDim + co;
          const p = scores[j];
          for (let d = 0; d < headDim; d++) acc[d] += p * val(V, vo + d);
        }
        for (let d = 0; d < headDim; d++) {
          out[qo + d] = quant ? (quant.vScale[co + d] * (acc[d] - quant.vOffset[co + d] * z)) / z : acc[d] / z;
        }
      }
    }
  }
}
