// One suite, every host kernel path: js, and native at each instruction set this CPU has (threads 1 and 2).
// If the addon is missing the native cases FAIL (createHostBackend throws); vitest.global-setup.ts builds it first.
import { describe, expect, it } from 'vitest';
import type { Backend, FloatWeightDType, KvQuantParams, Tensor } from './backend';
import { bf16ToF32, f32ToBf16, f32ToF16 } from '@w8a16/quant-core';
import { f16ToF32Table } from './dtype';
import { createHostBackend, type HostBackendOptions } from './host/host-backend';
import { loadHostAddon, type NativeIsa } from './host/native';
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

const U = 2 ** -24; // f32 unit roundoff

/**
 * W8A16 fast vs Ref. The Ref rounds each dequantized weight to f32 (≤ U relative) and sums in f64. The js path
 * sums x·q in f64 and applies the scale once; the native path codes each activation with a power-of-two step
 * ≤ amax·2^-28, moving x_j by ≤ amax·2^-29, then sums exactly. Both outputs round to f32 once (≤ U·|y| each).
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

function nativeIsas(): NativeIsa[] {
  const all: NativeIsa[] = ['scalar', 'avx2', 'avx512'];
  try {
    return all.slice(0, loadHostAddon().bestIsa() + 1);
  } catch {
    return all; // addon missing: every native case runs and fails in createHostBackend
  }
}

const configs: { label: string; opts: HostBackendOptions }[] = [
  { label: 'js', opts: { kernels: 'js' } },
  ...nativeIsas().flatMap((isa) => [
    { label: `native ${isa} ×1`, opts: { kernels: 'native' as const, isa, threads: 1 } },
    { label: `native ${isa} ×2`, opts: { kernels: 'native' as const, isa, threads: 2 } },
  ]),
];

function tensorOf(b: Backend, rows: number, cols: number, data: Float32Array): Tensor {
  const t = b.alloc(rows, cols);
  b.upload(t, data);
  return t;
}

function encode(data: Float32Array, dtype: FloatWeightDType): Float32Array | Uint16Array {
  if (dtype === 'f32') return data;
  return Uint16Array.from(data, dtype === 'f16' ? f32ToF16 : f32ToBf16);
}

/** Round-trips data through the dtype so the f64 expectations see exactly the stored weights. */
function decodeBack(data: Float32Array, dtype: FloatWeightDType): Float32Array {
  if (dtype === 'f32') return data;
  const bits = encode(data, dtype);
  return Float32Array.from(bits, dtype === 'f16' ? (h) => f16ToF32Table()[h] : bf16ToF32);
}

