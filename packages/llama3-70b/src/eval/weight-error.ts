// Weight quantization error of every W8A16 linear of a converted directory against its float source:
// ‖W − W_eff‖_F / ‖W‖_F, streamed in row chunks (memory bounded by the chunk, not the tensor). For m3
// directories W_eff unfolds the smoothing scale first. Not the model-output error (that is metrics.ts).

import { Checkpoint, readDescription, type TensorInfo } from '@w8a16/format';
import { decodeFloats, type FloatDType } from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import type { QuantScheme } from './variants';

/** Float rows decoded per step: a 70B down_proj row is 28672 values, so 16 MiB holds ~146 of them. */
export const WEIGHT_ERROR_CHUNK_BYTES = 16 << 20;

export interface LinearWeightError {
  /** Tensor name in the converted directory, e.g. `model.layers.3.mlp.up_proj.weight`. */
  name: string;
  /** Decoder layer, or null for lm_head. */
  layer: number | null;
  /** q, k, v, o, gate, up, down or lm_head. */
  kind: string;
  rows: number;
  cols: number;
  /** ‖W − W_eff‖_F / ‖W‖_F (0 when W is all zero and so is the error). */
  relError: number;
  /** W_eff had the m3 scale divided out of its columns. */
  unfolded: boolean;
}

export interface WeightErrorReport {
  dir: string;
  label: string;
  linears: LinearWeightError[];
  /** Mean and max of relError over the linears (0 when there are none). */
  mean: number;
  max: number;
}

/** Σ (W − (q − o)·s·f_col)² and Σ W² accumulated over row chunks, in f64. */
export interface ErrorAccumulator {
  errSq: number;
  refSq: number;
}

/**
 * Adds `rows` rows to `acc`: `w` the float source rows `(rows, cols)`, `q` their int8 codes, `scale` / `offset`
 * per row, `colFactor` (length cols, or undefined for all ones) multiplied into the dequantized weight.
 */
export function accumulateWeightError(
  acc: ErrorAccumulator,
  w: Float32Array,
  q: Int8Array,
  scale: ArrayLike<number>,
  offset: ArrayLike<number>,
  colFactor: Float64Array | undefined,
  rows: number,
  cols: number,
): void {
  for (let r = 0; r < rows; r++) {
    const s = scale[r];
    const o = offset[r];
    const base = r * cols;
    for (let j = 0; j < cols; j++) {
      const ref = w[base + j];
      let deq = (q[base + j] - o) * s;
      if (colFactor) deq *= colFactor[j];
      const d = ref - deq;
      acc.errSq += d * d;
      acc.refSq += ref * ref;
    }
  }
}

export function relativeError(acc: ErrorAccumulator): number {
  if (acc.refSq === 0) return acc.errSq === 0 ? 0 : Infinity;
  return Math.sqrt(acc.errSq / acc.refSq);
}

/**
 * m3 folded s into the columns (W·diag(s)) and the norm (γ/s): the effective weight in the source's input space
 * is deq(q)·diag(1/s), with 1/s = γ_smoothed/γ_source per column, exact up to the one f32 rounding of γ/s.
 * A column whose source γ is 0 never sees a non-zero input in either model; its factor is left at 1.
 */
export function m3ColumnFactors(gammaSource: Float32Array, gammaSmoothed: Float32Array): Float64Array {
  const f = new Float64Array(gammaSource.length);
  for (let j = 0; j < f.length; j++) f[j] = gammaSource[j] === 0 ? 1 : gammaSmoothed[j] / gammaSource[j];
  return f;
}

const LINEAR_NAME = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj\.weight$/;
/** The RMSNorm feeding each smoothed linear (spec §2.2: q/k/v after input_layernorm, gate/up after post_attention). */
const SMOOTHED_BY: Record<string, string> = { q: 'input_layernorm', k: 'input_layernorm', v: 'input_layernorm', gate: 'post_attention_layernorm', up: 'post_attention_layernorm' };

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

