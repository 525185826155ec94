// Plain TypeScript reference kernels: the oracle every fast kernel is tested against. Clear, not fast.
// Products and sums run in f64 and each result is rounded once to f32, so they sit closer to exact than any f32 kernel.

import type { AttentionBatch, FloatWeightDType, KvCacheDType, KvQuantParams } from './backend';
import { bf16ToF32, f32ToF16, roundHalfEven } from '@w8a16/quant-core';
import { f16ToF32Table } from './dtype';

const f = Math.fround;

/** A float weight on the host: f32 values, or f16/bf16 bit patterns. */
export interface FloatWeightRef {
  dtype: FloatWeightDType;
  data: Float32Array | Uint16Array;
}

/** Element `i` of a float weight as an f32 value. */
function weightAt(w: FloatWeightRef, i: number): number {
  if (w.dtype === 'f32') return w.data[i];
  if (w.dtype === 'f16') return f16ToF32Table()[w.data[i]];
  return bf16ToF32(w.data[i]);
}

/** out[t, :] = table[ids[t], :]; out `[ids.length, hidden]`. */
export function embeddingRef(out: Float32Array, table: FloatWeightRef, hidden: number, ids: Int32Array): void {
  for (let t = 0; t < ids.length; t++) {
    for (let c = 0; c < hidden; c++) out[t * hidden + c] = weightAt(table, ids[t] * hidden + c);
  }
}

/** HF LlamaRMSNorm in f32: `weight · (x · rsqrt(mean(x²) + eps))`, per row of `[rows, cols]`. `out` may be `x`. */
export function rmsNormRef(
  out: Float32Array,
  x: Float32Array,
  rows: number,
  cols: number,
  weight: Float32Array,
  eps: number,
): void {
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c] * x[r * cols + c];
    const inv = f(1 / Math.sqrt(f(f(ss / cols) + eps)));
    for (let c = 0; c < cols; c++) out[r * cols + c] = f(weight[c] * f(x[r * cols + c] * inv));
  }
}

/** `out[T, n] = x[T, k] · Wᵀ + bias` with W `[n, k]` float (f32/f16/bf16), f64 accumulation. */
export function floatLinearRef(
  out: Float32Array,
  x: Float32Array,
  T: number,
  w: FloatWeightRef,
  n: number,
  k: number,
  bias?: Float32Array,
): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let j = 0; j < k; j++) acc += x[t * k + j] * weightAt(w, i * k + j);
      out[t * n + i] = acc + (bias ? bias[i] : 0);
    }
  }
}

/**
 * W8A16: `out[T, n] = x[T, k] · ((q − offset)·scale)ᵀ + bias`, q int8 `[n, k]`, per-row scale/offset (spec §1.3).
 * The dequantized weight is rounded to f32 (the compute dtype); the dot product accumulates in f64.
 */
export function w8a16LinearRef(
  out: Float32Array,
  x: Float32Array,
  T: number,
  q: Int8Array,
  scale: Float32Array,
  offset: Float32Array,
  n: number,
  k: number,
  bias?: Float32Array,
): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let j = 0; j < k; j++) acc += x[t * k + j] * f((q[i * k + j] - offset[i]) * scale[i]);
      out[t * n + i] = acc + (bias ? bias[i] : 0);
    }
  }
}

/**
 * Rotary embedding in place, HF rotate_half layout: for each head and i < headDim/2, with a = pos·invFreq[i]
 * (f32), x1 = x[i], x2 = x[i + half]: x[i] = x1·cos a − x2·sin a, x[i + half] = x2·cos a + x1·sin a.
 * q `[T, qCols]`, k `[T, kCols]`, both multiples of headDim.
 */
export function ropeRef(
  q: Float32Array,
  k: Float32Array,
  T: number,
  qCols: number,
  kCols: number,
  headDim: number,
  positions: Int32Array,
  invFreq: Float32Array,
): void {
  const half = headDim / 2;
  const rotate = (x: Float32Array, cols: number, t: number): void => {
    for (let h = 0; h < cols / headDim; h++) {
      const base = t * cols + h * headDim;
      for (let i = 0; i < half; i++) {
        const a = f(positions[t] * invFreq[i]);
        const c = f(Math.cos(a));
        const s = f(Math.sin(a));
        const x1 = x[base + i];
        const x2 = x[base + i + half];
        x[base + i] = f(x1 * c) - f(x2 * s);
        x[base + i + half] = f(x2 * c) + f(x1 * s);
      }
    }
  };
  for (let t = 0; t < T; t++) {
    rotate(q, qCols, t);
    rotate(k, kCols, t);
  }
}

/** out = silu(gate) · up = gate / (1 + e^−gate) · up. `out` may alias either input. */
export function siluMulRef(out: Float32Array, gate: Float32Array, up: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = f(gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
}

/** out = a + b. `out` may alias either input. */
export function addRef(out: Float32Array, a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i] + b[i];
}

/** Per-channel int8 KV codes (spec §3.2): `q = clamp(round_half_even(f32(x/scale) + offset), −128, 127)`. */
export function kvQuantizeRef(out: Int8Array, x: Float32Array, scale: Float32Array, offset: Float32Array): void {
  for (let c = 0; c < out.length; c++) {
    out[c] = Math.min(127, Math.max(-128, roundHalfEven(f(f(x[c] / scale[c]) + offset[c]))));
  }
}

/** out = (q − offset) · scale in f32. */
export function kvDequantRef(out: Float32Array, q: Int8Array, scale: Float32Array, offset: Float32Array): void {
  for (let c = 0; c < out.length; c++) out[c] = f((q[c] - offset[c]) * scale[c]);
}

