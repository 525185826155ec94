import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { copyAuxiliaryFiles, normalizeLlamaConfig, readLlamaConfig, type LlamaConfig } from './config';
import { FormatError } from './errors';
import { STORIES, TINY, makeTempDir, removeTempDirs } from './test-support';

afterAll(removeTempDirs);

function errorOf(f: () => unknown): FormatError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return e as FormatError;
  }
  throw new Error('expected a FormatError');
}

const TINY_CONFIG: LlamaConfig = {
  hiddenSize: 128,
  intermediateSize: 320,
  nLayers: 4,
  nHeads: 8,
  nKvHeads: 2,
  headDim: 16,
  vocabSize: 256,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: { ropeType: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  maxPositionEmbeddings: 131072,
  tieWordEmbeddings: false,
  attentionBias: false,
  mlpBias: false,
  torchDtype: 'float16',
  bosTokenId: 1,
  eosTokenIds: [2],
  modelType: 'llama',
};

/** The tiny config as transformers 5 writes it: dtype and rope_parameters (rope_theta inside). */
const TRANSFORMERS5_TINY = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  dtype: 'float16',
  vocab_size: 256,
  hidden_size: 128,
  intermediate_size: 320,
  num_hidden_layers: 4,
  num_attention_heads: 8,
  num_key_value_heads: 2,
  head_dim: 16,
  hidden_act: 'silu',
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_parameters: { rope_type: 'llama3', rope_theta: 500000.0, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
  attention_bias: false,
  mlp_bias: false,
  tie_word_embeddings: false,
  bos_token_id: 1,
  eos_token_id: 2,
  transformers_version: '5.18.0',
};

describe('normalizeLlamaConfig', () => {
  it('reads the tiny-llama3-fp16 fixture (transformers 4.x keys, llama3 rope scaling)', () => {
    const r = readLlamaConfig(TINY);
    expect(r.path).toBe(path.join(TINY, 'config.json'));
    expect(r.raw.rope_theta).toBe(500000);
    expect(r.config).toEqual(TINY_CONFIG);
  });

  it('reads the stories260K fixture (tied, fp32, no rope scaling)', () => {
    expect(readLlamaConfig(STORIES).config).toEqual({
      hiddenSize: 64,
      intermediateSize: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      headDim: 8,
      vocabSize: 512,
      rmsNormEps: 1e-5,
      ropeTheta: 10000,
      ropeScaling: null,
      maxPositionEmbeddings: 512,
      tieWordEmbeddings: true,
      attentionBias: false,
      mlpBias: false,
      torchDtype: 'float32',
      bosTokenId: 1,
      eosTokenIds: [2],
      modelType: 'llama',
    } satisfies LlamaConfig);
  });

  it('normalises a transformers 5 config (dtype + rope_parameters) to the same LlamaConfig', () => {
    expect(normalizeLlamaConfig(TRANSFORMERS5_TINY, 'v5.json')).toEqual(TINY_CONFIG);
    const plain = { ...TRANSFORMERS5_TINY, rope_parameters: { rope_type: 'default', rope_theta: 10000.0 }, eos_token_id: [2, 7] };
    expect(normalizeLlamaConfig(plain, 'v5.json')).toMatchObject({ ropeScaling: null, ropeTheta: 10000, eosTokenIds: [2, 7] });
    const linear = { ...TRANSFORMERS5_TINY, rope_parameters: { rope_type: 'linear', rope_theta: 10000.0, factor: 2.0 } };
    expect(normalizeLlamaConfig(linear, 'v5.json').ropeScaling).toEqual({ ropeType: 'linear', factor: 2 });
  });

  it('applies defaults: head_dim = hidden/heads, kv heads = heads, legacy rope_scaling.type', () => {
    const { head_dim: _h, num_key_value_heads: _k, ...rest } = TRANSFORMERS5_TINY;
    const cfg = normalizeLlamaConfig({ ...rest, rope_parameters: undefined, rope_theta: 5e5, rope_scaling: { type: 'linear', factor: 4 }, eos_token_id: null }, 'c.json');
    expect(cfg).toMatchObject({ headDim: 16, nKvHeads: 8, ropeTheta: 500000, ropeScaling: { ropeType: 'linear', factor: 4 }, eosTokenIds: [] });
  });

  it('E_CONFIG errors name the file, the key, what was expected and what was found', () => {
    const cases: [Record<string, unknown>, string, string][] = [
      [{ hidden_size: undefined }, '"hidden_size"', 'positive integer'],
      [{ hidden_size: 128.5 }, '"hidden_size"', '128.5'],
      [{ num_hidden_layers: '4' }, '"num_hidden_layers"', '"4"'],
      [{ head_dim: undefined, num_attention_heads: 6, num_key_value_heads: 2 }, '"num_attention_heads"', 'divisor of hidden_size (128)'],
      [{ num_key_value_heads: 3 }, '"num_key_value_heads"', 'divisor of num_attention_heads (8)'],
      [{ model_type: 'mistral' }, '"model_type"', '"mistral"'],
      [{ model_type: undefined }, '"model_type"', 'key absent'],
      [{ rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } }, '"rope_parameters.rope_type"', '"yarn"'],
      [{ rope_parameters: { rope_type: 'llama3', rope_theta: 1e4, factor: 8 } }, '"rope_parameters.low_freq_factor"', 'positive number'],
      [{ rope_theta: 1e4 }, '"rope_parameters.rope_theta"', 'same value as "rope_theta"'],
      [{ dtype: 'float8' }, '"dtype"', '"float8"'],
      [{ torch_dtype: 'bfloat16' }, '"torch_dtype"', 'same value as "dtype"'],
      [{ hidden_act: 'gelu' }, '"hidden_act"', '"gelu"'],
      [{ eos_token_id: [2, -1] }, '"eos_token_id"', '-1'],
      [{ tie_word_embeddings: 'yes' }, '"tie_word_embeddings"', 'true or false'],
    ];
    for (const [patch, key, fragment] of cases) {
      const err = errorOf(() => normalizeLlamaConfig({ ...TRANSFORMERS5_TINY, ...patch }, '/m/config.json'));
      expect(err.code, JSON.stringify(patch)).toBe('E_CONFIG');
      expect(err.file).toBe('/m/config.json');
      expect(err.message, JSON.stringify(patch)).toContain('/m/config.json');
      expect(err.message, JSON.stringify(patch)).toContain(key);
      expect(err.message, JSON.stringify(patch)).toContain(fragment);
    }
    expect(errorOf(() => normalizeLlamaConfig([1], 'x.json')).code).toBe('E_CONFIG');
  });
});

