// Loading checkpoints written here on purpose (seeded): every error code of the loader, and the features the
// fixtures lack (linear biases, BF16/F16 float tensors, F16 scales, tied lm_head) checked against a dense
// reference forward built from ascend-runtime's *Ref kernels.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  attentionContiguousRef,
  computeInvFreq,
  createHostBackend,
  embeddingRef,
  floatLinearRef,
  rmsNormRef,
  ropeRef,
  siluMulRef,
  w8a16LinearRef,
  type Backend,
} from '@w8a16/ascend-runtime';
import { encodeFloats, quantizePerChannel, type FloatDType } from '@w8a16/quant-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_CONFIG, scratchDir, writeRawSafetensors, type RawTensor } from '../../test/helpers';
import { LlamaModel } from './llama';
import { loadLlamaWeights } from './load';

/** |Δlogit| vs the dense reference (f64 sums): the model sums in f32 and differs by ~1e-7 (measured); 1e-5 is far below any real bug. */
const REF_LOGIT_ABS_TOL = 1e-5;

type Cfg = typeof TINY_CONFIG;

/** Seeded f32 weights of the tiny model, plus biases when asked. */
function tinyWeights(cfg: Cfg, opts: { attnBias?: boolean; mlpBias?: boolean } = {}): Map<string, { shape: number[]; data: Float32Array }> {
  let seed = 2024;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed / 2 ** 32 - 0.5) * 0.4;
  };
  const h = cfg.hidden_size;
  const qd = cfg.num_attention_heads * cfg.head_dim;
  const kvd = cfg.num_key_value_heads * cfg.head_dim;
  const inter = cfg.intermediate_size;
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], norm = false) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = norm ? 1 + rnd() : rnd();
    m.set(name, { shape, data });
  };
  add('model.embed_tokens.weight', [cfg.vocab_size, h]);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    for (const [n, rows, cols] of [['q', qd, h], ['k', kvd, h], ['v', kvd, h], ['o', h, qd]] as const) {
      add(`${p}.self_attn.${n}_proj.weight`, [rows, cols]);
      if (opts.attnBias) add(`${p}.self_attn.${n}_proj.bias`, [rows]);
    }
    for (const [n, rows, cols] of [['gate', inter, h], ['up', inter, h], ['down', h, inter]] as const) {
      add(`${p}.mlp.${n}_proj.weight`, [rows, cols]);
      if (opts.mlpBias) add(`${p}.mlp.${n}_proj.bias`, [rows]);
    }
    add(`${p}.input_layernorm.weight`, [h], true);
    add(`${p}.post_attention_layernorm.weight`, [h], true);
  }
  add('model.norm.weight', [h], true);
  add('lm_head.weight', [cfg.vocab_size, h]);
  return m;
}

function encode(name: string, shape: number[], data: Float32Array, dtype: FloatDType): RawTensor {
  const bytes = new Uint8Array(data.length * (dtype === 'F32' ? 4 : 2));
  encodeFloats(bytes, data, dtype);
  return { name, dtype, shape, data: bytes };
}

/** Decoded value of `data` after a round trip through `dtype` (what the file really holds). */
function through(data: Float32Array, dtype: FloatDType): Float32Array {
  const bytes = new Uint8Array(data.length * (dtype === 'F32' ? 4 : 2));
  encodeFloats(bytes, data, dtype);
  const out = new Float32Array(data.length);
  if (dtype === 'F32') out.set(new Float32Array(bytes.buffer));
  else {
    const u16 = new Uint16Array(bytes.buffer);
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    for (let i = 0; i < out.length; i++) {
      if (dtype === 'BF16') {
        u32[0] = u16[i] << 16;
        out[i] = f32[0];
      } else {
        const hb = u16[i];
        const e = (hb >> 10) & 31;
        const mant = hb & 1023;
        const v = e === 0 ? mant * 2 ** -24 : (1 + mant / 1024) * 2 ** (e - 15);
        out[i] = hb & 0x8000 ? -v : v;
      }
    }
  }
  return out;
}

type Linear = { kind: 'float'; w: Float32Array; bias?: Float32Array } | { kind: 'q'; q: Int8Array; scale: Float32Array; offset: Float32Array; bias?: Float32Array };

