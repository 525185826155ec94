// The sharding arithmetic: which rows / columns each rank holds (ATB-Models' rules), that row slices and column slices
// of an int8 + scale/offset linear reproduce the unsplit linear, and that the loader applies the plan.

import { join } from 'node:path';
import { createHostBackend, type Backend, type HostKernels } from '@w8a16/ascend-runtime';
import { Checkpoint, readLlamaConfig, type LlamaConfig } from '@w8a16/format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../../test/helpers';
import { loadLlamaWeights } from '../model/load';
import { linearSplit, planShard, readColumnSlice, sliceColumns, sliceRows } from './shard';

/** Unit roundoff of f32 (2^-24). */
const F32_U = 2 ** -24;
/**
 * A row-parallel output element is the unsplit dot product summed in another order. Two orders of summing k terms
 * differ by at most about 2·k·u·Σ|terms| (the classic γ_k bound, once per order), so that is the tolerance.
 */
const reorderBound = (k: number, absSum: number) => 2 * k * F32_U * absSum + 1e-30;

const TINY = join(FIXTURES, 'tiny-llama3-fp16');
const TINY_C8 = join(FIXTURES, 'tiny-llama3-fp16/reference/w8a16-m3-c8');

function config(over: Partial<LlamaConfig>): LlamaConfig {
  return { ...readLlamaConfig(TINY).config, ...over };
}