/** Relative weight error of every W8A16 linear of `quantDir` against `sourceDir`. */
export function weightQuantErrors(
  sourceDir: string,
  quantDir: string,
  scheme: QuantScheme,
  options: { chunkBytes?: number; onLinear?: (name: string, done: number, total: number) => void } = {},
): WeightErrorReport {
  const chunkBytes = options.chunkBytes ?? WEIGHT_ERROR_CHUNK_BYTES;
  const names = [...readDescription(quantDir).entries].filter(([n, v]) => v === 'W8A16' && n.endsWith('.weight')).map(([n]) => n);
  const src = Checkpoint.open(sourceDir);
  const qck = Checkpoint.open(quantDir);
  try {
    const linears: LinearWeightError[] = [];
    const factorCache = new Map<string, Float64Array>();
    names.forEach((name, i) => {
      options.onLinear?.(name, i, names.length);
      const m = LINEAR_NAME.exec(name);
      const layer = m ? Number(m[1]) : null;
      const kind = m ? m[3] : name === 'lm_head.weight' ? 'lm_head' : name;
      let colFactor: Float64Array | undefined;
      if (scheme.weights === 'm3' && m && SMOOTHED_BY[kind]) {
        const norm = `model.layers.${layer}.${SMOOTHED_BY[kind]}.weight`;
        colFactor = factorCache.get(norm);
        if (!colFactor) {
          colFactor = m3ColumnFactors(src.readFloat32(norm), qck.readFloat32(norm));
          factorCache.set(norm, colFactor);
        }
      }
      // A tied source has no lm_head.weight: its lm_head is the embedding matrix.
      const srcName = name === 'lm_head.weight' && !src.has(name) ? 'model.embed_tokens.weight' : name;
      const acc = linearError(src, srcName, qck, name, colFactor, chunkBytes);
      const info = qck.get(name);
      linears.push({ name, layer, kind, rows: info.shape[0], cols: info.shape[1], relError: relativeError(acc), unfolded: colFactor !== undefined });
    });
    const errs = linears.map((l) => l.relError);
    return {
      dir: quantDir,
      label: scheme.label,
      linears,
      mean: errs.length ? errs.reduce((a, b) => a + b, 0) / errs.length : 0,
      max: errs.length ? Math.max(...errs) : 0,
    };
  } finally {
    src.close();
    qck.close();
  }
}

function checkTensor(ck: Checkpoint, name: string, where: string): TensorInfo {
  if (!ck.has(name)) throw new CliError('E_TENSOR_MISSING', `${ck.dir}: tensor "${name}" is missing (needed to measure ${where})`);
  return ck.get(name);
}

function linearError(src: Checkpoint, srcName: string, qck: Checkpoint, name: string, colFactor: Float64Array | undefined, chunkBytes: number): ErrorAccumulator {
  const wInfo = checkTensor(src, srcName, `the weight error of ${name}`);
  const qInfo = checkTensor(qck, name, 'the weight error');
  if (qInfo.dtype !== 'I8' || qInfo.shape.length !== 2) throw new CliError('E_DTYPE', `${qInfo.file}: "${name}" is described W8A16 but is ${qInfo.dtype} [${qInfo.shape.join(', ')}]; expected I8 [out, in]`);
  if (!FLOAT_DTYPES.has(wInfo.dtype)) throw new CliError('E_DTYPE', `${wInfo.file}: source tensor "${srcName}" is ${wInfo.dtype}; expected a float tensor (is --model_path the float source?)`);
  const [rows, cols] = qInfo.shape;
  if (wInfo.shape.length !== 2 || wInfo.shape[0] !== rows || wInfo.shape[1] !== cols) {
    throw new CliError('E_EVAL_MISMATCH', `${name}: [${qInfo.shape.join(', ')}] in ${qck.dir} but the source's "${srcName}" is [${wInfo.shape.join(', ')}]`);
  }
  const prefix = name.slice(0, -'.weight'.length);
  const scale = qck.readFloat32(`${prefix}.weight_scale`);
  const offset = qck.readFloat32(`${prefix}.weight_offset`);
  if (scale.length !== rows || offset.length !== rows) {
    throw new CliError('E_SHAPE_MISMATCH', `${qck.dir}: ${prefix}.weight_scale / weight_offset have ${scale.length} / ${offset.length} values; expected ${rows}`);
  }
  const chunkRows = Math.max(1, Math.floor(chunkBytes / (4 * cols)));
  const w = new Float32Array(Math.min(chunkRows, rows) * cols);
  const acc: ErrorAccumulator = { errSq: 0, refSq: 0 };
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const n = Math.min(chunkRows, rows - r0);
    const wv = w.subarray(0, n * cols);
    decodeFloats(wv, src.readRows(srcName, r0, n), wInfo.dtype as FloatDType);
    const raw = qck.readRows(name, r0, n);
    const q = new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
    accumulateWeightError(acc, wv, q, scale.subarray(r0, r0 + n), offset.subarray(r0, r0 + n), colFactor, n, cols);
  }
  return acc;
}
