// A Backend test suite any backend can run: every op on seeded data against the Ref kernels of src/ref.ts.
// Not a test file itself: `describeBackendSuite(label, make)` registers vitest cases for one backend factory.
// (The host backend's own suite, src/host-backend.test.ts, is not exported as a function; the two can be unified.)

import { describe, expect, it } from 'vitest';
import type { Backend, FloatWeightDType, KvCacheDType, KvQuantParams, Tensor } from '../backend';
import { bf16ToF32, f16ToF32Table, f32ToBf16Bits, f32ToF16Bits } from '../dtype';
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
} from '../ref';
import { computeInvFreq } from '../rope';
import { argmaxRef, createRng, sampleRef } from '../sampling';
import { gen, worstRatio } from '../test-data';

const U = 2 ** -24; // f32 unit roundoff

/**
 * Linear layers: the Refs accumulate in f64 and round once; a backend that accumulates in f32 in any order errs by
 * at most k·U·Σ|x·w|, plus one rounding of the output and one of a separately added bias.
 */
function linearTol(k: number, sumAbsXW: number, y: number, bias: number): number {
  return (k + 2) * U * sumAbsXW + 3 * U * (Math.abs(y) + Math.abs(bias)) + 1e-30;
}

/** Elementwise ops and norms computed with the same f32 roundings as the Refs, up to libm differences: a few ulps. */
const ELEMENTWISE_ULPS = 4;
/** Attention outputs are convex combinations of v with f64 softmax on both sides: only output rounding and order differ. */
const ATTN_REL_TOL = 2 ** -20;

function tensorOf(b: Backend, rows: number, cols: number, data: Float32Array): Tensor {
  const t = b.alloc(rows, cols, 'f32');
  b.upload(t, data);
  return t;
}

function encode(data: Float32Array, dtype: FloatWeightDType): Float32Array | Uint16Array {
  if (dtype === 'f32') return data;
  return Uint16Array.from(data, dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits);
}

function decodeBack(data: Float32Array, dtype: FloatWeightDType): Float32Array {
  if (dtype === 'f32') return data;
  const bits = encode(data, dtype);
  return Float32Array.from(bits, dtype === 'f16' ? (h) => f16ToF32Table()[h] : bf16ToF32);
}

function ulpTol(ref: ArrayLike<number>): (i: number) => number {
  return (i) => ELEMENTWISE_ULPS * U * Math.abs(ref[i]) + 1e-30;
}

/** [n, k, T] shapes: degenerate, odd, and a wide k (the W8A16 op allows k and n up to 65535). */
export const SUITE_LINEAR_SHAPES: [n: number, k: number, T: number][] = [
  [1, 1, 1],
  [7, 33, 1],
  [5, 31, 3],
  [13, 100, 17],
  [64, 4133, 2],
  [300, 257, 5],
];