/** Deterministic generator (LCG) for test data. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('planShard', () => {
  it('tiny (8 heads, 2 KV heads, intermediate 320): N = 1 and 2 split every width', () => {
    const c = config({});
    expect([c.nHeads, c.nKvHeads, c.headDim, c.intermediateSize]).toEqual([8, 2, 16, 320]);
    expect(planShard(c, 0, 1)).toEqual({
      rank: 0, worldSize: 1, nHeads: 8, nKvHeads: 2, intermediateSize: 320,
      qRows: { start: 0, count: 128 }, kvRows: { start: 0, count: 32 }, mlpRows: { start: 0, count: 320 }, kvReplicas: 1,
    });
    expect(planShard(c, 1, 2)).toEqual({
      rank: 1, worldSize: 2, nHeads: 4, nKvHeads: 1, intermediateSize: 160,
      qRows: { start: 64, count: 64 }, kvRows: { start: 16, count: 16 }, mlpRows: { start: 160, count: 160 }, kvReplicas: 1,
    });
  });

  it('N = 4 over 2 KV heads replicates them as ATB-Models does: rank r holds KV head r // 2', () => {
    const c = config({});
    const kvHeads = [0, 1, 2, 3].map((r) => planShard(c, r, 4));
    expect(kvHeads.map((s) => s.kvRows.start / c.headDim)).toEqual([0, 0, 1, 1]);
    expect(kvHeads.every((s) => s.nKvHeads === 1 && s.kvReplicas === 2 && s.kvRows.count === c.headDim)).toBe(true);
    expect(kvHeads.map((s) => s.qRows.start / c.headDim)).toEqual([0, 2, 4, 6]);
  });

  it('every query head of a rank reads the KV head that rank holds (GQA groups never straddle ranks)', () => {
    const shapes = [
      { nHeads: 8, nKvHeads: 2 },
      { nHeads: 8, nKvHeads: 4 },
      { nHeads: 8, nKvHeads: 8 },
      { nHeads: 64, nKvHeads: 8 }, // LLaMA-3-70B
      { nHeads: 32, nKvHeads: 1 },
    ];
    for (const s of shapes) {
      const c = config({ ...s, intermediateSize: 64 * 3 });
      for (const N of [1, 2, 4, 8]) {
        if (c.nHeads % N !== 0) continue;
        for (let r = 0; r < N; r++) {
          const sh = planShard(c, r, N);
          const group = c.nHeads / c.nKvHeads; // query heads per KV head in the whole model
          const localGroup = sh.nHeads / sh.nKvHeads; // and on the rank, as pagedAttention groups them
          for (let h = 0; h < sh.nHeads; h++) {
            const globalQ = sh.qRows.start / c.headDim + h;
            const globalKv = sh.kvRows.start / c.headDim + Math.floor(h / localGroup);
            expect(Math.floor(globalQ / group), `${JSON.stringify(s)} N=${N} rank ${r} head ${h}`).toBe(globalKv);
          }
        }
      }
    }
  });

  it('E_WORLD_SIZE when the world size does not divide the heads or the MLP, or neither divides the KV heads', () => {
    const c = config({});
    expect(() => planShard(c, 0, 3)).toThrow(expect.objectContaining({ code: 'E_WORLD_SIZE', message: expect.stringContaining('num_attention_heads 8') }));
    expect(() => planShard(config({ intermediateSize: 322 }), 0, 4)).toThrow(expect.objectContaining({ code: 'E_WORLD_SIZE', message: expect.stringContaining('intermediate_size 322') }));
    expect(() => planShard(config({ nHeads: 12, nKvHeads: 3 }), 0, 2)).toThrow(expect.objectContaining({ code: 'E_WORLD_SIZE', message: expect.stringContaining('num_key_value_heads 3') }));
    expect(() => planShard(c, 0, 0)).toThrow(expect.objectContaining({ code: 'E_WORLD_SIZE' }));
    expect(() => planShard(c, 2, 2)).toThrow(expect.objectContaining({ code: 'E_WORLD_SIZE' }));
  });

  it('linearSplit: q/k/v/gate/up by rows, o/down by columns, the row-parallel bias on rank 0 only', () => {
    const c = config({});
    const s1 = planShard(c, 1, 2);
    expect(linearSplit(s1, 'q')).toEqual({ kind: 'rows', start: 64, count: 64 });
    expect(linearSplit(s1, 'v')).toEqual({ kind: 'rows', start: 16, count: 16 });
    expect(linearSplit(s1, 'up')).toEqual({ kind: 'rows', start: 160, count: 160 });
    expect(linearSplit(s1, 'o')).toEqual({ kind: 'cols', start: 64, count: 64, withBias: false });
    expect(linearSplit(planShard(c, 0, 2), 'down')).toEqual({ kind: 'cols', start: 0, count: 160, withBias: true });
  });
});

describe.each<HostKernels>(['js', 'native'])('split W8A16 linears reproduce the unsplit one (%s kernels)', (kernels) => {
  let be: Backend;
  beforeAll(() => {
    be = createHostBackend({ kernels, threads: 2 });
  });
  afterAll(() => be.dispose());

  /** A random W8A16 linear and input; `exact` makes every product and sum exact in f32 (integers, power-of-two scales). */
  function problem(seed: number, n: number, k: number, T: number, exact: boolean) {
    const rnd = lcg(seed);
    const q = Int8Array.from({ length: n * k }, () => Math.floor(rnd() * 256) - 128);
    const scale = Float32Array.from({ length: n }, () => (exact ? 2 ** -Math.floor(4 + rnd() * 4) : 1e-3 + rnd() * 1e-2));
    const offset = Float32Array.from({ length: n }, () => Math.floor(rnd() * 40) - 20);
    const bias = Float32Array.from({ length: n }, () => (exact ? Math.floor(rnd() * 16) - 8 : rnd() - 0.5));
    const x = Float32Array.from({ length: T * k }, () => (exact ? Math.floor(rnd() * 17) - 8 : (rnd() - 0.5) * 4));
    return { q, scale, offset, bias, x };
  }

  function run(x: Float32Array, T: number, n: number, k: number, w: { q: Int8Array; scale: Float32Array; offset: Float32Array; bias?: Float32Array }): Float32Array {
    const lin = be.createW8A16Linear({ n, k, weight: w.q, scale: w.scale, offset: w.offset, bias: w.bias });
    const xt = be.alloc(T, k);
    const out = be.alloc(T, n);
    be.upload(xt, x);
    be.linear(out, xt, lin);
    const y = be.download(out);
    be.free(xt);
    be.free(out);
    be.freeWeight(lin);
    return y;
  }

  const n = 96;
  const k = 160;
  const T = 3;

  it.each([1, 2, 4])('column-parallel (row slices with their scale/offset/bias rows), N = %i: the concatenation is bit-identical', (N) => {
    const p = problem(11 + N, n, k, T, false);
    const full = run(p.x, T, n, k, p);
    const rows = n / N;
    const joined = new Float32Array(T * n);
    for (let r = 0; r < N; r++) {
      const part = run(p.x, T, rows, k, {
        q: sliceRows(p.q, k, r * rows, rows),
        scale: sliceRows(p.scale, 1, r * rows, rows),
        offset: sliceRows(p.offset, 1, r * rows, rows),
        bias: sliceRows(p.bias, 1, r * rows, rows),
      });
      for (let t = 0; t < T; t++) joined.set(part.subarray(t * rows, (t + 1) * rows), t * n + r * rows);
    }
    expect(joined).toEqual(full);
  });

  it.each([1, 2, 4])('row-parallel (column slices of the int8 codes, scale/offset whole, bias on rank 0), N = %i', (N) => {
    for (const exact of [true, false]) {
      const p = problem(23 + N, n, k, T, exact);
      const full = run(p.x, T, n, k, p);
      const cols = k / N;
      const sum = new Float64Array(T * n); // partials summed in rank order, as the all-reduce does
      for (let r = 0; r < N; r++) {
        const xr = sliceColumns(p.x, T, k, r * cols, cols);
        const part = run(xr, T, n, cols, { q: sliceColumns(p.q, n, k, r * cols, cols), scale: p.scale, offset: p.offset, bias: r === 0 ? p.bias : undefined });
        for (let i = 0; i < sum.length; i++) sum[i] += part[i];
      }
      const reduced = Float32Array.from(sum);
      if (exact) {
        expect(reduced).toEqual(full); // every product and partial sum is an exact f32: order cannot matter
        continue;
      }
      // Σ|terms| of each output element bounds the reordering error
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < n; i++) {
          let absSum = Math.abs(p.bias[i]);
          for (let j = 0; j < k; j++) absSum += Math.abs(p.x[t * k + j] * (p.q[i * k + j] - p.offset[i]) * p.scale[i]);
          const at = t * n + i;
          expect(Math.abs(reduced[at] - full[at]), `row ${t} out ${i}`).toBeLessThanOrEqual(reorderBound(k + N, absSum));
        }
      }

    }
  });
});

