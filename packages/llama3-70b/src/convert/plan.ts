// Turns a checkpoint's tensor list and the options into the list of output tensors (emission order),
// the description entries, and the jobs that produce each output tensor. Pure: reads no tensor data.

import type { LlamaConfig, PlannedTensor, TensorInfo } from '@w8a16/format';
import { isFloatDType, type ComputeDType, type FloatDType, type QuantScheme } from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { IGNORED_TENSOR_PATTERN, llamaModules, m3RoleOf } from './names';

/** The m3 group whose scales smooth a tensor (known only after calibration). */
export interface SmoothRef {
  readonly layer: number;
  readonly subgraph: 'qkv' | 'gateup';
}

export interface QuantizeJob {
  readonly kind: 'quantize';
  readonly source: TensorInfo;
  readonly module: string;
  readonly rows: number;
  readonly cols: number;
  readonly weight: string;
  readonly scale: string;
  readonly offset: string;
  /** m3: multiply column j by the group's s[j] before quantizing. */
  readonly smooth?: SmoothRef;
}

export interface CopyJob {
  readonly kind: 'copy';
  readonly source: TensorInfo;
  readonly target: string;
  readonly targetDType: FloatDType;
  readonly rows: number;
  /** Elements per row (1 for a 1-D tensor, whose "rows" are its elements). */
  readonly cols: number;
  /** m3: a disabled linear's columns times s (`mul-cols`), or a norm weight divided by s (`div`). */
  readonly smooth?: SmoothRef & { readonly op: 'mul-cols' | 'div' };
}

/** A tensor made by calibration, not read from the source: a zero NormBias, or a C8 KV scale / offset. */
export interface CalibJob {
  readonly kind: 'calib';
  readonly target: string;
  readonly value:
    | { readonly kind: 'zeros'; readonly count: number }
    | { readonly kind: 'kv'; readonly layer: number; readonly proj: 'k' | 'v'; readonly field: 'scale' | 'offset' };
}

export type TensorJob = QuantizeJob | CopyJob | CalibJob;

export interface ConvertPlan {
  readonly tensors: PlannedTensor[];
  readonly description: [string, string][];
  readonly jobs: TensorJob[];
  readonly compute: ComputeDType;
  readonly scheme: QuantScheme;
  readonly quantizedLinears: number;
  readonly floatLinears: number;
  readonly warnings: string[];
}

export interface PlanOptions {
  readonly disableNames: readonly string[];
  readonly disableLastLinear: boolean;
  readonly wSym: boolean;
  readonly deviceType: 'cpu' | 'npu';
  /** m3 smoothing (spec §2.4): q/k/v/gate/up and their norms smoothed, a zero `<norm>.bias` after every RMSNorm. */
  readonly m3?: boolean;
  /** C8 (spec §3.3): `k_proj` / `v_proj` `.kv_cache_scale` / `.kv_cache_offset` before their weights. */
  readonly kvCache?: boolean;
}

/** msModelSlim's NormBias: an all-zero float32 bias beside every RMSNorm weight (spec §2.2). */
const NORM_BIAS_DTYPE: FloatDType = 'F32';
/** C8 scales and offsets as the CPU path stores them (F32; the weight_scale tensors are F32 here too). */
const KV_PARAM_DTYPE: FloatDType = 'F32';

const CONFIG_DTYPE: Record<LlamaConfig['torchDtype'], FloatDType> = { float16: 'F16', bfloat16: 'BF16', float32: 'F32' };
const COMPUTE_OF: Record<FloatDType, ComputeDType> = { F16: 'f16', BF16: 'bf16', F32: 'f32' };

