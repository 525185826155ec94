// The Backend test suite every backend runs (host js, host native at each ISA, Ascend on the stand-in): every op on
// seeded data against the Ref kernels of src/ref.ts, and every misuse's error code. Not a test file, not exported.

import { describe, expect, it } from 'vitest';
import type { Backend, FloatWeightDType, KvCacheDType, KvQuantParams, Tensor } from './backend';
import { bf16ToF32, f16ToF32Table, f32ToBf16Bits, f32ToF16Bits } from './dtype';
import {
  addRef,
  attentionContiguousRef,
  embeddingRef,
  floatLinearRef,
  kvQuantizeRef,
  pagedAttentionRef,
  rmsNormRef,
  ropeRef,
  siluMulRef,
  w8a16LinearRef,
  type KvStorageRef,
} from './ref';
import { computeInvFreq } from './rope';
import { argmaxRef, createRng, sampleRef } from './sampling';
import { gen, worstRatio } from './test-data';

/** What a backend promises beyond the contract; each option tightens the suite's tolerances, never loosens them. */
export interface BackendSuiteOptions {
  /**
   * rmsNorm, siluMul and rope round exactly as the Refs do (the host backend runs the Refs' own f32 expressions):
   * compare bit for bit instead of within ELEMENTWISE_ULPS.
   */
  bitExactElementwise?: boolean;
  /**
   * Attention scores and the softmax-weighted sum run in f64, as in pagedAttentionRef (host js kernels, the stand-in):
   * only the output rounding and the summation order differ, so hold it to ATTN_F64_REL_TOL · max|v| as well.
   */
  f64Attention?: boolean;
}

const U = 2 ** -24; // f32 unit roundoff

/** Elementwise ops and norms computed with the same f32 roundings as the Refs, up to libm differences: a few ulps. */
const ELEMENTWISE_ULPS = 4;
/** f64 attention against the f64 Ref: convex combinations of v, only output rounding and order differ. */
const ATTN_F64_REL_TOL = 2 ** -20;
/** The f64 Ref RMSNorm against its formula: a chain of at most 8 f32 roundings (mean, eps add, rsqrt, two products). */
const RMSNORM_FORMULA_ULPS = 8;

/**
 * W8A16 against the Ref and an f64 dequantize-then-matmul. The Ref rounds each dequantized weight to f32 (≤ U relative)
 * and sums in f64. A backend may sum x·q in f64 and apply the scale once (host js), sum f32-rounded dequantized weights
 * in f64 (stand-in), or code each activation with a power-of-two step ≤ amax·2^-28, moving x_j by ≤ amax·2^-29, and
 * then sum exactly (host native). Every output rounds to f32 once (≤ U·|y|).
 */
function w8a16Tol(sumAbsXW: number, amax: number, sumAbsW: number, y: number): number {
  return 2 * U * sumAbsXW + amax * 2 ** -29 * sumAbsW + 2 * U * Math.abs(y) + 1e-30;
}

/** Float linear: an f32 accumulation of k products in any order errs by at most k·U·Σ|x·w| (Ref: f64), plus output rounding. */
function floatTol(k: number, sumAbsXW: number, y: number): number {
  return (k + 2) * U * sumAbsXW + 2 * U * Math.abs(y) + 1e-30;
}

/**
 * Paged attention vs an f64 oracle. An f32 kernel errs in each score by at most δ = (headDim + 2)·U·scale·Σ_d|q_d·k_d|
 * (bounded by ‖q_h‖₁·max|k|), which scales every softmax weight by a factor within e^{±2δ}; the weighted sum over
 * the context adds at most (context + 4)·U·max|v|. So |Δout| ≤ (e^{2δ} − 1 + (context + 4)·U)·max|v|.
 */
function attnTol(q: Float32Array, qDim: number, headDim: number, positions: Int32Array, kmax: number, vmax: number): (i: number) => number {
  const scale = 1 / Math.sqrt(headDim);
  return (i) => {
    const r = Math.floor(i / qDim);
    const h0 = r * qDim + Math.floor((i % qDim) / headDim) * headDim;
    let q1 = 0;
    for (let d = 0; d < headDim; d++) q1 += Math.abs(q[h0 + d]);
    const delta = (headDim + 2) * U * scale * q1 * kmax;
    return (Math.expm1(2 * delta) + (positions[r] + 5) * U) * vmax;
  };
}

const maxAbs = (arrs: Float32Array[]): number => arrs.reduce((m, a) => a.reduce((mm, x) => Math.max(mm, Math.abs(x)), m), 0);

function tensorOf(b: Backend, rows: number, cols: number, data: Float32Array): Tensor {
  const t = b.alloc(rows, cols, 'f32');
  b.upload(t, data);
  return t;
}

function encode(data: Float32Array, dtype: FloatWeightDType): Float32Array | Uint16Array {
  if (dtype === 'f32') return data;
  return Uint16Array.from(data, dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits);
}

/** Round-trips data through the dtype so the f64 expectations see exactly the stored weights. */
function decodeBack(data: Float32Array, dtype: FloatWeightDType): Float32Array {
  if (dtype === 'f32') return data;
  const bits = encode(data, dtype);
  return Float32Array.from(bits, dtype === 'f16' ? (h) => f16ToF32Table()[h] : bf16ToF32);
}