describe('reading and loading a shard', () => {
  it('readColumnSlice equals the columns of the whole tensor (I8 and F16, row chunks included)', () => {
    const cases: [string, string][] = [
      [TINY_C8, 'model.layers.1.mlp.down_proj.weight'], // I8 [128, 320]
      [TINY, 'model.layers.2.self_attn.o_proj.weight'], // F16 [128, 128]
    ];
    for (const [dir, name] of cases) {
      const ckpt = Checkpoint.open(dir);
      try {
        const [rows, cols] = ckpt.get(name).shape;
        const elem = ckpt.rowBytes(name) / cols;
        const whole = ckpt.readRows(name, 0, rows);
        for (const [start, count] of [[0, cols / 2], [cols / 4, cols / 4], [cols - 3, 3]]) {
          const want = sliceColumns(whole, rows, cols * elem, start * elem, count * elem);
          expect(readColumnSlice(ckpt, name, start, count)).toEqual(want);
        }
        expect(() => readColumnSlice(ckpt, name, cols - 1, 2)).toThrow(expect.objectContaining({ code: 'E_SHAPE_MISMATCH' }));
      } finally {
        ckpt.close();
      }
    }
  });

  it('loadLlamaWeights with a shard: local widths, and the C8 KV scales of the rank\'s KV head', () => {
    const be = createHostBackend({ kernels: 'js' });
    try {
      const whole = loadLlamaWeights(TINY_C8, be);
      const c = whole.config;
      for (const [rank, N] of [[1, 2], [3, 4]]) {
        const shard = planShard(c, rank, N);
        const w = loadLlamaWeights(TINY_C8, be, { shard });
        expect(w.shard).toEqual(shard);
        for (const L of w.layers) {
          expect([L.q.n, L.q.k, L.k.n, L.v.n, L.o.n, L.o.k]).toEqual([shard.qRows.count, c.hiddenSize, shard.kvRows.count, shard.kvRows.count, c.hiddenSize, shard.qRows.count]);
          expect([L.gate.n, L.up.n, L.down.n, L.down.k]).toEqual([c.intermediateSize / N, c.intermediateSize / N, c.hiddenSize, c.intermediateSize / N]);
        }
        for (let l = 0; l < c.nLayers; l++) {
          const kv = shard.kvRows;
          expect(w.layers[l].kvQuant!.kScale).toEqual(whole.layers[l].kvQuant!.kScale.subarray(kv.start, kv.start + kv.count));
          expect(w.layers[l].kvQuant!.vOffset).toEqual(whole.layers[l].kvQuant!.vOffset.subarray(kv.start, kv.start + kv.count));
        }
        expect(w.summary.weightBytes).toBeLessThan(whole.summary.weightBytes);
        w.free();
      }
      whole.free();
    } finally {
      be.dispose();
    }
  });
});
