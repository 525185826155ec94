// Loads a LLaMA checkpoint onto a backend: a converted W8A16 directory (quant_model_description.json says which
// tensors are int8 + scale/offset, which are float, which are C8 KV-cache scales) or a plain float HF checkpoint.
// Checks every tensor against config.json before uploading it. Not the forward pass (llama.ts) nor the tokenizer.

import type {
  Backend,
  EmbeddingTable,
  FloatWeightDType,
  KvCacheDType,
  KvQuantParams,
  LinearWeight,
  Logger,
  NormWeight,
  RopeTable,
} from '@w8a16/ascend-runtime';
import { computeInvFreq } from '@w8a16/ascend-runtime';
import { Checkpoint, FormatError, readDescription, readLlamaConfig, type LlamaConfig, type TensorInfo } from '@w8a16/format';
import { CliError } from '../cli/errors';
import { linearSplit, readColumnSlice, sliceRows, type LinearRole, type LinearSplit, type TensorParallelShard } from '../parallel/shard';

/** Description values msModelSlim writes for a W8A16 model (spec §4.2). */
export const DESCRIPTION_VALUES = ['FLOAT', 'W8A16', 'C8'] as const;
/** Top-level description keys that are settings, not tensor names (spec §4.2, in msModelSlim's insertion order). */
export const DESCRIPTION_SETTINGS = ['version', 'model_quant_type', 'kv_cache_type', 'kv_quant_type', 'fa_quant_type', 'group_size', 'reduce_quant_type'] as const;

export type ModelErrorCode =
  | 'E_TENSOR_MISSING' // config.json implies a tensor the checkpoint lacks
  | 'E_DESCRIPTION_TENSOR_ABSENT' // quant_model_description.json names a tensor the checkpoint lacks
  | 'E_DESCRIPTION_VALUE' // a description value (or model/kv quant type) this runtime does not know
  | 'E_DESCRIPTION_MISMATCH' // description and file disagree (W8A16 but not I8, C8 on some layers only, ...)
  | 'E_SHAPE_MISMATCH' // a tensor's shape contradicts config.json
  | 'E_DTYPE' // a tensor stored in a dtype its role cannot have
  | 'E_NORM_BIAS_NONZERO'; // a `<norm>.bias` that is not all zero (RMSNorm here has no bias)

/**
 * Which KV-cache storage to use: `auto` = int8 when the description has C8 scales, else the float default;
 * `float` = the float default (the backend's activation dtype: f32 on the host, f16 on the NPU) even when C8 scales
 * are present; `int8` = the C8 scales, which must be present; `f32` / `f16` = that float storage.
 */
export type KvCacheChoice = 'auto' | 'float' | 'int8' | 'f32' | 'f16';

/** The C8 tensors of one layer, in spec §3.3 order (k scale, k offset, v scale, v offset). */
export function c8TensorNames(layer: number): string[] {
  return ['k_proj.kv_cache_scale', 'k_proj.kv_cache_offset', 'v_proj.kv_cache_scale', 'v_proj.kv_cache_offset'].map((s) => `model.layers.${layer}.self_attn.${s}`);
}

export interface LoadOptions {
  /**
   * `auto` (default) uses the checkpoint's C8 scales for an int8 KV cache when present; `float` / `f32` / `f16`
   * ignore them (e.g. to compare with forward-w8a16.json, which did not simulate an int8 cache, or to measure the
   * int8 cache against a float one on the same weights); `int8` requires them (E_USAGE when absent).
   */
  kvCache?: KvCacheChoice;
  logger?: Logger;
  /** Load only this tensor-parallel rank's part of each layer (parallel/shard.ts); absent = the whole model. */
  shard?: TensorParallelShard;
}

export interface LayerWeights {
  inputNorm: NormWeight;
  q: LinearWeight;
  k: LinearWeight;
  v: LinearWeight;
  o: LinearWeight;
  postNorm: NormWeight;
  gate: LinearWeight;
  up: LinearWeight;
  down: LinearWeight;
  /** C8 scales when the KV cache is int8. */
  kvQuant: KvQuantParams | undefined;
}

export interface LoadSummary {
  /** `w8a16` when a description was read, `float` for a plain HF checkpoint. */
  format: 'w8a16' | 'float';
  linearsW8A16: number;
  linearsFloat: number;
  /** Bytes of weights uploaded (the tied lm_head counted once). */
  weightBytes: number;
  /** Bytes one decode step streams: every linear plus one embedding row (what bounds decode speed). */
  bytesPerToken: number;
  /** The lm_head is the embedding matrix (tie_word_embeddings and no lm_head.weight). */
  tiedLmHead: boolean;
  /** `<norm>.bias` tensors (msModelSlim's NormBias) found all zero and therefore not applied. */
  zeroNormBiases: number;
  kvCacheDType: KvCacheDType;
}