/** The error code `fn` throws, or undefined when it returns. */
function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

/** [n, k, T] shapes: degenerate, odd, token counts around the native kernels' blocking, a wide k (the W8A16 op allows k up to 65535). */
export const SUITE_LINEAR_SHAPES: [n: number, k: number, T: number][] = [
  [1, 1, 1],
  [1, 37, 1],
  [7, 33, 1],
  [5, 31, 3],
  [13, 100, 17],
  [9, 64, 16],
  [64, 4133, 2],
  [3, 8195, 1],
  [300, 257, 5],
];

/** Registers the suite for backends made by `make` (f32 activations: the suite compares against f32 Refs). */
export function describeBackendSuite(label: string, make: () => Backend, opts: BackendSuiteOptions = {}): void {
  /** Backend output against a Ref of the same f32 expression: bit for bit, or within ELEMENTWISE_ULPS. */
  const expectElementwise = (got: Float32Array, ref: Float32Array): void => {
    if (opts.bitExactElementwise) expect(Array.from(got)).toEqual(Array.from(ref));
    else expect(worstRatio(got, ref, (i) => ELEMENTWISE_ULPS * U * Math.abs(ref[i]) + 1e-30)).toBeLessThanOrEqual(1);
  };
  /** An attention tolerance, tightened to ATTN_F64_REL_TOL · vmax for f64 backends. */
  const attnBound = (tol: (i: number) => number, vmax: number): ((i: number) => number) =>
    opts.f64Attention ? (i) => Math.min(tol(i), ATTN_F64_REL_TOL * vmax) : tol;

  describe(`Backend suite: ${label}`, () => {
    it('upload/download round-trips f32, through views too, and rejects foreign or freed handles', () => {
      const b = make();
      const g = gen(1);
      const data = g.f32(6 * 5);
      const t = tensorOf(b, 6, 5, data);
      expect(Array.from(b.download(t))).toEqual(Array.from(data));
      const v = b.view(t, 2, 3);
      expect(Array.from(b.download(v))).toEqual(Array.from(data.subarray(10, 25)));
      const patch = g.f32(15);
      b.upload(v, patch);
      const whole = b.download(t);
      expect(Array.from(whole.subarray(10, 25))).toEqual(Array.from(patch));
      expect(Array.from(whole.subarray(0, 10))).toEqual(Array.from(data.subarray(0, 10)));
      expect(() => b.free(v)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
      expect(() => b.view(t, 5, 2)).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
      b.free(t);
      expect(() => b.download(t)).toThrow(expect.objectContaining({ code: 'E_FOREIGN_HANDLE' }));
      expect(() => b.add(tensorOf(b, 1, 1, g.f32(1)), tensorOf(b, 1, 1, g.f32(1)), tensorOf(b, 1, 2, g.f32(2)))).toThrow(
        expect.objectContaining({ code: 'E_SHAPE' }),
      );
      b.dispose();
      expect(() => b.alloc(1, 1)).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
    });

    it('shape, dtype, range, handle and lifetime misuse each get their code', () => {
      const b = make();
      const other = make();
      const w = b.createW8A16Linear({ n: 4, k: 8, weight: new Int8Array(32), scale: new Float32Array(4).fill(1), offset: new Float32Array(4) });
      const x = b.alloc(2, 8, 'f32');
      expect(codeOf(() => b.linear(b.alloc(2, 5, 'f32'), x, w))).toBe('E_SHAPE');
      expect(codeOf(() => b.linear(b.alloc(2, 4, 'f32'), b.alloc(2, 7, 'f32'), w))).toBe('E_SHAPE');
      expect(codeOf(() => b.linear(other.alloc(2, 4, 'f32'), x, w))).toBe('E_FOREIGN_HANDLE');
      expect(codeOf(() => b.createW8A16Linear({ n: 4, k: 8, weight: new Int8Array(31), scale: new Float32Array(4), offset: new Float32Array(4) }))).toBe('E_SHAPE');
      expect(codeOf(() => b.createFloatLinear({ n: 2, k: 2, dtype: 'f16', data: new Float32Array(4) }))).toBe('E_DTYPE');
      expect(codeOf(() => b.upload(x, new Uint16Array(16)))).toBe('E_DTYPE');
      expect(codeOf(() => b.upload(x, new Float32Array(15)))).toBe('E_SHAPE');
      expect(codeOf(() => b.alloc(0, 4, 'f32'))).toBe('E_ARGUMENT');
      expect(codeOf(() => b.createRope(7, new Float32Array(3)))).toBe('E_ARGUMENT');
      expect(codeOf(() => b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'int8' }))).toBe('E_ARGUMENT');
      expect(codeOf(() => b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'toString' as KvCacheDType }))).toBe('E_DTYPE');
      // msModelSlim's KV zero points are integers (spec §3.2); a fractional one is a broken checkpoint
      const quant = { kScale: new Float32Array(4).fill(1), kOffset: new Float32Array(4), vScale: new Float32Array(4).fill(1), vOffset: Float32Array.from([0, 0, 0.5, 0]) };
      expect(codeOf(() => b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'int8', quant }))).toBe('E_ARGUMENT');
      const cache = b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'f32' });
      const kv = b.alloc(1, 4, 'f32');
      expect(codeOf(() => b.kvWrite(cache, kv, kv, Int32Array.from([8])))).toBe('E_RANGE');
      expect(codeOf(() => b.readKvCache(cache, 'x' as 'k'))).toBe('E_ARGUMENT');
      const q = b.alloc(1, 8, 'f32');
      const batch = { numSeqs: 1, queryStart: Int32Array.from([0, 1]), positions: Int32Array.from([3]), contextLens: Int32Array.from([3]), blockTables: Int32Array.from([0, 1]), maxBlocksPerSeq: 2 };
      expect(codeOf(() => b.pagedAttention(b.alloc(1, 8, 'f32'), q, cache, batch))).toBe('E_RANGE');
      expect(codeOf(() => b.pagedAttention(b.alloc(1, 8, 'f32'), q, cache, { ...batch, positions: Int32Array.from([2]), blockTables: Int32Array.from([0, 7]), contextLens: Int32Array.from([6]) }))).toBe('E_RANGE');
      expect(codeOf(() => b.pagedAttention(b.alloc(1, 8, 'f32'), b.alloc(1, 6, 'f32'), cache, { ...batch, positions: Int32Array.from([2]) }))).toBe('E_SHAPE');
      // a bad row index is refused before any row is written
      const src = tensorOf(b, 2, 3, Float32Array.from([1, 2, 3, 4, 5, 6]));
      const dst = tensorOf(b, 2, 3, new Float32Array(6));
      expect(codeOf(() => b.gatherRows(dst, src, Int32Array.from([1, 2])))).toBe('E_RANGE');
      expect(Array.from(b.download(dst))).toEqual([0, 0, 0, 0, 0, 0]);
      expect(codeOf(() => b.view(x, 1, 2))).toBe('E_RANGE');
      const v = b.view(x, 1, 1);
      b.free(x);
      expect(codeOf(() => b.download(v))).toBe('E_FOREIGN_HANDLE');
      b.freeWeight(w);
      expect(codeOf(() => b.linear(b.alloc(2, 4, 'f32'), b.alloc(2, 8, 'f32'), w))).toBe('E_FOREIGN_HANDLE');
      expect(codeOf(() => b.freeWeight(w))).toBe('E_FOREIGN_HANDLE');
      b.dispose();
      expect(codeOf(() => b.alloc(1, 1))).toBe('E_DISPOSED');
      other.dispose();
    });

    it.each(SUITE_LINEAR_SHAPES)('W8A16 linear n=%i k=%i T=%i equals the Ref and an f64 dequantize-then-matmul', (n, k, T) => {
      const g = gen(1000 + n * 7 + k + T);
      const q = g.i8(n * k);
      const scale = Float32Array.from({ length: n }, () => g.uniform(1e-3, 2e-2));
      const offset = Float32Array.from({ length: n }, () => g.int(-128, 127));
      const bias = g.f32(n);
      const x = g.f32(T * k);
      if (T > 1) x[k + (k >> 1)] = 1000; // an outlier activation (LLaMA's massive activations) in row 1
      if (T > 2) x.fill(0, 2 * k, 3 * k); // an all-zero row
      const b = make();
      const w = b.createW8A16Linear({ n, k, weight: q, scale, offset, bias });
      const yt = b.alloc(T, n, 'f32');
      b.linear(yt, tensorOf(b, T, k, x), w);
      const y = b.download(yt);
      const ref = new Float32Array(T * n);
      w8a16LinearRef(ref, x, T, q, scale, offset, n, k, bias);

      const direct = new Float64Array(T * n);
      const sumAbsXW = new Float64Array(T * n);
      const sumAbsW = new Float64Array(n);
      const amax = new Float64Array(T);
      for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) amax[t] = Math.max(amax[t], Math.abs(x[t * k + j]));
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < k; j++) sumAbsW[i] += Math.abs((q[i * k + j] - offset[i]) * scale[i]);
        for (let t = 0; t < T; t++) {
          let acc = 0;
          let abs = 0;
          for (let j = 0; j < k; j++) {
            const wij = (q[i * k + j] - offset[i]) * scale[i]; // exact in f64
            acc += x[t * k + j] * wij;
            abs += Math.abs(x[t * k + j] * wij);
          }
          direct[t * n + i] = acc + bias[i];
          sumAbsXW[t * n + i] = abs;
        }
      }
      const tol = (i: number): number => w8a16Tol(sumAbsXW[i], amax[Math.floor(i / n)], sumAbsW[i % n], direct[i]);
      expect(worstRatio(y, ref, tol)).toBeLessThanOrEqual(1);
      expect(worstRatio(y, direct, tol)).toBeLessThanOrEqual(1);
      b.dispose();
    });

    it('W8A16 linear turns a row with a NaN or an infinity into NaN outputs, other rows untouched', () => {
      const g = gen(31);
      const [n, k] = [6, 40];
      const b = make();
      const w = b.createW8A16Linear({ n, k, weight: g.i8(n * k), scale: new Float32Array(n).fill(0.01), offset: new Float32Array(n).fill(2) });
      const x = g.f32(3 * k);
      x[5] = NaN;
      x[2 * k + 7] = Infinity;
      const y = b.alloc(3, n, 'f32');
      b.linear(y, tensorOf(b, 3, k, x), w);
      const out = b.download(y);
      for (let i = 0; i < n; i++) {
        expect(out[i]).toBeNaN();
        expect(Number.isFinite(out[n + i])).toBe(true);
        expect(Number.isFinite(out[2 * n + i])).toBe(false);
      }
      b.dispose();
    });

    it.each(['f32', 'f16', 'bf16'] as const)('float linear with %s weights (and a bias) equals floatLinearRef on odd shapes', (dtype) => {
      for (const [n, k, T] of SUITE_LINEAR_SHAPES) {
        const g = gen(2000 + n + k + T);
        const wF = decodeBack(g.f32(n * k, 0.05), dtype);
        const bias = g.f32(n);
        const x = g.f32(T * k);
        const b = make();
        const w = b.createFloatLinear({ n, k, dtype, data: encode(wF, dtype), bias });
        const yt = b.alloc(T, n, 'f32');
        b.linear(yt, tensorOf(b, T, k, x), w);
        const y = b.download(yt);
        const ref = new Float32Array(T * n);
        floatLinearRef(ref, x, T, { dtype, data: encode(wF, dtype) }, n, k, bias);
        const sumAbs = new Float64Array(T * n);
        for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) sumAbs[t * n + i] += Math.abs(x[t * k + j] * wF[i * k + j]);
        expect(worstRatio(y, ref, (i) => floatTol(k, sumAbs[i], ref[i]))).toBeLessThanOrEqual(1);
        b.dispose();
      }
    });

    it('float linear accepts raw little-endian bytes at an unaligned offset', () => {
      const g = gen(5);
      const [n, k] = [3, 10];
      const wF = decodeBack(g.f32(n * k), 'f16');
      const bits = encode(wF, 'f16');
      const raw = new Uint8Array(bits.byteLength + 1);
      raw.set(new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength), 1);
      const b = make();
      const w1 = b.createFloatLinear({ n, k, dtype: 'f16', data: raw.subarray(1) });
      const w2 = b.createFloatLinear({ n, k, dtype: 'f16', data: bits });
      const x = tensorOf(b, 1, k, g.f32(k));
      const [y1, y2] = [b.alloc(1, n, 'f32'), b.alloc(1, n, 'f32')];
      b.linear(y1, x, w1);
      b.linear(y2, x, w2);
      expect(Array.from(b.download(y1))).toEqual(Array.from(b.download(y2)));
      b.dispose();
    });

    it.each(['f32', 'f16', 'bf16'] as const)('embedding gathers %s rows exactly and rejects ids outside the vocabulary', (dtype) => {
      const g = gen(9);
      const [vocab, hidden] = [50, 12];
      const table = decodeBack(g.f32(vocab * hidden), dtype);
      const ids = Int32Array.from([3, 0, 49, 3, 17]);
      const b = make();
      const e = b.createEmbedding({ vocab, hidden, dtype, data: encode(table, dtype) });
      const out = b.alloc(ids.length, hidden, 'f32');
      b.embedding(out, e, ids);
      const ref = new Float32Array(ids.length * hidden);
      embeddingRef(ref, { dtype, data: encode(table, dtype) }, hidden, ids);
      expect(Array.from(b.download(out))).toEqual(Array.from(ref));
      for (let c = 0; c < hidden; c++) expect(ref[2 * hidden + c]).toBe(table[49 * hidden + c]);
      expect(() => b.embedding(b.alloc(1, hidden, 'f32'), e, Int32Array.from([50]))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
      b.dispose();
    });

    it('rmsNorm (in place too), siluMul (out = gate), add (out = a), gatherRows equal their Refs', () => {
      const g = gen(11);
      const [T, H] = [5, 24];
      const x = g.f32(T * H, 3);
      const w = g.f32(H);
      const u = g.f32(T * H);
      const b = make();
      const nw = b.createNormWeight(w);
      const xt = tensorOf(b, T, H, x);
      const nt = b.alloc(T, H, 'f32');
      b.rmsNorm(nt, xt, nw, 1e-5);
      b.rmsNorm(xt, xt, nw, 1e-5);
      const r1 = new Float32Array(T * H);
      rmsNormRef(r1, x, T, H, w, 1e-5);
      expectElementwise(b.download(nt), r1);
      expect(Array.from(b.download(xt))).toEqual(Array.from(b.download(nt)));
      // the Ref against the formula in f64: x / sqrt(mean x² + eps) · w, within the f32 roundings of the chain
      for (let t = 0; t < T; t++) {
        let ss = 0;
        for (let c = 0; c < H; c++) ss += x[t * H + c] ** 2;
        const inv = 1 / Math.sqrt(ss / H + 1e-5);
        for (let c = 0; c < H; c++) {
          const want = x[t * H + c] * inv * w[c];
          expect(Math.abs(r1[t * H + c] - want)).toBeLessThanOrEqual(RMSNORM_FORMULA_ULPS * U * Math.abs(want) + 1e-30);
        }
      }

      const gt = tensorOf(b, T, H, x);
      const ut = tensorOf(b, T, H, u);
      b.siluMul(gt, gt, ut);
      const r2 = new Float32Array(T * H);
      siluMulRef(r2, x, u);
      expectElementwise(b.download(gt), r2);
      expect(r2[0]).toBeCloseTo((x[0] / (1 + Math.exp(-x[0]))) * u[0], 5);

      const at = tensorOf(b, T, H, u);
      const bt = tensorOf(b, T, H, r2);
      b.add(at, at, bt);
      const r3 = new Float32Array(T * H);
      addRef(r3, u, r2);
      expect(Array.from(b.download(at))).toEqual(Array.from(r3));

      const rows = Int32Array.from([4, 0, 4]);
      const gr = b.alloc(3, H, 'f32');
      b.gatherRows(gr, at, rows);
      const d = b.download(gr);
      expect(Array.from(d.subarray(0, H))).toEqual(Array.from(r3.subarray(4 * H, 5 * H)));
      expect(Array.from(d.subarray(H, 2 * H))).toEqual(Array.from(r3.subarray(0, H)));
      expect(Array.from(d.subarray(2 * H, 3 * H))).toEqual(Array.from(r3.subarray(4 * H, 5 * H)));
      expect(() => b.gatherRows(gr, at, Int32Array.from([0, 1, 5]))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
      b.dispose();
    });

    it('rope (llama3 scaling and plain, on row views of q) equals ropeRef and rotates pairs i, i + headDim/2', () => {
      for (const cfg of [
        { headDim: 16, theta: 500000, scaling: { ropeType: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } },
        { headDim: 8, theta: 10000 },
      ]) {
        const g = gen(cfg.headDim);
        const inv = computeInvFreq(cfg);
        const [T, nH, nKv, hd] = [6, 4, 2, cfg.headDim];
        const q = g.f32(T * nH * hd);
        const k = g.f32(T * nKv * hd);
        const pos = Int32Array.from([0, 1, 2, 7, 300, 9000]);
        const b = make();
        const rt = b.createRope(hd, inv);
        // q as rows 1..T of a bigger tensor: the rotation must touch exactly those rows
        const qBig = tensorOf(b, T + 2, nH * hd, Float32Array.from({ length: (T + 2) * nH * hd }, (_, i) => (i < nH * hd ? 0 : i >= (T + 1) * nH * hd ? 0 : q[i - nH * hd])));
        const kt = tensorOf(b, T, nKv * hd, k);
        b.rope(b.view(qBig, 1, T), kt, pos, rt);
        const [qr, kr] = [q.slice(), k.slice()];
        ropeRef(qr, kr, T, nH * hd, nKv * hd, hd, pos, inv);
        const qAll = b.download(qBig);
        expectElementwise(qAll.subarray(nH * hd, (T + 1) * nH * hd), qr);
        expect(Array.from(qAll.subarray(0, nH * hd)).every((v) => v === 0)).toBe(true);
        expect(Array.from(qAll.subarray((T + 1) * nH * hd)).every((v) => v === 0)).toBe(true);
        expectElementwise(b.download(kt), kr);
        expect(Array.from(qr.subarray(0, nH * hd))).toEqual(Array.from(q.subarray(0, nH * hd))); // position 0: identity
        // position 7, head 1, pair 1: a 2-D rotation by 7·inv[1]
        const a = 7 * inv[1];
        const base = 3 * nH * hd + hd;
        expect(qr[base + 1]).toBeCloseTo(q[base + 1] * Math.cos(a) - q[base + 1 + hd / 2] * Math.sin(a), 5);
        expect(qr[base + 1 + hd / 2]).toBeCloseTo(q[base + 1 + hd / 2] * Math.cos(a) + q[base + 1] * Math.sin(a), 5);
        b.dispose();
      }
    });

    it('argmax (lowest index on ties) and seeded sampling equal the Refs and repeat with the same seed', () => {
      const g = gen(13);
      const [rows, vocab] = [4, 1000];
      const logits = g.f32(rows * vocab, 2);
      logits[vocab + 5] = logits[vocab + 9] = 50; // a tie: the lower index wins
      const b = make();
      const lt = tensorOf(b, rows, vocab, logits);
      const am = new Int32Array(rows);
      b.argmax(am, lt);
      expect(am[1]).toBe(5);
      for (let r = 0; r < rows; r++) expect(am[r]).toBe(argmaxRef(logits.subarray(r * vocab, (r + 1) * vocab)));
      const params = { temperature: 0.8, topK: 40, topP: 0.9 };
      const draw = (seed: number): number[] => {
        const rng = createRng(seed);
        const out = new Int32Array(rows);
        const all: number[] = [];
        for (let step = 0; step < 5; step++) {
          b.sample(out, lt, params, rng);
          all.push(...out);
        }
        return all;
      };
      const rng = createRng(42);
      const expected: number[] = [];
      for (let step = 0; step < 5; step++)
        for (let r = 0; r < rows; r++) expected.push(sampleRef(logits.subarray(r * vocab, (r + 1) * vocab), params, rng));
      expect(draw(42)).toEqual(expected);
      expect(draw(42)).toEqual(draw(42));
      expect(draw(43)).not.toEqual(draw(42));
      b.dispose();
    });

    describe('paged attention', () => {
      interface Scenario {
        blockSize: number;
        lens: number[];
        decodeSteps: number;
        nHeads: number;
        nKvHeads: number;
        headDim: number;
      }
      const scenarios: Scenario[] = [
        ...[1, 4, 16, 128].flatMap((blockSize) => [
          { blockSize, lens: [23], decodeSteps: 4, nHeads: 4, nKvHeads: 2, headDim: 8 },
          { blockSize, lens: [5, 17, 1], decodeSteps: 4, nHeads: 6, nKvHeads: 2, headDim: 16 },
        ]),
        // headDim 12: no whole SIMD vector, the native kernel's scalar rows
        { blockSize: 4, lens: [9, 3], decodeSteps: 2, nHeads: 3, nKvHeads: 1, headDim: 12 },
        // a long decode context at LLaMA head size: the native kernel splits it across threads and merges
        { blockSize: 16, lens: [150], decodeSteps: 2, nHeads: 8, nKvHeads: 2, headDim: 64 },
      ];

      interface StepCheck {
        /** this sequence's output rows, query rows and their positions in this step */
        got: Float32Array;
        q: Float32Array;
        positions: Int32Array;
        /** the sequence's whole K and V history `[L, kvDim]` (contiguous) */
        kAll: Float32Array;
        vAll: Float32Array;
        cacheRef: KvStorageRef;
        /** cache slot of position p of this sequence */
        slotOf: (p: number) => number;
      }

      /**
       * Prefill then decode steps through the paged cache (blocks handed out shuffled). Every step: the output equals
       * pagedAttentionRef on the backend's own cache, int8 rows written equal kvQuantizeRef, and `check` per sequence.
       */
      function run(b: Backend, sc: Scenario, seed: number, cacheDtype: KvCacheDType, check: (c: StepCheck) => void): void {
        const g = gen(seed);
        const { blockSize, lens, decodeSteps, nHeads, nKvHeads, headDim } = sc;
        const kvDim = nKvHeads * headDim;
        const qDim = nHeads * headDim;
        const totals = lens.map((l) => l + decodeSteps);
        const kAll = totals.map((L) => g.f32(L * kvDim));
        const vAll = totals.map((L) => g.f32(L * kvDim));
        const qAll = totals.map((L) => g.f32(L * qDim));
        const maxBlocksPerSeq = Math.ceil(Math.max(...totals) / blockSize);
        const numBlocks = totals.reduce((a, L) => a + Math.ceil(L / blockSize), 0) + 2;
        // hand out blocks in a shuffled order so neighbouring tokens of a sequence are not neighbours in memory
        const free = Array.from({ length: numBlocks }, (_, i) => i);
        for (let i = free.length - 1; i > 0; i--) {
          const j = g.int(0, i);
          [free[i], free[j]] = [free[j], free[i]];
        }
        const blockTables = new Int32Array(lens.length * maxBlocksPerSeq).fill(-1);
        lens.forEach((_, s) => {
          for (let i = 0; i < Math.ceil(totals[s] / blockSize); i++) blockTables[s * maxBlocksPerSeq + i] = free.pop() as number;
        });
        let quant: KvQuantParams | undefined;
        if (cacheDtype === 'int8') {
          // symmetric per-channel scales from the data (as msModelSlim's default C8 calibration), plus an asymmetric V
          const amax = (arrs: Float32Array[], c: number): number => Math.max(...arrs.map((a) => Math.max(...Array.from({ length: a.length / kvDim }, (_, t) => Math.abs(a[t * kvDim + c])))));
          quant = {
            kScale: Float32Array.from({ length: kvDim }, (_, c) => amax(kAll, c) / 127),
            kOffset: new Float32Array(kvDim),
            vScale: Float32Array.from({ length: kvDim }, (_, c) => (2 * amax(vAll, c)) / 255),
            vOffset: Float32Array.from({ length: kvDim }, (_, c) => (c % 3) - 1),
          };
        }
        const cache = b.createKvCache({ numBlocks, blockSize, nKvHeads, headDim, dtype: cacheDtype, quant });
        const steps: { start: number[]; count: number[] }[] = [{ start: lens.map(() => 0), count: lens.slice() }];
        for (let d = 0; d < decodeSteps; d++) steps.push({ start: lens.map((l) => l + d), count: lens.map(() => 1) });
        for (const step of steps) {
          const T = step.count.reduce((a, c) => a + c, 0);
          const q = new Float32Array(T * qDim);
          const k = new Float32Array(T * kvDim);
          const v = new Float32Array(T * kvDim);
          const positions = new Int32Array(T);
          const slots = new Int32Array(T);
          const queryStart = new Int32Array(lens.length + 1);
          let r = 0;
          lens.forEach((_, s) => {
            queryStart[s] = r;
            for (let p = step.start[s]; p < step.start[s] + step.count[s]; p++, r++) {
              q.set(qAll[s].subarray(p * qDim, (p + 1) * qDim), r * qDim);
              k.set(kAll[s].subarray(p * kvDim, (p + 1) * kvDim), r * kvDim);
              v.set(vAll[s].subarray(p * kvDim, (p + 1) * kvDim), r * kvDim);
              positions[r] = p;
              slots[r] = blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
            }
          });
          queryStart[lens.length] = T;
          const contextLens = Int32Array.from(lens, (_, s) => step.start[s] + step.count[s]);
          b.kvWrite(cache, tensorOf(b, T, kvDim, k), tensorOf(b, T, kvDim, v), slots);
          const out = b.alloc(T, qDim, 'f32');
          const batch = { numSeqs: lens.length, queryStart, positions, contextLens, blockTables, maxBlocksPerSeq };
          b.pagedAttention(out, tensorOf(b, T, qDim, q), cache, batch);
          const got = b.download(out);
          const cacheRef: KvStorageRef = { dtype: cacheDtype, numBlocks, blockSize, nKvHeads, headDim, k: b.readKvCache(cache, 'k'), v: b.readKvCache(cache, 'v'), quant };
          if (quant) {
            // every row written this step holds kvQuantizeRef's codes, bit for bit
            const codes = new Int8Array(kvDim);
            for (let t = 0; t < T; t++) {
              kvQuantizeRef(codes, k.subarray(t * kvDim, (t + 1) * kvDim), quant.kScale, quant.kOffset);
              expect(Array.from((cacheRef.k as Int8Array).subarray(slots[t] * kvDim, (slots[t] + 1) * kvDim))).toEqual(Array.from(codes));
              kvQuantizeRef(codes, v.subarray(t * kvDim, (t + 1) * kvDim), quant.vScale, quant.vOffset);
              expect(Array.from((cacheRef.v as Int8Array).subarray(slots[t] * kvDim, (slots[t] + 1) * kvDim))).toEqual(Array.from(codes));
            }
          }
          // the Ref on the same cache and batch; int8: the Ref sees dequantized values, up to scale/2 beyond the originals
          const viaRef = new Float32Array(T * qDim);
          pagedAttentionRef(viaRef, q, nHeads, cacheRef, batch, 1 / Math.sqrt(headDim));
          const slack = quant ? Math.max(...quant.kScale, ...quant.vScale) : 0;
          const vmax = maxAbs(vAll);
          const tol = attnTol(q, qDim, headDim, positions, maxAbs(kAll) + slack, vmax + slack);
          expect(worstRatio(got, viaRef, attnBound(tol, vmax))).toBeLessThanOrEqual(1);
          lens.forEach((_, s) =>
            check({
              got: got.subarray(queryStart[s] * qDim, queryStart[s + 1] * qDim),
              q: q.subarray(queryStart[s] * qDim, queryStart[s + 1] * qDim),
              positions: positions.subarray(queryStart[s], queryStart[s + 1]),
              kAll: kAll[s],
              vAll: vAll[s],
              cacheRef,
              slotOf: (p) => blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize),
            }),
          );
        }
      }

      it.each(scenarios)('f32 cache, block $blockSize, prompts $lens, then $decodeSteps decode steps: equals contiguous causal GQA attention', (sc) => {
        const b = make();
        let checked = 0;
        run(b, sc, 300 + sc.blockSize, 'f32', ({ got, q, positions, kAll, vAll }) => {
          const want = new Float32Array(got.length);
          attentionContiguousRef(want, q, kAll, vAll, positions, sc.nHeads, sc.nKvHeads, sc.headDim, 1 / Math.sqrt(sc.headDim));
          const vmax = maxAbs([vAll]);
          const tol = attnTol(q, sc.nHeads * sc.headDim, sc.headDim, positions, maxAbs([kAll]), vmax);
          expect(worstRatio(got, want, attnBound(tol, vmax))).toBeLessThanOrEqual(1);
          checked += got.length;
        });
        expect(checked).toBe(sc.lens.reduce((a, l) => a + l + sc.decodeSteps, 0) * sc.nHeads * sc.headDim);
        b.dispose();
      });

      it.each(scenarios.filter((s) => s.blockSize >= 16 || s.headDim === 12))('f16 cache, block $blockSize, prompts $lens: within the f16 rounding of K and V', (sc) => {
        const b = make();
        run(b, sc, 700 + sc.blockSize, 'f16', ({ got, q, positions, kAll, vAll }) => {
          // f16 storage rounds each K, V element by at most 2^-11 relative: scores move by δ ≤ scale·‖q_h‖₁·max|k|·2^-11
          // and the values by ≤ max|v|·2^-11, on top of the f32 kernel's own bound (attnTol)
          const want = new Float32Array(got.length);
          attentionContiguousRef(want, q, kAll, vAll, positions, sc.nHeads, sc.nKvHeads, sc.headDim, 1 / Math.sqrt(sc.headDim));
          const qDim = sc.nHeads * sc.headDim;
          const [kmax, vmax] = [maxAbs([kAll]), maxAbs([vAll])];
          const f32Tol = attnTol(q, qDim, sc.headDim, positions, kmax, vmax);
          const tol = (i: number): number => {
            const h0 = Math.floor(i / qDim) * qDim + Math.floor((i % qDim) / sc.headDim) * sc.headDim;
            let q1 = 0;
            for (let d = 0; d < sc.headDim; d++) q1 += Math.abs(q[h0 + d]);
            const delta = (q1 * kmax * 2 ** -11) / Math.sqrt(sc.headDim);
            return vmax * 2 ** -11 + Math.expm1(2 * delta) * vmax + f32Tol(i);
          };
          expect(worstRatio(got, want, tol)).toBeLessThanOrEqual(1);
        });
        b.dispose();
      });

      it.each(scenarios)('int8 cache, block $blockSize, prompts $lens: codes equal kvQuantizeRef, attention within the scale-derived bound', (sc) => {
        const b = make();
        const kvDim = sc.nKvHeads * sc.headDim;
        const scale = 1 / Math.sqrt(sc.headDim);
        run(b, sc, 500 + sc.blockSize, 'int8', ({ got, q, positions, kAll, vAll, cacheRef, slotOf }) => {
          const qp = cacheRef.quant as KvQuantParams;
          // position 0's codes are still intact after later writes
          const codes = new Int8Array(kvDim);
          kvQuantizeRef(codes, kAll.subarray(0, kvDim), qp.kScale, qp.kOffset);
          expect(Array.from((cacheRef.k as Int8Array).subarray(slotOf(0) * kvDim, (slotOf(0) + 1) * kvDim))).toEqual(Array.from(codes));
          kvQuantizeRef(codes, vAll.subarray(0, kvDim), qp.vScale, qp.vOffset);
          expect(Array.from((cacheRef.v as Int8Array).subarray(slotOf(0) * kvDim, (slotOf(0) + 1) * kvDim))).toEqual(Array.from(codes));
          // Bound: no code clamps (scales come from the data), so each dequantized K/V element is within scale/2.
          // A score moves by δ ≤ scale_attn·Σ_d |q_d|·kScale_d/2, so softmax weights change by a factor in
          // [e^−2δ, e^2δ] and Σ_j |p'_j − p_j| ≤ e^2δ − 1; hence |Δout_d| ≤ vScale_d/2 + (e^2δ − 1)·max_j |v_jd|.
          const want = new Float32Array(got.length);
          attentionContiguousRef(want, q, kAll, vAll, positions, sc.nHeads, sc.nKvHeads, sc.headDim, scale);
          const qDim = sc.nHeads * sc.headDim;
          const group = sc.nHeads / sc.nKvHeads;
          const f32Tol = attnTol(q, qDim, sc.headDim, positions, maxAbs([kAll]) + Math.max(...qp.kScale), maxAbs([vAll]) + Math.max(...qp.vScale));
          const tol = (i: number): number => {
            const r = Math.floor(i / qDim);
            const h = Math.floor((i % qDim) / sc.headDim);
            const c = Math.floor(h / group) * sc.headDim + (i % sc.headDim);
            let delta = 0;
            for (let d = 0; d < sc.headDim; d++) delta += Math.abs(q[r * qDim + h * sc.headDim + d]) * qp.kScale[Math.floor(h / group) * sc.headDim + d] / 2;
            delta *= scale;
            let vmax = 0;
            for (let j = 0; j <= positions[r]; j++) vmax = Math.max(vmax, Math.abs(vAll[j * kvDim + c]));
            // plus the f32 kernel's own rounding (attnTol above), with K, V widened by their half-steps
            return qp.vScale[c] / 2 + Math.expm1(2 * delta) * vmax + f32Tol(i);
          };
          expect(worstRatio(got, want, tol)).toBeLessThanOrEqual(1);
        });
        b.dispose();
      });

      it('kvWrite skips rows with a negative slot and refuses a slot beyond the cache', () => {
        const b = make();
        const g = gen(77);
        const [nKvHeads, headDim, blockSize, numBlocks] = [2, 4, 4, 3];
        const kvDim = nKvHeads * headDim;
        const cache = b.createKvCache({ numBlocks, blockSize, nKvHeads, headDim, dtype: 'f32' });
        const k = g.f32(3 * kvDim);
        const v = g.f32(3 * kvDim);
        b.kvWrite(cache, tensorOf(b, 3, kvDim, k), tensorOf(b, 3, kvDim, v), Int32Array.from([5, -1, 2]));
        const kc = b.readKvCache(cache, 'k') as Float32Array;
        const vc = b.readKvCache(cache, 'v') as Float32Array;
        expect(Array.from(kc.subarray(5 * kvDim, 6 * kvDim))).toEqual(Array.from(k.subarray(0, kvDim)));
        expect(Array.from(vc.subarray(2 * kvDim, 3 * kvDim))).toEqual(Array.from(v.subarray(2 * kvDim, 3 * kvDim)));
        const written = new Set([2, 5]);
        for (let s = 0; s < numBlocks * blockSize; s++) {
          if (!written.has(s)) expect(Array.from(kc.subarray(s * kvDim, (s + 1) * kvDim)).every((x) => x === 0)).toBe(true);
        }
        expect(() => b.kvWrite(cache, tensorOf(b, 1, kvDim, k.subarray(0, kvDim)), tensorOf(b, 1, kvDim, v.subarray(0, kvDim)), Int32Array.from([12]))).toThrow(
          expect.objectContaining({ code: 'E_RANGE' }),
        );
        b.dispose();
      });
    });
  });
}