/** Dense causal forward of one sequence in f64-accumulating Ref kernels: logits `[T, vocab]`. */
function referenceForward(cfg: Cfg, get: (name: string) => Float32Array | undefined, lin: (prefix: string) => Linear, ids: number[], tiedHead: boolean): Float32Array {
  const T = ids.length;
  const h = cfg.hidden_size;
  const hd = cfg.head_dim;
  const qd = cfg.num_attention_heads * hd;
  const kvd = cfg.num_key_value_heads * hd;
  const inter = cfg.intermediate_size;
  const apply = (out: Float32Array, x: Float32Array, L: Linear, n: number, k: number) => {
    if (L.kind === 'float') floatLinearRef(out, x, T, { dtype: 'f32', data: L.w }, n, k, L.bias);
    else w8a16LinearRef(out, x, T, L.q, L.scale, L.offset, n, k, L.bias);
  };
  const x = new Float32Array(T * h);
  embeddingRef(x, { dtype: 'f32', data: get('model.embed_tokens.weight')! }, h, Int32Array.from(ids));
  const xb = new Float32Array(T * h);
  const q = new Float32Array(T * qd);
  const k = new Float32Array(T * kvd);
  const v = new Float32Array(T * kvd);
  const att = new Float32Array(T * qd);
  const o = new Float32Array(T * h);
  const g = new Float32Array(T * inter);
  const u = new Float32Array(T * inter);
  const pos = Int32Array.from(ids.map((_, i) => i));
  const inv = computeInvFreq({ headDim: hd, theta: cfg.rope_theta });
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    rmsNormRef(xb, x, T, h, get(`${p}.input_layernorm.weight`)!, cfg.rms_norm_eps);
    apply(q, xb, lin(`${p}.self_attn.q_proj`), qd, h);
    apply(k, xb, lin(`${p}.self_attn.k_proj`), kvd, h);
    apply(v, xb, lin(`${p}.self_attn.v_proj`), kvd, h);
    ropeRef(q, k, T, qd, kvd, hd, pos, inv);
    attentionContiguousRef(att, q, k, v, pos, cfg.num_attention_heads, cfg.num_key_value_heads, hd, 1 / Math.sqrt(hd));
    apply(o, att, lin(`${p}.self_attn.o_proj`), h, qd);
    for (let i = 0; i < x.length; i++) x[i] += o[i];
    rmsNormRef(xb, x, T, h, get(`${p}.post_attention_layernorm.weight`)!, cfg.rms_norm_eps);
    apply(g, xb, lin(`${p}.mlp.gate_proj`), inter, h);
    apply(u, xb, lin(`${p}.mlp.up_proj`), inter, h);
    siluMulRef(g, g, u);
    apply(o, g, lin(`${p}.mlp.down_proj`), h, inter);
    for (let i = 0; i < x.length; i++) x[i] += o[i];
  }
  rmsNormRef(x, x, T, h, get('model.norm.weight')!, cfg.rms_norm_eps);
  const logits = new Float32Array(T * cfg.vocab_size);
  floatLinearRef(logits, x, T, { dtype: 'f32', data: get(tiedHead ? 'model.embed_tokens.weight' : 'lm_head.weight')! }, cfg.vocab_size, h);
  return logits;
}

const PROMPT = [1, 5, 9, 3, 14, 2, 7];