const LINEAR_SHAPES: [n: number, k: number, T: number][] = [
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

describe.each(configs)('host backend, $label kernels', ({ opts }) => {
  const make = (): Backend => createHostBackend(opts);

  it('reports its kernels', () => {
    const b = make();
    expect(b.info.name).toBe('host');
    expect(b.info.kernels).toBe(opts.kernels === 'js' ? 'js' : `native-${opts.isa}`);
    b.dispose();
  });

  it.each(LINEAR_SHAPES)('W8A16 linear n=%i k=%i T=%i equals the Ref and an f64 dequantize-then-matmul', (n, k, T) => {
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
    const xt = tensorOf(b, T, k, x);
    const yt = b.alloc(T, n);
    b.linear(yt, xt, w);
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
    const y = b.alloc(3, n);
    b.linear(y, tensorOf(b, 3, k, x), w);
    const out = b.download(y);
    for (let i = 0; i < n; i++) {
      expect(out[i]).toBeNaN();
      expect(Number.isFinite(out[n + i])).toBe(true);
      expect(Number.isFinite(out[2 * n + i])).toBe(false);
    }
    b.dispose();
  });

  it('W8A16 linear over T = 1..17 tokens gives each token what T = 1 gives it', () => {
    const g = gen(77);
    const [n, k] = [11, 45];
    const q = g.i8(n * k);
    const scale = Float32Array.from({ length: n }, () => g.uniform(1e-3, 1e-2));
    const offset = Float32Array.from({ length: n }, () => g.int(-20, 20));
    const b = make();
    const w = b.createW8A16Linear({ n, k, weight: q, scale, offset });
    const x = g.f32(17 * k);
    const one = new Float32Array(n);
    for (let T = 1; T <= 17; T++) {
      const yt = b.alloc(T, n);
      b.linear(yt, tensorOf(b, T, k, x.subarray(0, T * k)), w);
      const y = b.download(yt);
      for (let t = 0; t < T; t++) {
        const y1 = b.alloc(1, n);
        b.linear(y1, tensorOf(b, 1, k, x.subarray(t * k, (t + 1) * k)), w);
        b.download(y1, one);
        expect(Array.from(y.subarray(t * n, (t + 1) * n))).toEqual(Array.from(one)); // token blocking is exact
      }
    }
    b.dispose();
  });

  it.each(['f32', 'f16', 'bf16'] as const)('float linear with %s weights equals the Ref on odd shapes', (dtype) => {
    for (const [n, k, T] of LINEAR_SHAPES) {
      const g = gen(2000 + n + k + T);
      const wF = decodeBack(g.f32(n * k, 0.05), dtype);
      const bias = g.f32(n);
      const x = g.f32(T * k);
      const b = make();
      const w = b.createFloatLinear({ n, k, dtype, data: encode(wF, dtype), bias });
      const yt = b.alloc(T, n);
      b.linear(yt, tensorOf(b, T, k, x), w);
      const y = b.download(yt);
      const ref = new Float32Array(T * n);
      floatLinearRef(ref, x, T, { dtype, data: encode(wF, dtype) }, n, k, bias);
      const sumAbs = new Float64Array(T * n);
      for (let t = 0; t < T; t++)
        for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) sumAbs[t * n + i] += Math.abs(x[t * k + j] * wF[i * k + j]);
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
    const [y1, y2] = [b.alloc(1, n), b.alloc(1, n)];
    b.linear(y1, x, w1);
    b.linear(y2, x, w2);
    expect(Array.from(b.download(y1))).toEqual(Array.from(b.download(y2)));
    b.dispose();
  });

  it.each(['f32', 'f16', 'bf16'] as const)('embedding gathers %s rows exactly', (dtype) => {
    const g = gen(9);
    const [vocab, hidden] = [50, 12];
    const table = decodeBack(g.f32(vocab * hidden), dtype);
    const ids = Int32Array.from([3, 0, 49, 3, 17]);
    const b = make();
    const e = b.createEmbedding({ vocab, hidden, dtype, data: encode(table, dtype) });
    const out = b.alloc(ids.length, hidden);
    b.embedding(out, e, ids);
    const ref = new Float32Array(ids.length * hidden);
    embeddingRef(ref, { dtype, data: encode(table, dtype) }, hidden, ids);
    expect(Array.from(b.download(out))).toEqual(Array.from(ref));
    for (let c = 0; c < hidden; c++) expect(ref[2 * hidden + c]).toBe(table[49 * hidden + c]);
    expect(() => b.embedding(b.alloc(1, hidden), e, Int32Array.from([50]))).toThrow(expect.objectContaining({ code: 'E_RANGE' }));
    b.dispose();
  });

  it('rmsNorm, siluMul, add, gatherRows equal their Refs bit for bit (in place too)', () => {
    const g = gen(11);
    const [T, H] = [5, 24];
    const x = g.f32(T * H, 3);
    const w = g.f32(H);
    const u = g.f32(T * H);
    const b = make();
    const xt = tensorOf(b, T, H, x);
    const nw = b.createNormWeight(w);
    b.rmsNorm(xt, xt, nw, 1e-5);
    const r1 = new Float32Array(T * H);
    rmsNormRef(r1, x, T, H, w, 1e-5);
    expect(Array.from(b.download(xt))).toEqual(Array.from(r1));
    // against the formula in f64: x / sqrt(mean x² + eps) · w, within the f32 roundings of the chain
    for (let t = 0; t < T; t++) {
      let ss = 0;
      for (let c = 0; c < H; c++) ss += x[t * H + c] ** 2;
      const inv = 1 / Math.sqrt(ss / H + 1e-5);
      for (let c = 0; c < H; c++) expect(Math.abs(r1[t * H + c] - x[t * H + c] * inv * w[c])).toBeLessThanOrEqual(8 * U * Math.abs(x[t * H + c] * inv * w[c]) + 1e-30);
    }

    const ut = tensorOf(b, T, H, u);
    const gt = tensorOf(b, T, H, x);
    b.siluMul(gt, gt, ut);
    const r2 = new Float32Array(T * H);
    siluMulRef(r2, x, u);
    expect(Array.from(b.download(gt))).toEqual(Array.from(r2));
    expect(r2[0]).toBeCloseTo((x[0] / (1 + Math.exp(-x[0]))) * u[0], 5);

    b.add(ut, ut, gt);
    const r3 = new Float32Array(T * H);
    addRef(r3, u, r2);
    expect(Array.from(b.download(ut))).toEqual(Array.from(r3));

    const rows = Int32Array.from([4, 0, 4]);
    const gr = b.alloc(3, H);
    b.gatherRows(gr, ut, rows);
    const d = b.download(gr);
    expect(Array.from(d.subarray(0, H))).toEqual(Array.from(r3.subarray(4 * H, 5 * H)));
    expect(Array.from(d.subarray(H, 2 * H))).toEqual(Array.from(r3.subarray(0, H)));
    b.dispose();
  });

  it('rope (llama3 scaling and plain) equals ropeRef bit for bit and rotates pairs i, i + headDim/2', () => {
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
      const [qt, kt] = [tensorOf(b, T, nH * hd, q), tensorOf(b, T, nKv * hd, k)];
      b.rope(qt, kt, pos, rt);
      const [qr, kr] = [q.slice(), k.slice()];
      ropeRef(qr, kr, T, nH * hd, nKv * hd, hd, pos, inv);
      expect(Array.from(b.download(qt))).toEqual(Array.from(qr));
      expect(Array.from(b.download(kt))).toEqual(Array.from(kr));
      expect(Array.from(qr.subarray(0, nH * hd))).toEqual(Array.from(q.subarray(0, nH * hd))); // position 0: identity
      // position 7, head 1, pair 1: a 2-D rotation by 7·inv[1]
      const a = 7 * inv[1];
      const base = 3 * nH * hd + hd;
      expect(qr[base + 1]).toBeCloseTo(q[base + 1] * Math.cos(a) - q[base + 1 + hd / 2] * Math.sin(a), 5);
      expect(qr[base + 1 + hd / 2]).toBeCloseTo(q[base + 1 + hd / 2] * Math.cos(a) + q[base + 1] * Math.sin(a), 5);
      b.dispose();
    }
  });

  it('argmax and seeded sampling equal the Refs and repeat with the same seed', () => {
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

    /** Runs prefill then decode steps through the paged cache and checks every step against `check`. */
    function run(
      b: Backend,
      sc: Scenario,
      seed: number,
      cacheDtype: 'f32' | 'f16' | 'int8',
      check: (c: StepCheck) => void,
    ): void {
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
        const out = b.alloc(T, qDim);
        const batch = { numSeqs: lens.length, queryStart, positions, contextLens, blockTables, maxBlocksPerSeq };
        b.pagedAttention(out, tensorOf(b, T, qDim, q), cache, batch);
        const got = b.download(out);
        const cacheRef: KvStorageRef = { dtype: cacheDtype, numBlocks, blockSize, nKvHeads, headDim, k: b.readKvCache(cache, 'k'), v: b.readKvCache(cache, 'v'), quant };
        // the Ref on the same cache and batch
        const viaRef = new Float32Array(T * qDim);
        pagedAttentionRef(viaRef, q, nHeads, cacheRef, batch, 1 / Math.sqrt(headDim));
        // int8: the Ref sees dequantized values, which may exceed the originals by up to scale/2
        const slack = quant ? Math.max(...quant.kScale, ...quant.vScale) : 0;
        const tol = attnTol(q, qDim, headDim, positions, maxAbs(kAll) + slack, maxAbs(vAll) + slack);
        expect(worstRatio(got, viaRef, tol)).toBeLessThanOrEqual(1);
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
        const tol = attnTol(q, sc.nHeads * sc.headDim, sc.headDim, positions, maxAbs([kAll]), maxAbs([vAll]));
        expect(worstRatio(got, want, tol)).toBeLessThanOrEqual(1);
        checked += got.length;
      });
      expect(checked).toBe(sc.lens.reduce((a, l) => a + l + sc.decodeSteps, 0) * sc.nHeads * sc.headDim);
      b.dispose();
    });

    it.each(scenarios.filter((s) => s.blockSize === 16 || s.headDim === 12))('f16 cache, block $blockSize, prompts $lens: within the f16 rounding of K and V', (sc) => {
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

    it.each(scenarios)('int8 cache, block $blockSize, prompts $lens: codes equal the Ref, attention within the scale-derived bound', (sc) => {
      const b = make();
      const kvDim = sc.nKvHeads * sc.headDim;
      const scale = 1 / Math.sqrt(sc.headDim);
      run(b, sc, 500 + sc.blockSize, 'int8', ({ got, q, positions, kAll, vAll, cacheRef, slotOf }) => {
        const qp = cacheRef.quant as KvQuantParams;
        // every written row's codes equal kvQuantizeRef bit for bit
        const codes = new Int8Array(kvDim);
        const last = positions[positions.length - 1];
        for (const p of [0, last]) {
          kvQuantizeRef(codes, kAll.subarray(p * kvDim, (p + 1) * kvDim), qp.kScale, qp.kOffset);
          const slot = slotOf(p);
          expect(Array.from((cacheRef.k as Int8Array).subarray(slot * kvDim, (slot + 1) * kvDim))).toEqual(Array.from(codes));
          kvQuantizeRef(codes, vAll.subarray(p * kvDim, (p + 1) * kvDim), qp.vScale, qp.vOffset);
          expect(Array.from((cacheRef.v as Int8Array).subarray(slot * kvDim, (slot + 1) * kvDim))).toEqual(Array.from(codes));
        }
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
  });
});
