// The native paged attention reads f16 and int8 caches in registers (no converted rows): bit-identity with the f32
// cache on values every cache holds exactly, and asymmetric int8 (K and V offsets) within a derived bound of the Ref.
import { describe, expect, it } from 'vitest';
import {
  createHostBackend,
  loadHostAddon,
  pagedAttentionRef,
  type AttentionBatch,
  type Backend,
  type KvCacheDType,
  type KvQuantParams,
  type KvStorageRef,
} from './index';
import { gen, worstRatio, type Gen } from './test-data';

/** f32 unit roundoff */
const U = 2 ** -24;
/** |code| of an int8 cache entry */
const CODE_MAX = 128;

interface Shape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  blockSize: number;
  /** rows of the prefill sequence (its whole context) */
  prefill: number;
  /** context of the decode sequence (one query row at its last position) */
  decodeLen: number;
}

const SHAPES: Shape[] = [
  // LLaMA head size, a decode context long enough to be split across 2 threads and merged
  { nHeads: 8, nKvHeads: 2, headDim: 64, blockSize: 16, prefill: 5, decodeLen: 300 },
  // a group of 6 query heads per KV head: the SIMD dots take 4 heads at a time
  { nHeads: 6, nKvHeads: 1, headDim: 16, blockSize: 4, prefill: 7, decodeLen: 41 },
  // headDim 8 and 40: 8-lane rows at every SIMD ISA; 40 also ends the scalar rows' 16-value blocks short
  { nHeads: 3, nKvHeads: 1, headDim: 8, blockSize: 8, prefill: 9, decodeLen: 20 },
  { nHeads: 4, nKvHeads: 2, headDim: 40, blockSize: 16, prefill: 6, decodeLen: 90 },
  // headDim 12: scalar rows at every ISA
  { nHeads: 4, nKvHeads: 2, headDim: 12, blockSize: 4, prefill: 3, decodeLen: 17 },
];

const ISAS = (['scalar', 'avx2', 'avx512'] as const).slice(0, loadHostAddon().bestIsa() + 1);

/** A prefill sequence and a decode sequence in shuffled blocks; the cache slot of every written row. */
function layout(g: Gen, sh: Shape) {
  const { blockSize, prefill, decodeLen } = sh;
  const lens = [prefill, decodeLen];
  const maxBlocksPerSeq = Math.ceil(Math.max(...lens) / blockSize);
  const numBlocks = lens.reduce((a, l) => a + Math.ceil(l / blockSize), 0);
  const free = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = free.length - 1; i > 0; i--) {
    const j = g.int(0, i);
    [free[i], free[j]] = [free[j], free[i]];
  }
  const blockTables = new Int32Array(lens.length * maxBlocksPerSeq).fill(-1);
  lens.forEach((l, s) => {
    for (let i = 0; i < Math.ceil(l / blockSize); i++) blockTables[s * maxBlocksPerSeq + i] = free.pop() as number;
  });
  const slots = Int32Array.from({ length: prefill + decodeLen }, (_, r) => {
    const [s, p] = r < prefill ? [0, r] : [1, r - prefill];
    return blockTables[s * maxBlocksPerSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
  });
  /** the prefill rows and the decode row in one batch, and the decode row alone (split across threads) */
  const batches: { T: number; qRow0: number; batch: AttentionBatch }[] = [
    {
      T: prefill + 1,
      qRow0: 0,
      batch: {
        numSeqs: 2,
        queryStart: Int32Array.from([0, prefill, prefill + 1]),
        positions: Int32Array.from({ length: prefill + 1 }, (_, r) => (r < prefill ? r : decodeLen - 1)),
        contextLens: Int32Array.from(lens),
        blockTables,
        maxBlocksPerSeq,
      },
    },
    {
      T: 1,
      qRow0: prefill,
      batch: {
        numSeqs: 1,
        queryStart: Int32Array.from([0, 1]),
        positions: Int32Array.from([decodeLen - 1]),
        contextLens: Int32Array.from([decodeLen]),
        blockTables: blockTables.subarray(maxBlocksPerSeq),
        maxBlocksPerSeq,
      },
    },
  ];
  return { numBlocks, slots, batches };
}