export interface LlamaWeights {
  dir: string;
  config: LlamaConfig;
  embedding: EmbeddingTable;
  layers: LayerWeights[];
  norm: NormWeight;
  lmHead: LinearWeight;
  rope: RopeTable;
  summary: LoadSummary;
  /** The tensor-parallel part these layers hold (absent: the whole model). */
  shard?: TensorParallelShard;
  /** Releases every weight from the backend. */
  free(): void;
}

const err = (code: ModelErrorCode, message: string): CliError => new CliError(code, message);

const FLOAT_DTYPES: Record<string, FloatWeightDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** RoPE inverse frequencies for the config: default, llama3 (computeInvFreq) or linear (HF divides by factor). */
export function ropeInvFreq(config: LlamaConfig): Float32Array {
  const s = config.ropeScaling;
  if (s?.ropeType === 'linear') {
    const inv = computeInvFreq({ headDim: config.headDim, theta: config.ropeTheta });
    for (let i = 0; i < inv.length; i++) inv[i] = Math.fround(inv[i] / s.factor);
    return inv;
  }
  return computeInvFreq({ headDim: config.headDim, theta: config.ropeTheta, scaling: s });
}

/** Loads `dir` (config.json + safetensors, with or without quant_model_description.json) onto `backend`. */
export function loadLlamaWeights(dir: string, backend: Backend, options: LoadOptions = {}): LlamaWeights {
  const { config } = readLlamaConfig(dir);
  const ckpt = Checkpoint.open(dir);
  const created: Array<EmbeddingTable | NormWeight | LinearWeight | RopeTable> = [];
  try {
    const loader = new WeightLoader(ckpt, config, backend, readOptionalDescription(dir), options, created);
    return loader.load(dir);
  } catch (e) {
    for (const w of created) backend.freeWeight(w);
    throw e;
  } finally {
    ckpt.close();
  }
}

function readOptionalDescription(dir: string): { path: string; entries: Map<string, string | number> } | undefined {
  try {
    return readDescription(dir);
  } catch (e) {
    if (e instanceof FormatError && e.code === 'E_DESCRIPTION_MISSING') return undefined;
    throw e;
  }
}

class WeightLoader {
  private readonly desc: Map<string, string | number> | undefined;
  private readonly descPath: string;
  private readonly summary: LoadSummary;

  constructor(
    private readonly ckpt: Checkpoint,
    private readonly config: LlamaConfig,
    private readonly be: Backend,
    description: { path: string; entries: Map<string, string | number> } | undefined,
    private readonly options: LoadOptions,
    private readonly created: Array<EmbeddingTable | NormWeight | LinearWeight | RopeTable>,
  ) {
    this.desc = description?.entries;
    this.descPath = description?.path ?? '';
    this.summary = {
      format: description ? 'w8a16' : 'float',
      linearsW8A16: 0,
      linearsFloat: 0,
      weightBytes: 0,
      bytesPerToken: 0,
      tiedLmHead: false,
      zeroNormBiases: 0,
      kvCacheDType: 'f32',
    };
    if (this.desc) this.checkDescription();
  }