describe('loadLlamaWeights', () => {
  let backend: Backend;
  beforeAll(() => {
    backend = createHostBackend({ kernels: 'auto' });
  });
  afterAll(() => backend.dispose());

  /** Writes a checkpoint dir: config, model.safetensors, optional description. */
  const write = (cfg: object, tensors: RawTensor[], description?: Record<string, string | number>): string => {
    const dir = scratchDir('w8a16-load-');
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    writeRawSafetensors(join(dir, description ? 'quant_model_weight_w8a16.safetensors' : 'model.safetensors'), tensors);
    if (description) writeFileSync(join(dir, 'quant_model_description.json'), JSON.stringify(description, null, 2));
    return dir;
  };
  const logitsOf = (dir: string, options: Parameters<typeof loadLlamaWeights>[2] = {}): Float32Array => {
    const w = loadLlamaWeights(dir, backend, options);
    const m = new LlamaModel(w, backend, { maxTokensPerStep: 16, maxSeqsPerStep: 2, maxContext: 16, blockSize: 4 });
    try {
      return backend.download(m.forward([0], PROMPT, [0, PROMPT.length], true));
    } finally {
      m.dispose();
      w.free();
    }
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
  const codeOf = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (e) {
      return (e as { code?: string }).code;
    }
    return undefined;
  };

  it('float checkpoint with q/k/v/o and MLP biases, tensors in F32, F16 and BF16, matches the dense reference', () => {
    const cfg = { ...TINY_CONFIG, num_hidden_layers: 2, attention_bias: true, mlp_bias: true };
    const ws = tinyWeights(cfg, { attnBias: true, mlpBias: true });
    const dtypes: FloatDType[] = ['F32', 'F16', 'BF16'];
    const stored = new Map<string, Float32Array>();
    const tensors = [...ws].map(([name, { shape, data }], i) => {
      const dt = dtypes[i % 3];
      stored.set(name, through(data, dt));
      return encode(name, shape, data, dt);
    });
    const get = (n: string) => stored.get(n);
    const lin = (p: string): Linear => ({ kind: 'float', w: get(`${p}.weight`)!, bias: get(`${p}.bias`) });
    const want = referenceForward(cfg, get, lin, PROMPT, false);
    const got = logitsOf(write(cfg, tensors));
    expect(maxDiff(got, want)).toBeLessThan(REF_LOGIT_ABS_TOL);
    // the biases really take part: dropping them moves the logits far beyond the tolerance
    const noBias = referenceForward(cfg, get, (p) => ({ kind: 'float', w: get(`${p}.weight`)! }), PROMPT, false);
    expect(maxDiff(noBias, want)).toBeGreaterThan(100 * REF_LOGIT_ABS_TOL);
  });

  it('tied embeddings: no lm_head.weight and tie_word_embeddings uses the embedding as lm_head', () => {
    const cfg = { ...TINY_CONFIG, tie_word_embeddings: true };
    const ws = tinyWeights(cfg);
    ws.delete('lm_head.weight');
    const tensors = [...ws].map(([name, { shape, data }]) => encode(name, shape, data, 'F32'));
    const get = (n: string) => ws.get(n)?.data;
    const want = referenceForward(cfg, get, (p) => ({ kind: 'float', w: get(`${p}.weight`)! }), PROMPT, true);
    const dir = write(cfg, tensors);
    expect(maxDiff(logitsOf(dir), want)).toBeLessThan(REF_LOGIT_ABS_TOL);
    const w = loadLlamaWeights(dir, backend);
    expect(w.summary.tiedLmHead).toBe(true);
    w.free();
    // untied config without lm_head.weight
    expect(codeOf(() => loadLlamaWeights(write(TINY_CONFIG, tensors), backend))).toBe('E_TENSOR_MISSING');
  });

  /** A W8A16 dir in msModelSlim's layout: every linear but lm_head int8, scales [n,1] in `scaleDType`, zero NormBias. */
  const w8a16Dir = (scaleDType: FloatDType, edit: (desc: Record<string, string | number>, tensors: RawTensor[]) => void = () => {}) => {
    const cfg = TINY_CONFIG;
    const ws = tinyWeights(cfg);
    const desc: Record<string, string | number> = { version: '1.0.0', model_quant_type: 'W8A16' };
    const tensors: RawTensor[] = [];
    const params = new Map<string, Linear>();
    for (const [name, { shape, data }] of ws) {
      const isLinear = name.endsWith('_proj.weight');
      if (!isLinear) {
        desc[name] = 'FLOAT';
        tensors.push(encode(name, shape, data, 'F32'));
        if (name.endsWith('layernorm.weight') || name === 'model.norm.weight') {
          const bias = name.replace(/weight$/, 'bias');
          desc[bias] = 'FLOAT';
          tensors.push(encode(bias, shape, new Float32Array(shape[0]), 'F32'));
        }
        continue;
      }
      const [n, k] = shape;
      const qr = quantizePerChannel(data, n, k, { scheme: 'asym', compute: 'f32' });
      const prefix = name.replace(/\.weight$/, '');
      desc[name] = 'W8A16';
      desc[`${prefix}.weight_scale`] = 'W8A16';
      desc[`${prefix}.weight_offset`] = 'W8A16';
      tensors.push({ name, dtype: 'I8', shape, data: new Uint8Array(qr.q.buffer) });
      tensors.push(encode(`${prefix}.weight_scale`, [n, 1], qr.scale, scaleDType));
      tensors.push(encode(`${prefix}.weight_offset`, [n, 1], qr.offset, scaleDType));
      params.set(prefix, { kind: 'q', q: qr.q, scale: through(qr.scale, scaleDType), offset: through(qr.offset, scaleDType) });
    }
    edit(desc, tensors);
    const get = (n: string) => ws.get(n)?.data;
    return { dir: write(cfg, tensors, desc), want: () => referenceForward(cfg, get, (p) => params.get(p)!, PROMPT, false) };
  };

  it.each(['F32', 'F16', 'BF16'] as const)('W8A16 dir with %s weight_scale/weight_offset matches the dequantizing reference', (dt) => {
    const { dir, want } = w8a16Dir(dt);
    expect(maxDiff(logitsOf(dir), want())).toBeLessThan(REF_LOGIT_ABS_TOL);
    const w = loadLlamaWeights(dir, backend);
    expect(w.summary).toMatchObject({ format: 'w8a16', linearsW8A16: 7, linearsFloat: 1, zeroNormBiases: 3, kvCacheDType: 'f32' });
    w.free();
  });

  it('E_TENSOR_MISSING: a tensor config.json implies is absent', () => {
    const tensors = [...tinyWeights(TINY_CONFIG)].filter(([n]) => n !== 'model.layers.0.mlp.down_proj.weight').map(([n, t]) => encode(n, t.shape, t.data, 'F32'));
    expect(() => loadLlamaWeights(write(TINY_CONFIG, tensors), backend)).toThrow(expect.objectContaining({ code: 'E_TENSOR_MISSING', message: expect.stringContaining('model.layers.0.mlp.down_proj.weight') }));
  });

  it('E_TENSOR_MISSING: attention_bias true but no q_proj.bias', () => {
    const tensors = [...tinyWeights(TINY_CONFIG)].map(([n, t]) => encode(n, t.shape, t.data, 'F32'));
    expect(() => loadLlamaWeights(write({ ...TINY_CONFIG, attention_bias: true }, tensors), backend)).toThrow(
      expect.objectContaining({ code: 'E_TENSOR_MISSING', message: expect.stringContaining('q_proj.bias') }),
    );
  });

  it('E_SHAPE_MISMATCH: a shape that contradicts config.json', () => {
    const tensors = [...tinyWeights(TINY_CONFIG)].map(([n, t]) => encode(n, t.shape, t.data, 'F32'));
    // same tensors, config claiming a wider MLP
    expect(() => loadLlamaWeights(write({ ...TINY_CONFIG, intermediate_size: 16 }, tensors), backend)).toThrow(
      expect.objectContaining({ code: 'E_SHAPE_MISMATCH', message: expect.stringMatching(/gate_proj\.weight" has shape \[12, 8\], config\.json .* implies \[16, 8\]/) }),
    );
  });

  it('E_DESCRIPTION_TENSOR_ABSENT: the description names a tensor the checkpoint lacks', () => {
    const { dir } = w8a16Dir('F32', (d) => {
      d['model.layers.0.self_attn.k_proj.kv_cache_scale'] = 'C8';
    });
    expect(() => loadLlamaWeights(dir, backend)).toThrow(expect.objectContaining({ code: 'E_DESCRIPTION_TENSOR_ABSENT', message: expect.stringContaining('k_proj.kv_cache_scale') }));
  });

  it('E_DESCRIPTION_VALUE: an unknown tensor value or model_quant_type', () => {
    const bad = w8a16Dir('F32', (d) => {
      d['model.embed_tokens.weight'] = 'W4A16';
    });
    expect(() => loadLlamaWeights(bad.dir, backend)).toThrow(expect.objectContaining({ code: 'E_DESCRIPTION_VALUE', message: expect.stringContaining('"W4A16"') }));
    const w8a8 = w8a16Dir('F32', (d) => {
      d.model_quant_type = 'W8A8';
    });
    expect(codeOf(() => loadLlamaWeights(w8a8.dir, backend))).toBe('E_DESCRIPTION_VALUE');
  });

  it('E_DESCRIPTION_MISMATCH: an I8 tensor described FLOAT, or an I8 tensor with no description at all', () => {
    const { dir } = w8a16Dir('F32', (d) => {
      d['model.layers.0.mlp.up_proj.weight'] = 'FLOAT';
    });
    expect(codeOf(() => loadLlamaWeights(dir, backend))).toBe('E_DESCRIPTION_MISMATCH');
    const plain = w8a16Dir('F32');
    const tensors: RawTensor[] = [];
    w8a16Dir('F32', (_d, t) => tensors.push(...t));
    expect(codeOf(() => loadLlamaWeights(write(TINY_CONFIG, tensors), backend))).toBe('E_DESCRIPTION_MISMATCH');
    expect(codeOf(() => loadLlamaWeights(plain.dir, backend))).toBeUndefined();
  });

  it('E_NORM_BIAS_NONZERO: a <norm>.bias that is not zero (zero ones are verified and skipped)', () => {
    const { dir } = w8a16Dir('F32', (_d, tensors) => {
      const t = tensors.find((x) => x.name === 'model.norm.bias')!;
      const f = new Float32Array(8);
      f[3] = 0.5;
      t.data = new Uint8Array(f.buffer);
    });
    expect(() => loadLlamaWeights(dir, backend)).toThrow(expect.objectContaining({ code: 'E_NORM_BIAS_NONZERO', message: expect.stringContaining('model.norm.bias"[3] = 0.5') }));
  });

  it('E_DTYPE: a float role stored as an integer type', () => {
    const tensors = [...tinyWeights(TINY_CONFIG)].map(([n, t]) =>
      n === 'model.norm.weight' ? { name: n, dtype: 'I32', shape: t.shape, data: new Uint8Array(t.data.buffer) } : encode(n, t.shape, t.data, 'F32'),
    );
    expect(codeOf(() => loadLlamaWeights(write(TINY_CONFIG, tensors), backend))).toBe('E_DTYPE');
  });
});
