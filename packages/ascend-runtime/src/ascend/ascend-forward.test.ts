// A whole W8A16 LLaMA forward pass (seeded 2-layer model) through the Ascend backend on the stand-in, against the
// host backend: embedding → rmsnorm → W8A16 q/k/v → rope → kvWrite → pagedAttention → o → add → MLP → lm_head → argmax.
import { describe, expect, it } from 'vitest';
import type { ActDType, Backend, KvCacheDType, KvCacheLayer, LinearWeight, NormWeight, RopeTable, EmbeddingTable, Tensor } from '../backend';
import { f32ToF16Bits } from '../dtype';
import { createHostBackend } from '../host/host-backend';
import { computeInvFreq } from '../rope';
import { argmaxRef } from '../sampling';
import { gen } from '../test-data';
import { buildStandin } from '../../test/standin/build';
import { standinControl } from '../../test/standin/control';
import { createAscendBackend } from './backend';

const libDir = buildStandin();
const ctl = standinControl(libDir);

const CFG = { vocab: 96, hidden: 64, nHeads: 4, nKvHeads: 2, headDim: 16, inter: 128, layers: 2, eps: 1e-5, blockSize: 16, numBlocks: 4 };
const KV_DIM = CFG.nKvHeads * CFG.headDim;
const Q_DIM = CFG.nHeads * CFG.headDim;

/**
 * Both backends run the same f32 math; they differ only in summation order inside the f32 kernels (the host's
 * linears round per 64-wide block, the stand-in accumulates in f64) and in libm ulps. Each linear contributes at
 * most k·2^-24 relative (k ≤ 128 → 2^-17); 2 layers of 7 linears plus attention and norms stay well inside 2^-14 of
 * the largest logit.
 */
const F32_LOGITS_REL_TOL = 2 ** -14;
/**
 * f16 activations round every stored intermediate to 11 significant bits (2^-11 relative); ~20 such roundings on the
 * path to the logits add up to at most ~20 · 2^-11 ≈ 1% of the largest logit.
 */
const F16_LOGITS_REL_TOL = 0.01;

interface Model {
  emb: EmbeddingTable;
  layers: { inNorm: NormWeight; postNorm: NormWeight; q: LinearWeight; k: LinearWeight; v: LinearWeight; o: LinearWeight; gate: LinearWeight; up: LinearWeight; down: LinearWeight; cache: KvCacheLayer }[];
  norm: NormWeight;
  head: LinearWeight;
  rope: RopeTable;
}

/** Per-row asymmetric int8 (spec §1.1, fp32): the W8A16 weights of a seeded float matrix. */
function quantize(w: Float32Array, n: number, k: number): { weight: Int8Array; scale: Float32Array; offset: Float32Array } {
  const weight = new Int8Array(n * k);
  const scale = new Float32Array(n);
  const offset = new Float32Array(n);
  const f = Math.fround;
  for (let i = 0; i < n; i++) {
    const row = w.subarray(i * k, (i + 1) * k);
    const mn = Math.min(0, ...row);
    const mx = Math.max(0, ...row);
    const s = Math.max(f(f(mx - mn) / 255), 2 ** -23);
    const o = Math.round(f(-mn / s)) - 128;
    scale[i] = s;
    offset[i] = o;
    for (let j = 0; j < k; j++) weight[i * k + j] = Math.min(127, Math.max(-128, Math.round(f(f(row[j] / s) + o))));
  }
  return { weight, scale, offset };
}