/** One layer's paged cache on the host: K and V, each `[numBlocks, blockSize, nKvHeads, headDim]`. */
export interface KvStorageRef {
  dtype: KvCacheDType;
  numBlocks: number;
  blockSize: number;
  nKvHeads: number;
  headDim: number;
  /** Float32Array (f32), Uint16Array of f16 bits (f16), Int8Array codes (int8). */
  k: Float32Array | Uint16Array | Int8Array;
  v: Float32Array | Uint16Array | Int8Array;
  quant?: KvQuantParams;
}

/** Scatter rows of k, v `[T, kvDim]` to `slots[t] = block·blockSize + offset` (negative: skip), quantizing for int8. */
export function kvWriteRef(cache: KvStorageRef, k: Float32Array, v: Float32Array, T: number, slots: Int32Array): void {
  const kvDim = cache.nKvHeads * cache.headDim;
  for (let t = 0; t < T; t++) {
    if (slots[t] < 0) continue;
    const dst = slots[t] * kvDim;
    const kRow = k.subarray(t * kvDim, (t + 1) * kvDim);
    const vRow = v.subarray(t * kvDim, (t + 1) * kvDim);
    if (cache.dtype === 'int8') {
      const qp = cache.quant as KvQuantParams;
      kvQuantizeRef((cache.k as Int8Array).subarray(dst, dst + kvDim), kRow, qp.kScale, qp.kOffset);
      kvQuantizeRef((cache.v as Int8Array).subarray(dst, dst + kvDim), vRow, qp.vScale, qp.vOffset);
    } else if (cache.dtype === 'f16') {
      for (let c = 0; c < kvDim; c++) {
        (cache.k as Uint16Array)[dst + c] = f32ToF16(kRow[c]);
        (cache.v as Uint16Array)[dst + c] = f32ToF16(vRow[c]);
      }
    } else {
      (cache.k as Float32Array).set(kRow, dst);
      (cache.v as Float32Array).set(vRow, dst);
    }
  }
}

/** Element `c` of cache row `slot` (K or V) as f32. */
function kvAt(cache: KvStorageRef, which: 'k' | 'v', slot: number, c: number): number {
  const kvDim = cache.nKvHeads * cache.headDim;
  const raw = cache[which][slot * kvDim + c];
  if (cache.dtype === 'f32') return raw;
  if (cache.dtype === 'f16') return f16ToF32Table()[raw];
  const qp = cache.quant as KvQuantParams;
  const [scale, offset] = which === 'k' ? [qp.kScale, qp.kOffset] : [qp.vScale, qp.vOffset];
  return f((raw - offset[c]) * scale[c]);
}

/**
 * Paged causal GQA attention (see Backend.pagedAttention): for each query row r of sequence s at position p and
 * head h, keys/values 0..p of s read through its block table, KV head `h / (nHeads / nKvHeads)`, f64 softmax.
 */
export function pagedAttentionRef(
  out: Float32Array,
  q: Float32Array,
  nHeads: number,
  cache: KvStorageRef,
  batch: AttentionBatch,
  scale: number,
): void {
  const { headDim, nKvHeads, blockSize } = cache;
  const group = nHeads / nKvHeads;
  const qCols = nHeads * headDim;
  for (let s = 0; s < batch.numSeqs; s++) {
    const slotOf = (j: number): number =>
      batch.blockTables[s * batch.maxBlocksPerSeq + Math.floor(j / blockSize)] * blockSize + (j % blockSize);
    for (let r = batch.queryStart[s]; r < batch.queryStart[s + 1]; r++) {
      const p = batch.positions[r];
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / group);
        const scores: number[] = [];
        for (let j = 0; j <= p; j++) {
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += q[r * qCols + h * headDim + d] * kvAt(cache, 'k', slotOf(j), g * headDim + d);
          scores.push(dot * scale);
        }
        const m = Math.max(...scores);
        const w = scores.map((x) => Math.exp(x - m));
        const z = w.reduce((a, b) => a + b, 0);
        for (let d = 0; d < headDim; d++) {
          let acc = 0;
          for (let j = 0; j <= p; j++) acc += w[j] * kvAt(cache, 'v', slotOf(j), g * headDim + d);
          out[r * qCols + h * headDim + d] = acc / z;
        }
      }
    }
  }
}

/**
 * Plain causal GQA attention over one sequence with contiguous K, V `[L, nKvHeads·headDim]` (no cache, no
 * blocks): query row r at position `positions[r]` sees keys 0..positions[r]. The oracle for pagedAttention.
 */
export function attentionContiguousRef(
  out: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  positions: Int32Array,
  nHeads: number,
  nKvHeads: number,
  headDim: number,
  scale: number,
): void {
  const kvDim = nKvHeads * headDim;
  const qCols = nHeads * headDim;
  for (let r = 0; r < positions.length; r++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor((h * nKvHeads) / nHeads);
      const n = positions[r] + 1;
      const logits = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[r * qCols + h * headDim + d] * k[j * kvDim + g * headDim + d];
        logits[j] = dot * scale;
      }
      let m = -Infinity;
      for (const x of logits) m = Math.max(m, x);
      let z = 0;
      for (let j = 0; j < n; j++) z += (logits[j] = Math.exp(logits[j] - m));
      for (let d = 0; d < headDim; d++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += logits[j] * v[j * kvDim + g * headDim + d];
        out[r * qCols + h * headDim + d] = acc / z;
      }
    }
  }
}