/** Registers the suite for backends made by `make` (f32 activations: the suite compares against f32 Refs). */
export function describeBackendSuite(label: string, make: () => Backend): void {
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

    it.each(SUITE_LINEAR_SHAPES)('W8A16 linear n=%i k=%i T=%i equals w8a16LinearRef', (n, k, T) => {
      const g = gen(1000 + n * 7 + k + T);
      const q = g.i8(n * k);
      const scale = Float32Array.from({ length: n }, () => g.uniform(1e-3, 2e-2));
      const offset = Float32Array.from({ length: n }, () => g.int(-128, 127));
      const bias = g.f32(n);
      const x = g.f32(T * k);
      if (T > 1) x[k + (k >> 1)] = 1000; // an outlier activation
      const b = make();
      const w = b.createW8A16Linear({ n, k, weight: q, scale, offset, bias });
      const y = b.alloc(T, n, 'f32');
      b.linear(y, tensorOf(b, T, k, x), w);
      const got = b.download(y);
      const ref = new Float32Array(T * n);
      w8a16LinearRef(ref, x, T, q, scale, offset, n, k, bias);
      const sumAbs = new Float64Array(T * n);
      for (let t = 0; t < T; t++)
        for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) sumAbs[t * n + i] += Math.abs(x[t * k + j] * (q[i * k + j] - offset[i]) * scale[i]);
      expect(worstRatio(got, ref, (i) => linearTol(k, sumAbs[i], ref[i], bias[i % n]))).toBeLessThanOrEqual(1);
      b.dispose();
    });

    it.each(['f32', 'f16', 'bf16'] as const)('float linear with %s weights (and a bias) equals floatLinearRef', (dtype) => {
      for (const [n, k, T] of SUITE_LINEAR_SHAPES) {
        const g = gen(2000 + n + k + T);
        const wF = decodeBack(g.f32(n * k, 0.05), dtype);
        const bias = g.f32(n);
        const x = g.f32(T * k);
        const b = make();
        const w = b.createFloatLinear({ n, k, dtype, data: encode(wF, dtype), bias });
        const y = b.alloc(T, n, 'f32');
        b.linear(y, tensorOf(b, T, k, x), w);
        const got = b.download(y);
        const ref = new Float32Array(T * n);
        floatLinearRef(ref, x, T, { dtype, data: encode(wF, dtype) }, n, k, bias);
        const sumAbs = new Float64Array(T * n);
        for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) sumAbs[t * n + i] += Math.abs(x[t * k + j] * wF[i * k + j]);
        expect(worstRatio(got, ref, (i) => linearTol(k, sumAbs[i], ref[i], bias[i % n]))).toBeLessThanOrEqual(1);
        b.dispose();
      }
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
      expect(worstRatio(b.download(nt), r1, ulpTol(r1))).toBeLessThanOrEqual(1);
      expect(Array.from(b.download(xt))).toEqual(Array.from(b.download(nt)));

      const gt = tensorOf(b, T, H, x);
      const ut = tensorOf(b, T, H, u);
      b.siluMul(gt, gt, ut);
      const r2 = new Float32Array(T * H);
      siluMulRef(r2, x, u);
      expect(worstRatio(b.download(gt), r2, ulpTol(r2))).toBeLessThanOrEqual(1);

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
      expect(() => b.gatherRows(gr, at, Int32Array.from([0, 1, 5]))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
      b.dispose();
    });

    it('rope (llama3 scaling and plain, views of q) equals ropeRef', () => {
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
        // q and k as row views of bigger tensors: the rotation must touch exactly those rows
        const qBig = tensorOf(b, T + 2, nH * hd, Float32Array.from({ length: (T + 2) * nH * hd }, (_, i) => (i < nH * hd ? 0 : i >= (T + 1) * nH * hd ? 0 : q[i - nH * hd])));
        const kt = tensorOf(b, T, nKv * hd, k);
        b.rope(b.view(qBig, 1, T), kt, pos, rt);
        const [qr, kr] = [q.slice(), k.slice()];
        ropeRef(qr, kr, T, nH * hd, nKv * hd, hd, pos, inv);
        const qAll = b.download(qBig);
        expect(worstRatio(qAll.subarray(nH * hd, (T + 1) * nH * hd), qr, ulpTol(qr))).toBeLessThanOrEqual(1);
        expect(Array.from(qAll.subarray(0, nH * hd)).every((v) => v === 0)).toBe(true);
        expect(worstRatio(b.download(kt), kr, ulpTol(kr))).toBeLessThanOrEqual(1);
        b.dispose();
      }
    });

    it('argmax (lowest index on ties) and seeded sampling equal the Refs', () => {
      const g = gen(13);
      const [rows, vocab] = [4, 1000];
      const logits = g.f32(rows * vocab, 2);
      logits[vocab + 5] = logits[vocab + 9] = 50;
      const b = make();
      const lt = tensorOf(b, rows, vocab, logits);
      const am = new Int32Array(rows);
      b.argmax(am, lt);
      expect(am[1]).toBe(5);
      for (let r = 0; r < rows; r++) expect(am[r]).toBe(argmaxRef(logits.subarray(r * vocab, (r + 1) * vocab)));
      const params = { temperature: 0.8, topK: 40, topP: 0.9 };
      const rng = createRng(42);
      const out = new Int32Array(rows);
      b.sample(out, lt, params, rng);
      const ref = createRng(42);
      for (let r = 0; r < rows; r++) expect(out[r]).toBe(sampleRef(logits.subarray(r * vocab, (r + 1) * vocab), params, ref));
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
      const scenarios: Scenario[] = [1, 4, 16, 128].flatMap((blockSize) => [
        { blockSize, lens: [23], decodeSteps: 3, nHeads: 4, nKvHeads: 2, headDim: 8 },
        { blockSize, lens: [5, 17, 1], decodeSteps: 3, nHeads: 6, nKvHeads: 2, headDim: 16 },
      ]);

      /** Prefill then decode steps through the cache; every step equals pagedAttentionRef on the backend's own cache. */
      function run(b: Backend, sc: Scenario, seed: number, cacheDtype: KvCacheDType): { maxErrContiguous: number; vmax: number } {
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
        let vmax = 0;
        for (const a of vAll) for (const x of a) vmax = Math.max(vmax, Math.abs(x));
        let maxErrContiguous = 0;
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
          const viaRef = new Float32Array(T * qDim);
          pagedAttentionRef(viaRef, q, nHeads, cacheRef, batch, 1 / Math.sqrt(headDim));
          expect(worstRatio(got, viaRef, () => ATTN_REL_TOL * vmax)).toBeLessThanOrEqual(1);
          if (cacheDtype === 'int8') {
            // codes written by the backend equal kvQuantizeRef bit for bit
            const qp = quant as KvQuantParams;
            const codes = new Int8Array(kvDim);
            for (let t = 0; t < T; t++) {
              kvQuantizeRef(codes, k.subarray(t * kvDim, (t + 1) * kvDim), qp.kScale, qp.kOffset);
              expect(Array.from((cacheRef.k as Int8Array).subarray(slots[t] * kvDim, (slots[t] + 1) * kvDim))).toEqual(Array.from(codes));
              kvQuantizeRef(codes, v.subarray(t * kvDim, (t + 1) * kvDim), qp.vScale, qp.vOffset);
              expect(Array.from((cacheRef.v as Int8Array).subarray(slots[t] * kvDim, (slots[t] + 1) * kvDim))).toEqual(Array.from(codes));
            }
          } else {
            lens.forEach((_, s) => {
              const rowsQ = q.subarray(queryStart[s] * qDim, queryStart[s + 1] * qDim);
              const want = new Float32Array(rowsQ.length);
              attentionContiguousRef(want, rowsQ, kAll[s], vAll[s], positions.subarray(queryStart[s], queryStart[s + 1]), nHeads, nKvHeads, headDim, 1 / Math.sqrt(headDim));
              const gotS = got.subarray(queryStart[s] * qDim, queryStart[s + 1] * qDim);
              for (let i = 0; i < want.length; i++) maxErrContiguous = Math.max(maxErrContiguous, Math.abs(gotS[i] - want[i]));
            });
          }
        }
        return { maxErrContiguous, vmax };
      }

      it.each(scenarios)('f32 cache, block $blockSize, prompts $lens + $decodeSteps decode steps: equals contiguous causal GQA attention', (sc) => {
        const b = make();
        const { maxErrContiguous, vmax } = run(b, sc, 300 + sc.blockSize, 'f32');
        expect(maxErrContiguous).toBeLessThanOrEqual(ATTN_REL_TOL * vmax);
        b.dispose();
      });

      it.each(scenarios.filter((s) => s.blockSize >= 16))('f16 cache, block $blockSize, prompts $lens: equals the Ref on the stored f16 values', (sc) => {
        const b = make();
        const { maxErrContiguous, vmax } = run(b, sc, 400 + sc.blockSize, 'f16');
        // against the f32 history the only extra error is f16 storage of K and V (relative 2^-11 each)
        expect(maxErrContiguous).toBeLessThanOrEqual(0.05 * vmax);
        b.dispose();
      });

      it.each(scenarios.filter((s) => s.blockSize !== 1))('int8 cache, block $blockSize, prompts $lens: codes equal kvQuantizeRef, attention equals the Ref', (sc) => {
        const b = make();
        run(b, sc, 500 + sc.blockSize, 'int8');
        b.dispose();
      });

      it('kvWrite skips rows with a negative slot', () => {
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
