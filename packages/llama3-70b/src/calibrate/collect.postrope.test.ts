// C8 calibration with post-RoPE K statistics (`kv.postRope`), held against an independent float64 forward pass
// of the fixture models written here (HF LlamaForCausalLM, rotate_half RoPE), and against the default mode.

import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createHostBackend } from '@w8a16/ascend-runtime';
import { Checkpoint, readLlamaConfig, type LlamaConfig } from '@w8a16/format';
import { UnitRunner } from '../convert/units';
import { ropeInvFreq } from '../model/load';
import { readCalibFile, type CalibSample } from './calib-data';
import { collectCalibration, type CalibrationOptions, type CalibrationResult } from './collect';

const REPO_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const FIXTURES = resolve(REPO_ROOT, '../shared/fixtures');

/**
 * Per-channel K min/max from the float32 backend vs the float64 reference, relative to the largest |K| of the
 * layer: float32 rounding through 4-5 layers. Measured at most 2.3e-7 (tiny-llama3-fp16) and 4.8e-7
 * (stories260K); RoPE moves the ranges by 25-59 % of that scale, so a missing or wrong rotation cannot pass.
 */
const K_RANGE_REL_TOL = 5e-6;

interface Ref {
  /** Per layer, `[nKvHeads·headDim]` min / max of K before and after RoPE over every sample and token. */
  pre: { min: Float64Array; max: Float64Array }[];
  post: { min: Float64Array; max: Float64Array }[];
}

