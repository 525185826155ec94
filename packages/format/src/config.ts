// Hugging Face LLaMA config.json: read, validate and normalise the 4.x keys (torch_dtype, rope_theta,
// rope_scaling) and the 5.x keys (dtype, rope_parameters) into one LlamaConfig; copy the files that
// msModelSlim copies beside its output. Not a general transformers config model: llama only.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { FormatError } from './errors';
import { JsonSyntaxError, parseJson } from './json';

export const CONFIG_FILE_NAME = 'config.json';

export type LlamaRopeScaling =
  | null
  | { ropeType: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  | { ropeType: 'linear'; factor: number }
  | { ropeType: 'default' };

export interface LlamaConfig {
  hiddenSize: number;
  intermediateSize: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  /** null when the rope is unscaled (absent, null, or rope_type "default"). */
  ropeScaling: LlamaRopeScaling;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  attentionBias: boolean;
  mlpBias: boolean;
  torchDtype: 'float16' | 'bfloat16' | 'float32';
  bosTokenId: number | null;
  eosTokenIds: number[];
  modelType: string;
}

/** transformers' LlamaConfig defaults, used when a key is absent (values from its __init__ signature). */
export const LLAMA_CONFIG_DEFAULTS = Object.freeze({
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  max_position_embeddings: 2048,
  tie_word_embeddings: false,
  attention_bias: false,
  mlp_bias: false,
  // An absent dtype loads as torch's default dtype.
  torch_dtype: 'float32' as const,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
});

const TORCH_DTYPES = ['float16', 'bfloat16', 'float32'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Validates and normalises a parsed config.json. Every E_CONFIG message names the file, the key, what
 * was expected and what was found.
 */
export function normalizeLlamaConfig(raw: unknown, file: string): LlamaConfig {
  const bad = (key: string, expected: string, found: unknown): never => {
    throw new FormatError('E_CONFIG', `${file}: "${key}": expected ${expected}, found ${found === undefined ? 'nothing (key absent)' : JSON.stringify(found)}`, { file });
  };
  if (!isObject(raw)) bad('(top level)', 'a JSON object', raw);
  const cfg = raw as Record<string, unknown>;
  const has = (key: string): boolean => Object.prototype.hasOwnProperty.call(cfg, key) && cfg[key] !== undefined;

  const posInt = (key: string, obj: Record<string, unknown> = cfg, label = key): number => {
    const v = obj[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) bad(label, 'a positive integer', v);
    return v as number;
  };
  const posNumber = (key: string, obj: Record<string, unknown>, label: string): number => {
    const v = obj[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(label, 'a positive number', v);
    return v as number;
  };
  const bool = (key: string, dflt: boolean): boolean => {
    if (!has(key) || cfg[key] === null) return dflt;
    const v = cfg[key];
    if (typeof v !== 'boolean') bad(key, 'true or false', v);
    return v as boolean;
  };
  const tokenId = (v: unknown, key: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(key, 'a non-negative integer token id (or a list of them)', v);
    return v as number;
  };

  const modelType = cfg.model_type;
  if (modelType !== 'llama') bad('model_type', '"llama"', modelType);

  const hiddenSize = posInt('hidden_size');
  const intermediateSize = posInt('intermediate_size');
  const nLayers = posInt('num_hidden_layers');
  const nHeads = posInt('num_attention_heads');
  const vocabSize = posInt('vocab_size');
  const nKvHeads = has('num_key_value_heads') && cfg.num_key_value_heads !== null ? posInt('num_key_value_heads') : nHeads;
  if (nHeads % nKvHeads !== 0) bad('num_key_value_heads', `a divisor of num_attention_heads (${nHeads})`, nKvHeads);
  let headDim: number;
  if (has('head_dim') && cfg.head_dim !== null) headDim = posInt('head_dim');
  else {
    if (hiddenSize % nHeads !== 0) bad('num_attention_heads', `a divisor of hidden_size (${hiddenSize}) since head_dim is absent`, nHeads);
    headDim = hiddenSize / nHeads;
  }

  const hiddenAct = has('hidden_act') ? cfg.hidden_act : LLAMA_CONFIG_DEFAULTS.hidden_act;
  if (hiddenAct !== 'silu') bad('hidden_act', '"silu" (the only activation LLaMA uses here)', hiddenAct);

  const rmsNormEps = has('rms_norm_eps') ? posNumber('rms_norm_eps', cfg, 'rms_norm_eps') : LLAMA_CONFIG_DEFAULTS.rms_norm_eps;
  const maxPositionEmbeddings = has('max_position_embeddings') ? posInt('max_position_embeddings') : LLAMA_CONFIG_DEFAULTS.max_position_embeddings;

  // dtype: 5.x "dtype", 4.x "torch_dtype"; both present must agree.
  let torchDtype: LlamaConfig['torchDtype'] = LLAMA_CONFIG_DEFAULTS.torch_dtype;
  const dtypeKeys = (['dtype', 'torch_dtype'] as const).filter((k) => has(k) && cfg[k] !== null);
  for (const k of dtypeKeys) {
    const v = cfg[k];
    if (typeof v !== 'string' || !(TORCH_DTYPES as readonly string[]).includes(v)) bad(k, `one of ${TORCH_DTYPES.map((d) => `"${d}"`).join(', ')}`, v);
  }
  if (dtypeKeys.length === 2 && cfg.dtype !== cfg.torch_dtype) bad('torch_dtype', `the same value as "dtype" (${JSON.stringify(cfg.dtype)})`, cfg.torch_dtype);
  if (dtypeKeys.length > 0) torchDtype = cfg[dtypeKeys[0]] as LlamaConfig['torchDtype'];

  // Rope: 5.x rope_parameters {rope_type, rope_theta, factor, ...} wins over 4.x rope_scaling {rope_type|type, ...}.
  let ropeKey: 'rope_parameters' | 'rope_scaling' | undefined;
  if (has('rope_parameters') && cfg.rope_parameters !== null) ropeKey = 'rope_parameters';
  else if (has('rope_scaling') && cfg.rope_scaling !== null) ropeKey = 'rope_scaling';
  const rope = ropeKey === undefined ? undefined : cfg[ropeKey];
  if (rope !== undefined && !isObject(rope)) bad(ropeKey!, 'an object', rope);
  const r = (rope ?? {}) as Record<string, unknown>;

  let ropeTheta: number = LLAMA_CONFIG_DEFAULTS.rope_theta;
  const topTheta = has('rope_theta') && cfg.rope_theta !== null ? posNumber('rope_theta', cfg, 'rope_theta') : undefined;
  const innerTheta = ropeKey === 'rope_parameters' && r.rope_theta !== undefined ? posNumber('rope_theta', r, 'rope_parameters.rope_theta') : undefined;
  if (topTheta !== undefined && innerTheta !== undefined && topTheta !== innerTheta) bad('rope_parameters.rope_theta', `the same value as "rope_theta" (${topTheta})`, innerTheta);
  ropeTheta = innerTheta ?? topTheta ?? ropeTheta;

  let ropeScaling: LlamaRopeScaling = null;
  if (rope !== undefined) {
    const typeKey = r.rope_type !== undefined ? 'rope_type' : r.type !== undefined ? 'type' : undefined;
    const ropeType = typeKey === undefined ? 'default' : r[typeKey];
    const label = (k: string): string => `${ropeKey}.${k}`;
    if (ropeType === 'llama3') {
      ropeScaling = {
        ropeType: 'llama3',
        factor: posNumber('factor', r, label('factor')),
        lowFreqFactor: posNumber('low_freq_factor', r, label('low_freq_factor')),
        highFreqFactor: posNumber('high_freq_factor', r, label('high_freq_factor')),
        originalMaxPositionEmbeddings: posInt('original_max_position_embeddings', r, label('original_max_position_embeddings')),
      };
      if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor) bad(label('high_freq_factor'), `a value above low_freq_factor (${ropeScaling.lowFreqFactor})`, ropeScaling.highFreqFactor);
    } else if (ropeType === 'linear') {
      ropeScaling = { ropeType: 'linear', factor: posNumber('factor', r, label('factor')) };
    } else if (ropeType !== 'default') {
      bad(label(typeKey ?? 'rope_type'), 'a supported rope type: "default", "linear" or "llama3"', ropeType);
    }
  }

  let bosTokenId: number | null = LLAMA_CONFIG_DEFAULTS.bos_token_id;
  if (has('bos_token_id')) bosTokenId = cfg.bos_token_id === null ? null : tokenId(cfg.bos_token_id, 'bos_token_id');
  let eosTokenIds: number[] = [LLAMA_CONFIG_DEFAULTS.eos_token_id];
  if (has('eos_token_id')) {
    const eos = cfg.eos_token_id;
    if (eos === null) eosTokenIds = [];
    else if (Array.isArray(eos)) eosTokenIds = eos.map((e) => tokenId(e, 'eos_token_id'));
    else eosTokenIds = [tokenId(eos, 'eos_token_id')];
  }

  return {
    hiddenSize,
    intermediateSize,
    nLayers,
    nHeads,
    nKvHeads,
    headDim,
    vocabSize,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    tieWordEmbeddings: bool('tie_word_embeddings', LLAMA_CONFIG_DEFAULTS.tie_word_embeddings),
    attentionBias: bool('attention_bias', LLAMA_CONFIG_DEFAULTS.attention_bias),
    mlpBias: bool('mlp_bias', LLAMA_CONFIG_DEFAULTS.mlp_bias),
    torchDtype,
    bosTokenId,
    eosTokenIds,
    modelType: modelType as string,
  };
}

/** Reads `<dir>/config.json`: E_CONFIG_MISSING, E_CONFIG_JSON (with line:column), then normalizeLlamaConfig. */
export function readLlamaConfig(dir: string): { path: string; raw: Record<string, unknown>; config: LlamaConfig } {
  const file = path.join(path.resolve(dir), CONFIG_FILE_NAME);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (cause) {
    throw new FormatError('E_CONFIG_MISSING', `${file}: cannot read config.json: ${(cause as Error).message}`, { file, cause });
  }
  let raw: unknown;
  try {
    raw = parseJson(text, file, { code: 'E_CONFIG_JSON' });
  } catch (e) {
    if (e instanceof JsonSyntaxError) throw e;
    throw new FormatError('E_CONFIG_JSON', `${file}: ${(e as Error).message}`, { file, cause: e });
  }
  const config = normalizeLlamaConfig(raw, file);
  return { path: file, raw: raw as Record<string, unknown>, config };
}

/** Name parts msModelSlim's copy_tokenizer_files looks for (case-sensitive substring match). */
export const AUXILIARY_NAME_PARTS: readonly string[] = Object.freeze([
  'tokenizer',
  'tokenization',
  'special_tokens_map',
  'special_token_map',
  'generation',
  'configuration',
]);

/**
 * Copies config.json verbatim plus every regular file (symlinks followed) whose name contains one of
 * AUXILIARY_NAME_PARTS, never *.safetensors nor *.index.json. Refuses to overwrite (E_EXISTS).
 * Returns the copied names, sorted.
 */
export function copyAuxiliaryFiles(srcDir: string, dstDir: string): string[] {
  const src = path.resolve(srcDir);
  const dst = path.resolve(dstDir);
  let names: string[];
  try {
    names = fs.readdirSync(src).sort();
  } catch (cause) {
    throw new FormatError('E_DIR_MISSING', `${src}: cannot read source directory: ${(cause as Error).message}`, { file: src, cause });
  }
  const picked = names.filter((n) => {
    if (n.endsWith('.safetensors') || n.endsWith('.index.json')) return false;
    if (n !== CONFIG_FILE_NAME && !AUXILIARY_NAME_PARTS.some((p) => n.includes(p))) return false;
    try {
      return fs.statSync(path.join(src, n)).isFile();
    } catch {
      return false; // dangling symlink
    }
  });
  fs.mkdirSync(dst, { recursive: true });
  for (const n of picked) {
    const to = path.join(dst, n);
    try {
      fs.copyFileSync(path.join(src, n), to, fs.constants.COPYFILE_EXCL);
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code === 'EEXIST' ? 'E_EXISTS' : 'E_IO';
      throw new FormatError(code, `${to}: cannot copy ${n} from ${src}: ${(cause as Error).message}`, { file: to, cause });
    }
  }
  return picked;
}