/** Legacy msModelSlim writes a linear's bias in the model dtype, except bf16 biases which become F32 (spec §5). */
function biasDType(src: FloatDType): FloatDType {
  return src === 'BF16' ? 'F32' : src;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function buildConvertPlan(
  tensors: readonly TensorInfo[],
  config: LlamaConfig,
  opts: PlanOptions,
  where: string,
): ConvertPlan {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const used = new Set<string>();
  const warnings: string[] = [];

  const take = (name: string, shape: number[]): TensorInfo => {
    const t = byName.get(name);
    if (!t) throw new CliError('E_TENSOR_MISSING', `tensor '${name}' (expected shape [${shape}]) is missing from ${where}`);
    if (!isFloatDType(t.dtype)) {
      throw new CliError('E_DTYPE', `tensor '${name}' in ${t.file} has dtype ${t.dtype}; expected F16, BF16 or F32`);
    }
    if (!sameShape(t.shape, shape)) {
      throw new CliError('E_SHAPE', `tensor '${name}' in ${t.file} has shape [${t.shape}]; the config implies [${shape}]`);
    }
    used.add(name);
    return t;
  };

  const disabled = new Set(opts.disableNames);
  const matched = new Set<string>();
  if (opts.disableLastLinear) disabled.add('lm_head');
  // The compute dtype of the quantizer: msModelSlim's CPU path loads float32, its NPU path config.torch_dtype.
  const compute: ComputeDType = opts.deviceType === 'cpu' ? 'f32' : COMPUTE_OF[CONFIG_DTYPE[config.torchDtype]];
  const scheme: QuantScheme = opts.wSym ? 'sym' : 'asym';

  const out: PlannedTensor[] = [];
  const description: [string, string][] = [];
  const jobs: TensorJob[] = [];
  let quantizedLinears = 0;
  let floatLinears = 0;

  // Smoothed tensors no longer equal the source values: written in the compute dtype (F32 on the CPU path).
  const smoothDType: FloatDType = opts.deviceType === 'cpu' ? 'F32' : CONFIG_DTYPE[config.torchDtype];
  const copy = (source: TensorInfo, target: string, targetDType: FloatDType, smooth?: CopyJob['smooth']) => {
    const rows = source.shape.length === 0 ? 1 : source.shape[0];
    const cols = source.shape.length <= 1 ? 1 : source.shape.slice(1).reduce((a, b) => a * b, 1);
    out.push({ name: target, dtype: targetDType, shape: [...source.shape] });
    description.push([target, 'FLOAT']);
    jobs.push({ kind: 'copy', source, target, targetDType, rows, cols, ...(smooth ? { smooth } : {}) });
  };
  const calib = (target: string, dtype: FloatDType, shape: number[], label: string, value: CalibJob['value']) => {
    out.push({ name: target, dtype, shape });
    description.push([target, label]);
    jobs.push({ kind: 'calib', target, value });
  };

  for (const m of llamaModules(config)) {
    const role = opts.m3 ? m3RoleOf(m.module) : undefined;
    if (m.kind === 'float') {
      for (const p of m.params) {
        const t = take(`${m.module}.${p.name}`, p.shape);
        if (role) copy(t, `${m.module}.${p.name}`, smoothDType, { layer: role.layer, subgraph: role.subgraph, op: 'div' });
        else copy(t, `${m.module}.${p.name}`, t.dtype as FloatDType);
      }
      // Every RMSNorm (model.norm too) is wrapped in NormBias by m3: its bias comes right after the weight.
      if (opts.m3 && /(^|\.)(input_layernorm|post_attention_layernorm|norm)$/.test(m.module)) {
        calib(`${m.module}.bias`, NORM_BIAS_DTYPE, [config.hiddenSize], 'FLOAT', { kind: 'zeros', count: config.hiddenSize });
      }
      continue;
    }
    const kvProj = opts.kvCache ? /^model\.layers\.(\d+)\.self_attn\.([kv])_proj$/.exec(m.module) : null;
    if (kvProj) {
      // Emitted when the k_proj / v_proj module is visited, before its weight (spec §3.3), disabled or not.
      const layer = Number(kvProj[1]);
      const proj = kvProj[2] as 'k' | 'v';
      for (const field of ['scale', 'offset'] as const) {
        calib(`${m.module}.kv_cache_${field}`, KV_PARAM_DTYPE, [m.n], 'C8', { kind: 'kv', layer, proj, field });
      }
    }
    let weight: TensorInfo;
    if (m.module === 'lm_head' && !byName.has('lm_head.weight') && config.tieWordEmbeddings) {
      // Tied embeddings: the LM head is the embedding matrix. Written out explicitly as lm_head.weight,
      // as the msModelSlim reference does once the tie is broken in memory (fixtures README §3).
      weight = take('model.embed_tokens.weight', [m.n, m.k]);
    } else {
      weight = take(`${m.module}.weight`, [m.n, m.k]);
    }
    const bias = m.hasBias ? take(`${m.module}.bias`, [m.n]) : undefined;
    if (disabled.has(m.module)) matched.add(m.module);
    if (disabled.has(m.module)) {
      floatLinears++;
      // m3 ignores disable_names: a disabled linear of a group is written smoothed (spec §2.2).
      if (role) copy(weight, `${m.module}.weight`, smoothDType, { layer: role.layer, subgraph: role.subgraph, op: 'mul-cols' });
      else copy(weight, `${m.module}.weight`, weight.dtype as FloatDType);
      if (bias) copy(bias, `${m.module}.bias`, bias.dtype as FloatDType);
      continue;
    }
    quantizedLinears++;
    const names = { weight: `${m.module}.weight`, scale: `${m.module}.weight_scale`, offset: `${m.module}.weight_offset` };
    out.push({ name: names.weight, dtype: 'I8', shape: [m.n, m.k] });
    description.push([names.weight, 'W8A16']);
    if (bias) copy(bias, `${m.module}.bias`, biasDType(bias.dtype as FloatDType));
    out.push({ name: names.scale, dtype: 'F32', shape: [m.n, 1] });
    description.push([names.scale, 'W8A16']);
    out.push({ name: names.offset, dtype: 'F32', shape: [m.n, 1] });
    description.push([names.offset, 'W8A16']);
    jobs.push({
      kind: 'quantize',
      source: weight,
      module: m.module,
      rows: m.n,
      cols: m.k,
      ...names,
      ...(role ? { smooth: { layer: role.layer, subgraph: role.subgraph } } : {}),
    });
  }

  for (const name of disabled) {
    if (!matched.has(name)) warnings.push(`--disable_names entry '${name}' matches no linear layer of this model`);
  }
  const unexpected = tensors.filter((t) => !used.has(t.name) && !(config.tieWordEmbeddings && t.name === 'lm_head.weight'));
  for (const t of unexpected) {
    if (IGNORED_TENSOR_PATTERN.test(t.name)) {
      warnings.push(`skipped buffer '${t.name}' (transformers does not load it either)`);
      continue;
    }
    throw new CliError(
      'E_UNEXPECTED_TENSOR',
      `tensor '${t.name}' in ${t.file} is not part of a LlamaForCausalLM with this config (num_hidden_layers=${config.nLayers})`,
    );
  }
  return { tensors: out, description, jobs, compute, scheme, quantizedLinears, floatLinears, warnings };
}