  load(dir: string): LlamaWeights {
    const c = this.config;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;

    const embedName = 'model.embed_tokens.weight';
    const embedInfo = this.floatTensor(embedName, [c.vocabSize, c.hiddenSize], 'vocab_size, hidden_size');
    const embedData = this.ckpt.readRows(embedName, 0, c.vocabSize);
    const embedding = this.keep(this.be.createEmbedding({ vocab: c.vocabSize, hidden: c.hiddenSize, dtype: FLOAT_DTYPES[embedInfo.dtype], data: embedData }));
    this.summary.weightBytes += embedData.byteLength;
    this.summary.bytesPerToken += embedData.byteLength / c.vocabSize;

    const kvQuants = this.kvQuantParams(kvDim);
    const shard = this.options.shard;
    const split = (role: LinearRole) => (shard ? linearSplit(shard, role) : undefined);
    const layers: LayerWeights[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const attnBias = c.attentionBias;
      const mlpBias = c.mlpBias;
      layers.push({
        inputNorm: this.norm(`${p}.input_layernorm`),
        q: this.linear(`${p}.self_attn.q_proj`, qDim, c.hiddenSize, attnBias, 'num_attention_heads·head_dim, hidden_size', split('q')),
        k: this.linear(`${p}.self_attn.k_proj`, kvDim, c.hiddenSize, attnBias, 'num_key_value_heads·head_dim, hidden_size', split('k')),
        v: this.linear(`${p}.self_attn.v_proj`, kvDim, c.hiddenSize, attnBias, 'num_key_value_heads·head_dim, hidden_size', split('v')),
        o: this.linear(`${p}.self_attn.o_proj`, c.hiddenSize, qDim, attnBias, 'hidden_size, num_attention_heads·head_dim', split('o')),
        postNorm: this.norm(`${p}.post_attention_layernorm`),
        gate: this.linear(`${p}.mlp.gate_proj`, c.intermediateSize, c.hiddenSize, mlpBias, 'intermediate_size, hidden_size', split('gate')),
        up: this.linear(`${p}.mlp.up_proj`, c.intermediateSize, c.hiddenSize, mlpBias, 'intermediate_size, hidden_size', split('up')),
        down: this.linear(`${p}.mlp.down_proj`, c.hiddenSize, c.intermediateSize, mlpBias, 'hidden_size, intermediate_size', split('down')),
        kvQuant: kvQuants?.[l],
      });
    }
    const norm = this.norm('model.norm');

    let lmHead: LinearWeight;
    if (this.ckpt.has('lm_head.weight')) {
      lmHead = this.linear('lm_head', c.vocabSize, c.hiddenSize, false, 'vocab_size, hidden_size');
    } else if (c.tieWordEmbeddings) {
      // Tied: the embedding bytes serve as the lm_head weight too (the backend keeps, not copies, them).
      lmHead = this.keep(this.be.createFloatLinear({ n: c.vocabSize, k: c.hiddenSize, dtype: FLOAT_DTYPES[embedInfo.dtype], data: embedData, name: 'lm_head (tied to model.embed_tokens.weight)' }));
      this.summary.tiedLmHead = true;
      this.summary.linearsFloat++;
      this.summary.bytesPerToken += embedData.byteLength;
    } else {
      throw err('E_TENSOR_MISSING', `${this.ckpt.dir}: tensor "lm_head.weight" is missing and config.json has tie_word_embeddings false (an untied model needs its own lm_head)`);
    }

    const rope = this.keep(this.be.createRope(c.headDim, ropeInvFreq(c)));
    const created = [...this.created];
    const be = this.be;
    return {
      dir,
      config: c,
      embedding,
      layers,
      norm,
      lmHead,
      rope,
      summary: this.summary,
      ...(shard ? { shard } : {}),
      free: () => {
        for (const w of created) be.freeWeight(w);
        created.length = 0;
      },
    };
  }

  private keep<T extends EmbeddingTable | NormWeight | LinearWeight | RopeTable>(w: T): T {
    this.created.push(w);
    return w;
  }

  // --- description -------------------------------------------------------------------------------------------

  private checkDescription(): void {
    const desc = this.desc!;
    const quantType = desc.get('model_quant_type');
    if (quantType !== undefined && quantType !== 'W8A16' && quantType !== 'FLOAT') {
      throw err('E_DESCRIPTION_VALUE', `${this.descPath}: "model_quant_type" is ${JSON.stringify(quantType)}; this runtime runs "W8A16" (or "FLOAT") checkpoints`);
    }
    for (const key of ['kv_cache_type', 'kv_quant_type']) {
      const v = desc.get(key);
      if (v !== undefined && v !== 'C8') throw err('E_DESCRIPTION_VALUE', `${this.descPath}: "${key}" is ${JSON.stringify(v)}; the only KV-cache quantization known is "C8"`);
    }
    for (const [name, value] of desc) {
      if ((DESCRIPTION_SETTINGS as readonly string[]).includes(name)) continue;
      if (typeof value !== 'string' || !(DESCRIPTION_VALUES as readonly string[]).includes(value)) {
        throw err('E_DESCRIPTION_VALUE', `${this.descPath}: tensor "${name}" is described as ${JSON.stringify(value)}; expected one of ${DESCRIPTION_VALUES.join(', ')}`);
      }
      if (!this.ckpt.has(name)) {
        throw err('E_DESCRIPTION_TENSOR_ABSENT', `${this.descPath} describes tensor "${name}" as ${value}, but the checkpoint in ${this.ckpt.dir} has no such tensor`);
      }
    }
  }

  /** The description's value for a tensor (undefined without a description or entry). */
  private described(name: string): string | undefined {
    const v = this.desc?.get(name);
    return typeof v === 'string' ? v : undefined;
  }

  // --- tensors -----------------------------------------------------------------------------------------------