describe('readLlamaConfig errors', () => {
  it('E_CONFIG_MISSING and E_CONFIG_JSON with line and column', () => {
    const dir = makeTempDir();
    expect(errorOf(() => readLlamaConfig(dir)).code).toBe('E_CONFIG_MISSING');
    fs.writeFileSync(path.join(dir, 'config.json'), '{\n  "model_type": "llama",\n  "hidden_size": 64,,\n}');
    const err = errorOf(() => readLlamaConfig(dir));
    expect(err.code).toBe('E_CONFIG_JSON');
    expect(err.message).toContain(`${path.join(dir, 'config.json')}:3:21`);
  });
});

describe('copyAuxiliaryFiles', () => {
  it('copies config.json and generation_config.json of a fixture verbatim, nothing else', () => {
    const dst = makeTempDir();
    expect(copyAuxiliaryFiles(TINY, dst)).toEqual(['config.json', 'generation_config.json']);
    for (const n of ['config.json', 'generation_config.json']) {
      expect(fs.readFileSync(path.join(dst, n)).equals(fs.readFileSync(path.join(TINY, n)))).toBe(true);
    }
    expect(fs.readdirSync(dst).sort()).toEqual(['config.json', 'generation_config.json']);
  });

  it('matches msModelSlim name parts, follows symlinks, skips weights, indexes and directories, never overwrites', () => {
    const src = makeTempDir();
    const files = [
      'tokenizer.json',
      'tokenizer_config.json',
      'special_tokens_map.json',
      'tokenization_llama.py',
      'configuration_llama.py',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.safetensors',
      'model.safetensors.index.json',
      'README.md',
      'Tokenizer.txt',
    ];
    for (const n of files) fs.writeFileSync(path.join(src, n), n);
    fs.mkdirSync(path.join(src, 'tokenizer_dir'));
    fs.writeFileSync(path.join(src, 'real-target'), 'target');
    fs.symlinkSync(path.join(src, 'real-target'), path.join(src, 'special_token_map.json'));
    fs.symlinkSync(path.join(src, 'gone'), path.join(src, 'tokenizer.model'));
    const dst = path.join(makeTempDir(), 'out');
    expect(copyAuxiliaryFiles(src, dst)).toEqual([
      'configuration_llama.py',
      'generation_config.json',
      'special_token_map.json',
      'special_tokens_map.json',
      'tokenization_llama.py',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(fs.readFileSync(path.join(dst, 'special_token_map.json'), 'utf8')).toBe('target');
    expect(fs.lstatSync(path.join(dst, 'special_token_map.json')).isSymbolicLink()).toBe(false);
    expect(errorOf(() => copyAuxiliaryFiles(src, dst)).code).toBe('E_EXISTS');
  });
});
