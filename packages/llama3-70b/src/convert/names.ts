// LLaMA tensor names in the order msModelSlim emits them (torch `named_modules()` of LlamaForCausalLM),
// and the expected shape of each, derived from the normalized config.

import type { LlamaConfig } from '@w8a16/format';

export const ATTN_LINEARS = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const MLP_LINEARS = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** One module of the model, in emission order: a linear (quantizable), or a module with float params. */
export type ModuleEntry =
  | { kind: 'linear'; module: string; n: number; k: number; hasBias: boolean }
  | { kind: 'float'; module: string; params: { name: string; shape: number[] }[] };

/** The modules of a LLaMA checkpoint in `named_modules()` order, with expected shapes. */
export function llamaModules(c: LlamaConfig): ModuleEntry[] {
  const { hiddenSize: h, intermediateSize: inter, nHeads, nKvHeads, headDim, vocabSize } = c;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const out: ModuleEntry[] = [{ kind: 'float', module: 'model.embed_tokens', params: [{ name: 'weight', shape: [vocabSize, h] }] }];
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}`;
    const attnShapes: Record<(typeof ATTN_LINEARS)[number], [number, number]> = {
      q_proj: [qDim, h],
      k_proj: [kvDim, h],
      v_proj: [kvDim, h],
      o_proj: [h, qDim],
    };
    for (const name of ATTN_LINEARS) {
      const [n, k] = attnShapes[name];
      // transformers' LlamaAttention: q/k/v/o all take `bias=config.attention_bias`.
      out.push({ kind: 'linear', module: `${p}.self_attn.${name}`, n, k, hasBias: c.attentionBias });
    }
    const mlpShapes: Record<(typeof MLP_LINEARS)[number], [number, number]> = {
      gate_proj: [inter, h],
      up_proj: [inter, h],
      down_proj: [h, inter],
    };
    for (const name of MLP_LINEARS) {
      const [n, k] = mlpShapes[name];
      out.push({ kind: 'linear', module: `${p}.mlp.${name}`, n, k, hasBias: c.mlpBias });
    }
    out.push({ kind: 'float', module: `${p}.input_layernorm`, params: [{ name: 'weight', shape: [h] }] });
    out.push({ kind: 'float', module: `${p}.post_attention_layernorm`, params: [{ name: 'weight', shape: [h] }] });
  }
  out.push({ kind: 'float', module: 'model.norm', params: [{ name: 'weight', shape: [h] }] });
  out.push({ kind: 'linear', module: 'lm_head', n: vocabSize, k: h, hasBias: false });
  return out;
}

/** Where a module sits in msModelSlim's m3 groups for LLaMA (spec §2.2): `input_layernorm → q, k, v` and
 * `post_attention_layernorm → gate, up`. Undefined for every other module (o, down, lm_head, model.norm, ...). */
export function m3RoleOf(module: string): { layer: number; subgraph: 'qkv' | 'gateup'; role: 'linear' | 'norm' } | undefined {
  const m = /^model\.layers\.(\d+)\.(self_attn\.[qkv]_proj|mlp\.gate_proj|mlp\.up_proj|input_layernorm|post_attention_layernorm)$/.exec(module);
  if (!m) return undefined;
  const layer = Number(m[1]);
  const part = m[2];
  if (part === 'input_layernorm') return { layer, subgraph: 'qkv', role: 'norm' };
  if (part === 'post_attention_layernorm') return { layer, subgraph: 'gateup', role: 'norm' };
  return { layer, subgraph: part.startsWith('self_attn') ? 'qkv' : 'gateup', role: 'linear' };
}

/** Buffers some older checkpoints carry that transformers ignores on load (msModelSlim never sees them). */
export const IGNORED_TENSOR_PATTERN = /\.rotary_emb\.inv_freq$/;

/** `--disable_preset llama3-70b`: ATB-Models' llama3_70b_w8a16 recipe (all seven linears of layers 0-4, and lm_head). */
export const DISABLE_PRESETS: Readonly<Record<string, readonly string[]>> = {
  'llama3-70b': [
    ...Array.from({ length: 5 }, (_, l) =>
      ['mlp.down_proj', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj'].map(
        (m) => `model.layers.${l}.${m}`,
      ),
    ).flat(),
    'lm_head',
  ],
};