function buildModel(b: Backend, kvDtype: KvCacheDType): Model {
  const g = gen(2024);
  const w8 = (n: number, k: number, name: string): LinearWeight => b.createW8A16Linear({ n, k, ...quantize(g.f32(n * k, 0.08), n, k), name });
  const normW = (): NormWeight => b.createNormWeight(Float32Array.from({ length: CFG.hidden }, () => 1 + 0.1 * g.normal()));
  const emb = b.createEmbedding({ vocab: CFG.vocab, hidden: CFG.hidden, dtype: 'f16', data: Uint16Array.from(g.f32(CFG.vocab * CFG.hidden, 0.5), f32ToF16Bits) });
  const layers = Array.from({ length: CFG.layers }, (_, l) => {
    // C8: symmetric per-channel KV scales as msModelSlim's default calibration would give for these magnitudes
    const quant =
      kvDtype === 'int8'
        ? { kScale: new Float32Array(KV_DIM).fill(6 / 127), kOffset: new Float32Array(KV_DIM), vScale: new Float32Array(KV_DIM).fill(4 / 127), vOffset: new Float32Array(KV_DIM) }
        : undefined;
    return {
      inNorm: normW(),
      postNorm: normW(),
      q: w8(Q_DIM, CFG.hidden, `layers.${l}.q_proj`),
      k: w8(KV_DIM, CFG.hidden, `layers.${l}.k_proj`),
      v: w8(KV_DIM, CFG.hidden, `layers.${l}.v_proj`),
      o: w8(CFG.hidden, Q_DIM, `layers.${l}.o_proj`),
      gate: w8(CFG.inter, CFG.hidden, `layers.${l}.gate_proj`),
      up: w8(CFG.inter, CFG.hidden, `layers.${l}.up_proj`),
      down: w8(CFG.hidden, CFG.inter, `layers.${l}.down_proj`),
      cache: b.createKvCache({ numBlocks: CFG.numBlocks, blockSize: CFG.blockSize, nKvHeads: CFG.nKvHeads, headDim: CFG.headDim, dtype: kvDtype, quant }),
    };
  });
  const norm = normW();
  const head = b.createFloatLinear({ n: CFG.vocab, k: CFG.hidden, dtype: 'f16', data: Uint16Array.from(g.f32(CFG.vocab * CFG.hidden, 0.1), f32ToF16Bits), name: 'lm_head' });
  const rope = b.createRope(
    CFG.headDim,
    computeInvFreq({ headDim: CFG.headDim, theta: 500000, scaling: { ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }),
  );
  return { emb, layers, norm, head, rope };
}

/** One forward step over the rows `ids` at positions start.. of a single sequence; returns the last row's logits. */
function forward(b: Backend, m: Model, ids: number[], start: number, dtype: ActDType): Float32Array {
  const T = ids.length;
  const blockTables = Int32Array.from([3, 1, 0, 2]); // scattered blocks
  const positions = Int32Array.from({ length: T }, (_, i) => start + i);
  const slots = Int32Array.from(positions, (p) => blockTables[Math.floor(p / CFG.blockSize)] * CFG.blockSize + (p % CFG.blockSize));
  const batch = { numSeqs: 1, queryStart: Int32Array.from([0, T]), positions, contextLens: Int32Array.from([start + T]), blockTables, maxBlocksPerSeq: 4 };
  const live: Tensor[] = [];
  const t = (cols: number, rows = T): Tensor => {
    const x = b.alloc(rows, cols, dtype);
    live.push(x);
    return x;
  };
  const x = t(CFG.hidden);
  b.embedding(x, m.emb, Int32Array.from(ids));
  const h = t(CFG.hidden);
  const q = t(Q_DIM);
  const k = t(KV_DIM);
  const v = t(KV_DIM);
  const att = t(Q_DIM);
  const o = t(CFG.hidden);
  const gate = t(CFG.inter);
  const up = t(CFG.inter);
  for (const L of m.layers) {
    b.rmsNorm(h, x, L.inNorm, CFG.eps);
    b.linear(q, h, L.q);
    b.linear(k, h, L.k);
    b.linear(v, h, L.v);
    b.rope(q, k, positions, m.rope);
    b.kvWrite(L.cache, k, v, slots);
    b.pagedAttention(att, q, L.cache, batch);
    b.linear(o, att, L.o);
    b.add(x, x, o);
    b.rmsNorm(h, x, L.postNorm, CFG.eps);
    b.linear(gate, h, L.gate);
    b.linear(up, h, L.up);
    b.siluMul(gate, gate, up);
    b.linear(o, gate, L.down);
    b.add(x, x, o);
  }
  const last = t(CFG.hidden, 1);
  b.gatherRows(last, x, Int32Array.from([T - 1]));
  b.rmsNorm(last, last, m.norm, CFG.eps);
  const logits = t(CFG.vocab, 1);
  b.linear(logits, last, m.head);
  const token = new Int32Array(1);
  b.argmax(token, logits);
  const out = b.download(logits);
  expect(token[0]).toBe(argmaxRef(out)); // the device argmax agrees with the downloaded logits
  for (const y of live) b.free(y);
  return out;
}

const PROMPT = [1, 17, 42, 5, 88, 23, 61];
const DECODE_STEPS = 4;

/** Greedy generation; `force` feeds these tokens instead of the backend's own choices (teacher forcing). */
function generate(b: Backend, m: Model, dtype: ActDType, force?: number[]): { logits: Float32Array[]; tokens: number[] } {
  const logits = [forward(b, m, PROMPT, 0, dtype)];
  const tokens = [argmaxRef(logits[0])];
  for (let s = 0; s < DECODE_STEPS; s++) {
    const next = force ? force[s] : tokens[s];
    logits.push(forward(b, m, [next], PROMPT.length + s, dtype));
    tokens.push(argmaxRef(logits[s + 1]));
  }
  return { logits, tokens };
}

function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}