/** Writes k, v `[rows, kvDim]` to a new cache and runs every batch of the layout; q holds prefill + 1 rows. */
function attendAll(b: Backend, sh: Shape, g: Gen, dtype: KvCacheDType, quant: KvQuantParams | undefined, k: Float32Array, v: Float32Array, q: Float32Array) {
  const { nKvHeads, headDim, blockSize } = sh;
  const kvDim = nKvHeads * headDim;
  const qDim = sh.nHeads * headDim;
  const { numBlocks, slots, batches } = layout(g, sh);
  const cache = b.createKvCache({ numBlocks, blockSize, nKvHeads, headDim, dtype, quant });
  const tensor = (T: number, cols: number, data: Float32Array) => {
    const t = b.alloc(T, cols, 'f32');
    b.upload(t, data);
    return t;
  };
  b.kvWrite(cache, tensor(slots.length, kvDim, k), tensor(slots.length, kvDim, v), slots);
  const outs = batches.map(({ T, qRow0, batch }) => {
    const out = b.alloc(T, qDim, 'f32');
    const qRows = q.subarray(qRow0 * qDim, (qRow0 + T) * qDim);
    b.pagedAttention(out, tensor(T, qDim, qRows), cache, batch, 1 / Math.sqrt(headDim));
    return { got: Float32Array.from(b.download(out)), qRows, batch };
  });
  const cacheRef: KvStorageRef = { dtype, numBlocks, blockSize, nKvHeads, headDim, k: b.readKvCache(cache, 'k'), v: b.readKvCache(cache, 'v'), quant };
  return { outs, cacheRef };
}

/**
 * Per-channel power-of-two scales, offset 0: x = code·scale is exact in f32, f16 (|code| <= 128, scale >= 2^-6) and
 * the int8 cache (its code comes back exactly), and scaling by a power of two commutes with every f32 rounding (no
 * under/overflow at these magnitudes), so (q·s)·code, s·Σ p·code and the f32 cache's q·(code·s), Σ p·(code·s) agree
 * to the bit.
 */
function pow2Quant(kvDim: number): KvQuantParams {
  const pow2 = (c: number, base: number): number => 2 ** -(base + (c % 4));
  return {
    kScale: Float32Array.from({ length: kvDim }, (_, c) => pow2(c, 3)),
    kOffset: new Float32Array(kvDim),
    vScale: Float32Array.from({ length: kvDim }, (_, c) => pow2(c + 1, 2)),
    vOffset: new Float32Array(kvDim),
  };
}

describe('native paged attention: f16 and int8 caches compute as the f32 cache', () => {
  /** Output bits of every batch for one cache dtype, on data every cache holds exactly. */
  function bits(b: Backend, sh: Shape, seed: number, dtype: KvCacheDType): number[][] {
    const g = gen(seed);
    const kvDim = sh.nKvHeads * sh.headDim;
    const quant = pow2Quant(kvDim);
    const rows = sh.prefill + sh.decodeLen;
    const codes = (scale: Float32Array): Float32Array => Float32Array.from({ length: rows * kvDim }, (_, i) => g.int(-128, 127) * scale[i % kvDim]);
    const k = codes(quant.kScale);
    const v = codes(quant.vScale);
    const q = g.f32((sh.prefill + 1) * sh.nHeads * sh.headDim, 0.02);
    const { outs } = attendAll(b, sh, g, dtype, dtype === 'int8' ? quant : undefined, k, v, q);
    return outs.map((o) => Array.from(new Uint32Array(o.got.buffer)));
  }

  for (const isa of ISAS) {
    for (const threads of [1, 2]) {
      it.each(SHAPES)(`${isa}, ${threads} thread(s): heads $nHeads/$nKvHeads, headDim $headDim, prefill $prefill + decode at $decodeLen`, (sh) => {
        const b = createHostBackend({ kernels: 'native', isa, threads });
        try {
          const seed = 40 + sh.headDim;
          const want = bits(b, sh, seed, 'f32');
          expect(want[0].length).toBe((sh.prefill + 1) * sh.nHeads * sh.headDim);
          // real attention outputs, not zeros or NaNs
          const decoded = new Float32Array(Uint32Array.from(want[1]).buffer);
          expect(decoded.every((x) => Number.isFinite(x)) && decoded.some((x) => x !== 0)).toBe(true);
          for (const dtype of ['f16', 'int8'] as const) {
            const got = bits(b, sh, seed, dtype);
            expect(got[0], `${dtype} mixed batch`).toEqual(want[0]);
            expect(got[1], `${dtype} decode row`).toEqual(want[1]);
          }
        } finally {
          b.dispose();
        }
      });
    }
  }
});