/** The float64 reference forward pass (teacher-forced samples, positions 0..T-1), recording K before and after RoPE. */
function referenceK(ckpt: Checkpoint, c: LlamaConfig, samples: readonly CalibSample[]): Ref {
  const H = c.hiddenSize;
  const hd = c.headDim;
  const half = hd / 2;
  const kvDim = c.nKvHeads * hd;
  const qDim = c.nHeads * hd;
  const group = c.nHeads / c.nKvHeads;
  const invFreq = ropeInvFreq(c);
  const w = (n: string) => ckpt.readFloat32(n);
  const range = () => ({ min: new Float64Array(kvDim).fill(Infinity), max: new Float64Array(kvDim).fill(-Infinity) });
  const ref: Ref = { pre: Array.from({ length: c.nLayers }, range), post: Array.from({ length: c.nLayers }, range) };
  const observe = (r: { min: Float64Array; max: Float64Array }, k: Float64Array) => {
    for (let i = 0; i < kvDim; i++) {
      r.min[i] = Math.min(r.min[i], k[i]);
      r.max[i] = Math.max(r.max[i], k[i]);
    }
  };
  const matvec = (W: Float32Array, x: Float64Array, n: number, k: number) => {
    const out = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += W[r * k + j] * x[j];
      out[r] = s;
    }
    return out;
  };
  const rmsNorm = (x: Float64Array, g: Float32Array) => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const inv = 1 / Math.sqrt(ss / x.length + c.rmsNormEps);
    return x.map((v, i) => v * inv * g[i]);
  };
  // rotate_half: pair (i, i + half) of each head turns by pos·invFreq[i]
  const rope = (x: Float64Array, heads: number, pos: number) => {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = pos * invFreq[i];
        const x1 = x[h * hd + i];
        const x2 = x[h * hd + i + half];
        x[h * hd + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
        x[h * hd + i + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    }
  };
  const embed = w('model.embed_tokens.weight');
  const hidden = samples.map((s) => Array.from(s.ids, (id) => Float64Array.from(embed.subarray(id * H, (id + 1) * H))));
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}`;
    const [Wq, Wk, Wv, Wo] = ['q', 'k', 'v', 'o'].map((m) => w(`${p}.self_attn.${m}_proj.weight`));
    const [Wg, Wu, Wd] = ['gate', 'up', 'down'].map((m) => w(`${p}.mlp.${m}_proj.weight`));
    const inNorm = w(`${p}.input_layernorm.weight`);
    const postNorm = w(`${p}.post_attention_layernorm.weight`);
    for (const h of hidden) {
      const T = h.length;
      const qs: Float64Array[] = [];
      const ks: Float64Array[] = [];
      const vs: Float64Array[] = [];
      for (let t = 0; t < T; t++) {
        const x = rmsNorm(h[t], inNorm);
        const q = matvec(Wq, x, qDim, H);
        const k = matvec(Wk, x, kvDim, H);
        observe(ref.pre[l], k);
        rope(q, c.nHeads, t);
        rope(k, c.nKvHeads, t);
        observe(ref.post[l], k);
        qs.push(q);
        ks.push(k);
        vs.push(matvec(Wv, x, kvDim, H));
      }
      for (let t = 0; t < T; t++) {
        // causal attention, query head qh reading kv head qh / group
        const att = new Float64Array(qDim);
        for (let qh = 0; qh < c.nHeads; qh++) {
          const kh = Math.floor(qh / group);
          const scores = Array.from({ length: t + 1 }, (_, s) => {
            let d = 0;
            for (let i = 0; i < hd; i++) d += qs[t][qh * hd + i] * ks[s][kh * hd + i];
            return d / Math.sqrt(hd);
          });
          const m = Math.max(...scores);
          const e = scores.map((x) => Math.exp(x - m));
          const z = e.reduce((a, b) => a + b, 0);
          for (let s = 0; s <= t; s++) for (let i = 0; i < hd; i++) att[qh * hd + i] += (e[s] / z) * vs[s][kh * hd + i];
        }
        const o = matvec(Wo, att, H, qDim);
        for (let i = 0; i < H; i++) h[t][i] += o[i];
        const x = rmsNorm(h[t], postNorm);
        const g = matvec(Wg, x, c.intermediateSize, H);
        const u = matvec(Wu, x, c.intermediateSize, H);
        const a = g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]);
        const d = matvec(Wd, a, H, c.intermediateSize);
        for (let i = 0; i < H; i++) h[t][i] += d[i];
      }
    }
  }
  return ref;
}

/** max over channels of |ours − ref| / (largest |K| of the layer), for min and max together. */
function rangeError(ours: { min: Float32Array; max: Float32Array }, ref: { min: Float64Array; max: Float64Array }): number {
  let scale = 0;
  for (let i = 0; i < ref.min.length; i++) scale = Math.max(scale, -ref.min[i], ref.max[i]);
  let worst = 0;
  for (let i = 0; i < ref.min.length; i++) worst = Math.max(worst, Math.abs(ours.min[i] - ref.min[i]), Math.abs(ours.max[i] - ref.max[i]));
  return worst / scale;
}

const backend = createHostBackend({ threads: 1 });
const runner = new UnitRunner();
const opened: Checkpoint[] = [];
afterAll(() => {
  for (const c of opened) c.close();
  runner.close();
  backend.dispose();
});

function options(extra: Partial<CalibrationOptions>): CalibrationOptions {
  return { backend, runUnit: async (u) => runner.run(u), ...extra };
}

describe.each(['tiny-llama3-fp16', 'stories260K'])('post-RoPE K statistics on %s', async (name) => {
  const dir = join(FIXTURES, name);
  const { config } = readLlamaConfig(dir);
  const ckpt = Checkpoint.open(dir);
  opened.push(ckpt);
  const samples = readCalibFile(join(dir, 'calib.jsonl'), config.vocabSize);
  const ref = referenceK(ckpt, config, samples);
  const pre: CalibrationResult = await collectCalibration(ckpt, config, samples, options({ kv: { sym: true } }));
  const post: CalibrationResult = await collectCalibration(ckpt, config, samples, options({ kv: { sym: true, postRope: true } }));

  it(`the reference forward agrees with the default (pre-RoPE) statistics within ${K_RANGE_REL_TOL}, every layer`, () => {
    for (let l = 0; l < config.nLayers; l++) expect(rangeError(pre.layers[l].k!, ref.pre[l]), `layer ${l}`).toBeLessThan(K_RANGE_REL_TOL);
  });

  it(`post-RoPE K min/max equal those of the reference's rotated K within ${K_RANGE_REL_TOL}, every layer (the last included)`, () => {
    for (let l = 0; l < config.nLayers; l++) {
      const k = post.layers[l].k!;
      expect(rangeError(k, ref.post[l]), `layer ${l}`).toBeLessThan(K_RANGE_REL_TOL);
      // scale = max(|min|, max) / 127 from those statistics (spec §3.2)
      k.scale.forEach((s, i) => expect(s).toBe(Math.fround(Math.max(-Math.min(k.min[i], 0), Math.max(k.max[i], 0)) / 127)));
    }
  });

  it('the rotation moves the ranges by far more than the tolerance (the two modes are told apart)', () => {
    for (let l = 0; l < config.nLayers; l++) {
      expect(rangeError(post.layers[l].k!, ref.pre[l]), `layer ${l}`).toBeGreaterThan(100 * K_RANGE_REL_TOL);
      expect(Array.from(post.layers[l].k!.scale)).not.toEqual(Array.from(pre.layers[l].k!.scale));
    }
  });

  it('V statistics and scales are bit-identical in both modes', () => {
    for (let l = 0; l < config.nLayers; l++) {
      for (const f of ['min', 'max', 'scale', 'offset'] as const) expect(Array.from(post.layers[l].v![f]), `layer ${l} ${f}`).toEqual(Array.from(pre.layers[l].v![f]));
    }
    expect(post.tokens).toBe(pre.tokens);
  });

  it('postRope: false is the default, bit for bit', async () => {
    const explicit = await collectCalibration(ckpt, config, samples, options({ kv: { sym: true, postRope: false } }));
    for (let l = 0; l < config.nLayers; l++) {
      for (const p of ['k', 'v'] as const) {
        for (const f of ['min', 'max', 'scale'] as const) expect(Array.from(explicit.layers[l][p]![f])).toEqual(Array.from(pre.layers[l][p]![f]));
      }
    }
  });

  it('one-token samples (position 0, where RoPE is the identity) give pre- and post-RoPE statistics equal in every layer', async () => {
    const firsts = samples.map((s) => ({ ...s, ids: s.ids.subarray(0, 1) }));
    const a = await collectCalibration(ckpt, config, firsts, options({ kv: { sym: true } }));
    const b = await collectCalibration(ckpt, config, firsts, options({ kv: { sym: true, postRope: true } }));
    for (let l = 0; l < config.nLayers; l++) expect(Array.from(b.layers[l].k!.max)).toEqual(Array.from(a.layers[l].k!.max));
  });

  it('m3 choices do not depend on where K is observed, and post-RoPE K is the same with m3 running', async () => {
    const m3 = { scheme: 'asym', compute: 'f32' } as const;
    const withM3 = await collectCalibration(ckpt, config, samples, options({ m3, kv: { sym: true, postRope: true } }));
    const m3Pre = await collectCalibration(ckpt, config, samples, options({ m3, kv: { sym: true } }));
    for (let l = 0; l < config.nLayers; l++) {
      expect(Array.from(withM3.layers[l].k!.min)).toEqual(Array.from(post.layers[l].k!.min));
      for (const g of ['qkv', 'gateup'] as const) expect(withM3.layers[l][g]!.ratio).toBe(m3Pre.layers[l][g]!.ratio);
    }
  });
});
