// m3 on the tiny-llama3-fp16 fixture, layer 0 q/k/v (the one group whose input needs no attention:
// X = RMSNorm(embedding)), against msModelSlim's own output and the fixture's independent grid losses.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { M3_LOSS_REF_REL_TOL, foldM3Scales, m3ScalesForRatio, meanAbsPerChannel, searchM3Scales, searchM3ScalesRef } from './index';
import { TINY, TINY_M3, calibIds, embedRmsNorm, readSafetensors, tensor } from './test-support';

/**
 * Our float64 losses against the fixture's (computed independently, float32 matmuls): measured max 4.6e-6
 * relative; 1e-4 leaves room for float32 summation noise while staying 15x below the smallest gap
 * between the best and second-best loss in the fixtures (0.15%).
 */
const FIXTURE_LOSS_REL_TOL = 1e-4;

interface Choice {
  layer: number;
  subgraph: string;
  ratio: number;
  grid_index: number;
  grid_losses: number[];
}

function setup() {
  const src = readSafetensors(path.join(TINY, 'model.safetensors'));
  const ref = readSafetensors(path.join(TINY_M3, 'quant_model_weight_w8a16.safetensors'));
  const config = JSON.parse(fs.readFileSync(path.join(TINY, 'config.json'), 'utf8')) as { hidden_size: number; rms_norm_eps: number };
  const recipe = JSON.parse(fs.readFileSync(path.join(TINY_M3, 'recipe.json'), 'utf8')) as { w_sym: boolean };
  const choices = (JSON.parse(fs.readFileSync(path.join(TINY_M3, 'm3-choices.json'), 'utf8')) as { choices: Choice[] }).choices;
  const choice = choices.find((c) => c.layer === 0 && c.subgraph === 'qkv')!;
  const C = config.hidden_size;
  const ids = calibIds(path.join(TINY, 'calib.jsonl'), 0); // only the first sample drives m3
  const gamma = tensor(src, 'model.layers.0.input_layernorm.weight');
  const x = embedRmsNorm(tensor(src, 'model.embed_tokens.weight'), gamma, ids, C, config.rms_norm_eps);
  const names = ['q_proj', 'k_proj', 'v_proj'];
  const linears = names.map((n) => {
    const weight = tensor(src, `model.layers.0.self_attn.${n}.weight`).slice();
    return { name: `model.layers.0.self_attn.${n}`, weight, n: weight.length / C };
  });
  const scheme = recipe.w_sym ? ('sym' as const) : ('asym' as const);
  return { ref, C, ids, gamma, x, linears, choice, scheme, names };
}

describe('m3 on tiny-llama3-fp16 layer 0 qkv', () => {
  const s = setup();
  const input = { x: s.x, tokens: s.ids.length, channels: s.C, linears: s.linears };
  const result = searchM3Scales(input, { scheme: s.scheme });

  it('chooses the ratio msModelSlim chose (m3-choices.json)', () => {
    expect(s.choice.ratio).toBe(0.2);
    expect(result.ratio).toBe(s.choice.ratio);
    expect(result.gridIndex).toBe(s.choice.grid_index);
  });

  it(`has every grid loss within ${FIXTURE_LOSS_REL_TOL} relative of the fixture's grid_losses`, () => {
    expect(result.losses.length).toBe(s.choice.grid_losses.length);
    s.choice.grid_losses.forEach((want, g) => {
      expect(Math.abs(result.losses[g] / want - 1), `grid ${g}`).toBeLessThan(FIXTURE_LOSS_REL_TOL);
    });
  });

  it('agrees with the literal oracle (same choice, losses within M3_LOSS_REF_REL_TOL)', () => {
    const ref = searchM3ScalesRef(input, { scheme: s.scheme });
    expect(ref.gridIndex).toBe(result.gridIndex);
    expect(Array.from(ref.scales)).toEqual(Array.from(result.scales));
    ref.losses.forEach((want, g) => expect(Math.abs(result.losses[g] / want - 1), `grid ${g}`).toBeLessThan(M3_LOSS_REF_REL_TOL));
  });

  it('returns the scales of m3ScalesForRatio(a, ratio)', () => {
    const a = meanAbsPerChannel(s.x, s.ids.length, s.C);
    expect(Array.from(result.scales)).toEqual(Array.from(m3ScalesForRatio(a, result.ratio)));
  });

  // Bit-exactness needs PyTorch's float32 rounding everywhere: the AVX2 summation order in the test's
  // RMSNorm and SLEEF's pow in m3ScalesInto (a correctly rounded pow misses 2 of the 128 channels here).
  it('folds into γ and q/k/v bit-exactly as msModelSlim saved them (F32, layer 0 disabled → FLOAT)', () => {
    const gamma = s.gamma.slice();
    foldM3Scales(gamma, s.linears.map((l) => l.weight), s.C, result.scales);
    expect(Array.from(gamma)).toEqual(Array.from(tensor(s.ref, 'model.layers.0.input_layernorm.weight')));
    s.linears.forEach((l, i) => {
      const want = tensor(s.ref, `model.layers.0.self_attn.${s.names[i]}.weight`);
      let mismatches = 0;
      for (let k = 0; k < want.length; k++) if (want[k] !== l.weight[k]) mismatches++;
      expect(mismatches, l.name).toBe(0);
    });
  });
});