describe('native paged attention: asymmetric int8 cache (K and V offsets) against pagedAttentionRef', () => {
  /**
   * Bound for output i (row r at position p, head h, channel c of KV head g). The kernel scores with a = fl(q·kScale)
   * and S = fl(Σ a·code) − fl(Σ a·kOffset), then × scale; against the Ref's f64 sum over f32-rounded (code − off)·s
   * each score errs by at most δ = (headDim + 6)·U·scale·A with A = Σ_d |q_d|·kScale_d·(CODE_MAX + |kOffset_d|):
   * U·A for a, (headDim + 1)·U·A for the two sums, 2·U·A for the subtraction and the scale, U·A for the Ref's
   * rounded keys, and U·A of slack for the γ_n factors. A common error of all scores cancels in the softmax, so each
   * weight is off by a factor within e^{±ε}, ε = δ + 2U (expf), which moves a convex combination of values by at
   * most 2·vmax·(e^ε − 1)·e^ε. The values: Σ p·code and Σ p in f32 over p + 1 keys (merged across threads), then
   * vScale·(Σ p·code − vOffset·Σ p)/Σ p, err by at most vScale_c·(CODE_MAX + |vOffset_c|)·(2(p + 1) + 12)·U; plus
   * the Ref's rounded values and the output rounding, U·(vmax + |ref|).
   */
  function int8Tol(q: Float32Array, positions: Int32Array, ref: Float32Array, sh: Shape, qp: KvQuantParams, vmax: number): (i: number) => number {
    const { nHeads, nKvHeads, headDim } = sh;
    const qDim = nHeads * headDim;
    const group = nHeads / nKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    return (i) => {
      const r = Math.floor(i / qDim);
      const h = Math.floor((i % qDim) / headDim);
      const co = Math.floor(h / group) * headDim;
      const c = co + (i % headDim);
      let A = 0;
      for (let d = 0; d < headDim; d++) A += Math.abs(q[r * qDim + h * headDim + d]) * qp.kScale[co + d] * (CODE_MAX + Math.abs(qp.kOffset[co + d]));
      const eps = (headDim + 6) * U * scale * A + 2 * U;
      const values = qp.vScale[c] * (CODE_MAX + Math.abs(qp.vOffset[c])) * (2 * (positions[r] + 1) + 12) * U;
      return 2 * vmax * Math.expm1(eps) * Math.exp(eps) + values + U * (vmax + Math.abs(ref[i]));
    };
  }

  for (const isa of ISAS) {
    for (const threads of [1, 2]) {
      it.each(SHAPES)(`${isa}, ${threads} thread(s): heads $nHeads/$nKvHeads, headDim $headDim, prefill $prefill + decode at $decodeLen`, (sh) => {
        const g = gen(70 + sh.headDim);
        const kvDim = sh.nKvHeads * sh.headDim;
        const rows = sh.prefill + sh.decodeLen;
        const k = g.f32(rows * kvDim);
        const v = g.f32(rows * kvDim);
        const q = g.f32((sh.prefill + 1) * sh.nHeads * sh.headDim);
        // offsets in -20..20 (both K and V), scales covering the data from there, so few codes clamp
        const quant: KvQuantParams = {
          kScale: Float32Array.from({ length: kvDim }, () => g.uniform(0.02, 0.03)),
          kOffset: Float32Array.from({ length: kvDim }, () => g.int(-20, 20)),
          vScale: Float32Array.from({ length: kvDim }, () => g.uniform(0.02, 0.03)),
          vOffset: Float32Array.from({ length: kvDim }, () => g.int(-20, 20)),
        };
        const b = createHostBackend({ kernels: 'native', isa, threads });
        try {
          const { outs, cacheRef } = attendAll(b, sh, g, 'int8', quant, k, v, q);
          const codes = cacheRef.v as Int8Array;
          let vmax = 0;
          for (let i = 0; i < codes.length; i++) vmax = Math.max(vmax, Math.abs((codes[i] - quant.vOffset[i % kvDim]) * quant.vScale[i % kvDim]));
          for (const { got, qRows, batch } of outs) {
            const ref = new Float32Array(got.length);
            pagedAttentionRef(ref, qRows, sh.nHeads, cacheRef, batch, 1 / Math.sqrt(sh.headDim));
            const wr = worstRatio(got, ref, int8Tol(qRows, batch.positions, ref, sh, quant, vmax));
            expect(wr).toBeLessThanOrEqual(1);
          }
        } finally {
          b.dispose();
        }
      });
    }
  }
});