  private info(name: string, neededFor: string): TensorInfo {
    if (!this.ckpt.has(name)) {
      throw err('E_TENSOR_MISSING', `${this.ckpt.dir}: tensor "${name}" is missing (needed for ${neededFor}; config.json: ${this.config.nLayers} layers)`);
    }
    return this.ckpt.get(name);
  }

  private checkShape(info: TensorInfo, want: number[], configKeys: string, alsoOk?: number[]): void {
    const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);
    if (same(info.shape, want) || (alsoOk && same(info.shape, alsoOk))) return;
    throw err(
      'E_SHAPE_MISMATCH',
      `${info.file}: tensor "${info.name}" has shape [${info.shape.join(', ')}], config.json (${configKeys}) implies [${want.join(', ')}]`,
    );
  }

  private floatTensor(name: string, shape: number[], configKeys: string): TensorInfo {
    const info = this.info(name, configKeys);
    if (!(info.dtype in FLOAT_DTYPES)) {
      throw err('E_DTYPE', `${info.file}: tensor "${name}" is ${info.dtype}; expected a float tensor (F32, F16 or BF16)`);
    }
    const d = this.described(name);
    if (d !== undefined && d !== 'FLOAT') {
      throw err('E_DESCRIPTION_MISMATCH', `${this.descPath} describes "${name}" as ${d}, but it is used as a float tensor (expected "FLOAT")`);
    }
    this.checkShape(info, shape, configKeys);
    return info;
  }

  private norm(prefix: string): NormWeight {
    const h = this.config.hiddenSize;
    this.floatTensor(`${prefix}.weight`, [h], 'hidden_size');
    const weight = this.ckpt.readFloat32(`${prefix}.weight`);
    const biasName = `${prefix}.bias`;
    if (this.ckpt.has(biasName)) {
      // msModelSlim's NormBias wrapper adds an all-zero bias (spec §2.2); RMSNorm here has none, so it must be zero.
      this.floatTensor(biasName, [h], 'hidden_size');
      const bias = this.ckpt.readFloat32(biasName);
      const at = bias.findIndex((x) => x !== 0);
      if (at >= 0) {
        throw err('E_NORM_BIAS_NONZERO', `${this.ckpt.get(biasName).file}: "${biasName}"[${at}] = ${bias[at]}; only all-zero norm biases (msModelSlim m3 output) are supported`);
      }
      this.summary.zeroNormBiases++;
    }
    this.summary.weightBytes += weight.byteLength;
    return this.keep(this.be.createNormWeight(weight));
  }

  private bias(prefix: string, n: number, wanted: boolean): Float32Array | undefined {
    const name = `${prefix}.bias`;
    if (!wanted) {
      if (this.ckpt.has(name)) this.options.logger?.warn?.(`${name} present but config.json says no bias for this linear; ignored (as transformers does)`);
      return undefined;
    }
    this.floatTensor(name, [n], 'out features');
    return this.ckpt.readFloat32(name);
  }

  /**
   * A linear `prefix.weight [n, k]`: W8A16 (I8 + weight_scale/weight_offset) or float; with `split`, only this
   * tensor-parallel rank's rows or columns of it (parallel/shard.ts).
   */
  private linear(prefix: string, n: number, k: number, hasBias: boolean, configKeys: string, split?: LinearSplit): LinearWeight {
    const wName = `${prefix}.weight`;
    const info = this.info(wName, configKeys);
    const d = this.described(wName);
    const fullBias = this.bias(prefix, n, hasBias);
    const bias = !fullBias || !split ? fullBias : split.kind === 'rows' ? fullBias.subarray(split.start, split.start + split.count) : split.withBias ? fullBias : undefined;
    // rows kept, then the [rows, cols] this rank uploads
    const rows = split?.kind === 'rows' ? split : { start: 0, count: n };
    const cols = split?.kind === 'cols' ? split.count : k;
    const read = (): Uint8Array => (split?.kind === 'cols' ? readColumnSlice(this.ckpt, wName, split.start, split.count) : this.ckpt.readRows(wName, rows.start, rows.count));
    if (info.dtype === 'I8' || d === 'W8A16') {
      if (info.dtype !== 'I8') throw err('E_DESCRIPTION_MISMATCH', `${this.descPath} describes "${wName}" as W8A16, but the file stores it as ${info.dtype} (expected I8)`);
      if (!this.desc) throw err('E_DESCRIPTION_MISMATCH', `${info.file}: "${wName}" is I8 but ${this.ckpt.dir} has no quant_model_description.json saying how to read it`);
      if (d !== undefined && d !== 'W8A16') throw err('E_DESCRIPTION_MISMATCH', `${this.descPath} describes "${wName}" as ${d}, but the file stores it as I8 (expected "W8A16")`);
      this.checkShape(info, [n, k], configKeys);
      const scale = sliceRows(this.quantParam(`${prefix}.weight_scale`, n), 1, rows.start, rows.count);
      const offset = sliceRows(this.quantParam(`${prefix}.weight_offset`, n), 1, rows.start, rows.count);
      const raw = read();
      const weight = new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
      this.summary.linearsW8A16++;
      this.summary.weightBytes += raw.byteLength + 8 * rows.count;
      this.summary.bytesPerToken += raw.byteLength + 8 * rows.count;
      return this.keep(this.be.createW8A16Linear({ n: rows.count, k: cols, weight, scale, offset, bias, name: wName }));
    }
    this.floatTensor(wName, [n, k], configKeys);
    const data = read();
    this.summary.linearsFloat++;
    this.summary.weightBytes += data.byteLength;
    this.summary.bytesPerToken += data.byteLength;
    return this.keep(this.be.createFloatLinear({ n: rows.count, k: cols, dtype: FLOAT_DTYPES[info.dtype], data, bias, name: wName }));
  }

  /** weight_scale / weight_offset `[n, 1]` (msModelSlim) or `[n]`, any float dtype, decoded to f32. */
  private quantParam(name: string, n: number): Float32Array {
    const info = this.info(name, 'a W8A16 linear');
    if (!(info.dtype in FLOAT_DTYPES)) throw err('E_DTYPE', `${info.file}: tensor "${name}" is ${info.dtype}; expected F32, F16 or BF16`);
    const d = this.described(name);
    if (d !== undefined && d !== 'W8A16') throw err('E_DESCRIPTION_MISMATCH', `${this.descPath} describes "${name}" as ${d}; expected "W8A16"`);
    this.checkShape(info, [n, 1], 'out features of its linear', [n]);
    return this.ckpt.readFloat32(name);
  }

  /** Per-layer C8 scales when the KV cache is int8; sets the summary's cache dtype. */
  private kvQuantParams(kvDim: number): KvQuantParams[] | undefined {
    const c = this.config;
    const choice = this.options.kvCache ?? 'auto';
    const names = c8TensorNames;
    const layersWithC8 = [...Array(c.nLayers).keys()].filter((l) => names(l).some((n) => this.described(n) === 'C8'));
    if (choice === 'int8' && layersWithC8.length === 0) {
      const where = this.desc ? `${this.descPath} describes no tensor as "C8"` : `${this.ckpt.dir} has no quant_model_description.json`;
      throw new CliError(
        'E_USAGE',
        `an int8 KV cache needs the C8 tensors ${names(0).join(', ')} (and the same for each of the ${c.nLayers} layers), described as "C8"; ` +
          `${where}. Convert with --use_kvcache_quant True, or use a float cache`,
      );
    }
    if ((choice !== 'auto' && choice !== 'int8') || layersWithC8.length === 0) {
      // A float cache matches the backend's activations: f16 on the NPU (its attention takes f16/bf16/int8 KV), f32 on the host.
      const floatDefault = this.be.info.name === 'ascend' ? 'f16' : 'f32';
      this.summary.kvCacheDType = choice === 'f16' ? 'f16' : choice === 'f32' ? 'f32' : floatDefault;
      return undefined;
    }
    if (layersWithC8.length !== c.nLayers) {
      throw err('E_DESCRIPTION_MISMATCH', `${this.descPath}: C8 KV-cache scales are described for layers ${layersWithC8.join(', ')} only; expected all ${c.nLayers} layers or none`);
    }
    const out: KvQuantParams[] = [];
    for (let l = 0; l < c.nLayers; l++) {
      const [ks, ko, vs, vo] = names(l).map((n) => {
        if (this.described(n) !== 'C8') throw err('E_DESCRIPTION_MISMATCH', `${this.descPath}: "${n}" is not described as C8 while other C8 tensors of layer ${l} are`);
        const info = this.info(n, 'the C8 (int8) KV cache');
        if (!(info.dtype in FLOAT_DTYPES)) throw err('E_DTYPE', `${info.file}: tensor "${n}" is ${info.dtype}; expected F32, F16 or BF16`);
        this.checkShape(info, [kvDim], 'num_key_value_heads·head_dim', [kvDim, 1]);
        const kv = this.options.shard?.kvRows;
        return kv ? sliceRows(this.ckpt.readFloat32(n), 1, kv.start, kv.count) : this.ckpt.readFloat32(n);
      });
      out.push({ kScale: ks, kOffset: ko, vScale: vs, vOffset: vo });
    }
    this.summary.kvCacheDType = 'int8';
    return out;
  }
}
