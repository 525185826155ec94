// Shapes of the checkpoints the generator can write: the built-in default, a LLaMA-3.2-1B-shaped model
// and one LLaMA3-70B decoder layer (benchmarks). Architecture facts only; the weights come from a seed.

import type { FloatDType } from '@w8a16/quant-core';

export interface LlamaRopeScalingSpec {
  readonly factor: number;
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  readonly originalMaxPositionEmbeddings: number;
}

export interface LlamaCheckpointSpec {
  /** Short name, e.g. 'builtin'. */
  readonly name: string;
  readonly description: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly tieWordEmbeddings: boolean;
  readonly dtype: Extract<FloatDType, 'F16' | 'BF16' | 'F32'>;
  readonly maxPositionEmbeddings: number;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  /** LLaMA-3.1+ 'llama3' rope scaling; null for LLaMA-3.0 style (unscaled). */
  readonly ropeScaling: LlamaRopeScalingSpec | null;
  readonly bosTokenId: number;
  readonly eosTokenIds: readonly number[];
  /** Write the LLaMA-3 tokenizer files beside the weights (needs vocab 128256). */
  readonly tokenizer: boolean;
}

/** The LLaMA-3 tokenizer's vocabulary: 128000 BPE tokens + 256 special tokens. */
export const LLAMA3_VOCAB_SIZE = 128256;
const BEGIN_OF_TEXT = 128000;
const END_OF_TEXT = 128001;
/** `<|eom_id|>` from LLaMA-3.1 on; `<|reserved_special_token_4|>` in the LLaMA-3.0 vocabulary. */
const EOM_ID = 128008;
const EOT_ID = 128009;

/** LLaMA-3.1/3.2's rope scaling for 128K context (Llama-3.2-1B config.json). */
const ROPE_LLAMA32: LlamaRopeScalingSpec = { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
/** LLaMA-3.1-70B / 3.3-70B config.json. */
const ROPE_LLAMA31_70B: LlamaRopeScalingSpec = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };

export type GeneratorSpecName = 'builtin' | 'llama-3.2-1b' | 'llama3-70b-layer';

export const GENERATOR_SPECS: Readonly<Record<GeneratorSpecName, LlamaCheckpointSpec>> = Object.freeze({
  builtin: {
    name: 'builtin',
    description: 'built-in default: LLaMA-3 architecture and tokenizer, 8 layers, hidden 256, random weights with planted outliers (~143 MB fp16)',
    vocabSize: LLAMA3_VOCAB_SIZE,
    hiddenSize: 256,
    intermediateSize: 768,
    nLayers: 8,
    nHeads: 8,
    nKvHeads: 2,
    headDim: 32,
    tieWordEmbeddings: false,
    dtype: 'F16',
    maxPositionEmbeddings: 131072,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: ROPE_LLAMA32,
    bosTokenId: BEGIN_OF_TEXT,
    // The shipped tokenizer is the LLaMA-3.0 one, where 128008 is a reserved token: stop on
    // <|end_of_text|> and <|eot_id|>, as Meta-Llama-3-8B-Instruct's generation_config does.
    eosTokenIds: [END_OF_TEXT, EOT_ID],
    tokenizer: true,
  },
  'llama-3.2-1b': {
    name: 'llama-3.2-1b',
    description: 'LLaMA-3.2-1B shape (hidden 2048, intermediate 8192, 16 layers, 32/8 heads, vocab 128256) with an untied lm_head, fp16 (~3.0 GB)',
    vocabSize: LLAMA3_VOCAB_SIZE,
    hiddenSize: 2048,
    intermediateSize: 8192,
    nLayers: 16,
    nHeads: 32,
    nKvHeads: 8,
    headDim: 64,
    // The real Llama-3.2-1B ties lm_head to the embedding; the benchmark wants the untied 3.0 GB layout.
    tieWordEmbeddings: false,
    dtype: 'F16',
    maxPositionEmbeddings: 131072,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: ROPE_LLAMA32,
    bosTokenId: BEGIN_OF_TEXT,
    eosTokenIds: [END_OF_TEXT, EOM_ID, EOT_ID],
    tokenizer: false,
  },
  'llama3-70b-layer': {
    name: 'llama3-70b-layer',
    description:
      'one LLaMA3-70B decoder layer (hidden 8192, intermediate 28672, 64/8 heads); vocab cut to 1024 so the file is mostly the layer (~1.75 GB fp16)',
    vocabSize: 1024,
    hiddenSize: 8192,
    intermediateSize: 28672,
    nLayers: 1,
    nHeads: 64,
    nKvHeads: 8,
    headDim: 128,
    tieWordEmbeddings: false,
    dtype: 'F16',
    maxPositionEmbeddings: 131072,
    rmsNormEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: ROPE_LLAMA31_70B,
    // LLaMA-3's special-token ids lie beyond this cut vocabulary.
    bosTokenId: 1,
    eosTokenIds: [2],
    tokenizer: false,
  },
});

/** Every tensor of a spec in Hugging Face state_dict order, with its shape. */
export function specTensors(spec: LlamaCheckpointSpec): { name: string; shape: number[] }[] {
  const { vocabSize: vocab, hiddenSize: h, intermediateSize: inter, nHeads, nKvHeads, headDim } = spec;
  const out: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [vocab, h] }];
  for (let l = 0; l < spec.nLayers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.self_attn.q_proj.weight`, shape: [nHeads * headDim, h] },
      { name: `${p}.self_attn.k_proj.weight`, shape: [nKvHeads * headDim, h] },
      { name: `${p}.self_attn.v_proj.weight`, shape: [nKvHeads * headDim, h] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [h, nHeads * headDim] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [inter, h] },
      { name: `${p}.mlp.up_proj.weight`, shape: [inter, h] },
      { name: `${p}.mlp.down_proj.weight`, shape: [h, inter] },
      { name: `${p}.input_layernorm.weight`, shape: [h] },
      { name: `${p}.post_attention_layernorm.weight`, shape: [h] },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [h] });
  // A tied model has no lm_head.weight in its safetensors (the usual HF layout).
  if (!spec.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [vocab, h] });
  return out;
}

const DTYPE_BYTES = { F16: 2, BF16: 2, F32: 4 } as const;

/** Bytes of tensor data a spec's weights take (headers not counted). */
export function specWeightBytes(spec: LlamaCheckpointSpec): number {
  return specTensors(spec).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[spec.dtype], 0);
}