describe('W8A16 forward pass: ascend backend (stand-in) against the host backend', () => {
  it.each(['f16', 'int8'] as const)('f32 activations, %s KV cache: same logits within 2^-14 and the same greedy tokens', (kvDtype) => {
    const host = createHostBackend({ kernels: 'js' });
    const ref = generate(host, buildModel(host, kvDtype), 'f32');
    const asc = createAscendBackend({ libDir, actDType: 'f32' });
    const got = generate(asc, buildModel(asc, kvDtype), 'f32');
    expect(got.tokens).toEqual(ref.tokens);
    for (let s = 0; s < ref.logits.length; s++) {
      const scale = maxAbs(ref.logits[s]);
      expect(scale).toBeGreaterThan(0.1); // a model that says something
      for (let i = 0; i < CFG.vocab; i++) expect(Math.abs(got.logits[s][i] - ref.logits[s][i])).toBeLessThanOrEqual(F32_LOGITS_REL_TOL * scale);
    }
    host.dispose();
    asc.dispose();
  });

  it('f16 activations (the real-device dtype), f16 KV: logits within 1% of the f32 host, fed the same tokens', () => {
    const host = createHostBackend({ kernels: 'js' });
    const ref = generate(host, buildModel(host, 'f16'), 'f32');
    const asc = createAscendBackend({ libDir }); // actDType f16
    const got = generate(asc, buildModel(asc, 'f16'), 'f16', ref.tokens);
    let worst = 0;
    for (let s = 0; s < ref.logits.length; s++) {
      const scale = maxAbs(ref.logits[s]);
      for (let i = 0; i < CFG.vocab; i++) worst = Math.max(worst, Math.abs(got.logits[s][i] - ref.logits[s][i]) / scale);
    }
    expect(worst).toBeLessThanOrEqual(F16_LOGITS_REL_TOL);
    expect(worst).toBeGreaterThan(0); // f16 really ran: results are not bit-identical to f32
    host.dispose();
    asc.dispose();
  });

  it('a decode step after warm-up allocates no device memory and leaves no descriptor alive', () => {
    const asc = createAscendBackend({ libDir, actDType: 'f32' });
    const m = buildModel(asc, 'int8');
    forward(asc, m, PROMPT, 0, 'f32');
    forward(asc, m, [3], PROMPT.length, 'f32');
    const before = ctl.stats();
    forward(asc, m, [4], PROMPT.length + 1, 'f32');
    const after = ctl.stats();
    // forward() allocates and frees its 11 activation tensors each step; the backend's own scratch must not grow
    expect(after.mallocs - before.mallocs).toBe(11);
    expect(after.frees - before.frees).toBe(11);
    expect(after).toMatchObject({ liveTensors: 0, liveTensorLists: 0, liveIntArrays: 0, liveScalars: 0, liveExecutors: 0 });
    asc.dispose();
  });
});
