// Writes a Hugging Face LLaMA checkpoint (config.json, generation_config.json, model.safetensors or shards
// + index, optionally the LLaMA-3 tokenizer files) from a seed, streamed tensor by tensor in row chunks.
// Random weights with planted outliers: a stand-in for a real model's shapes and quantization behaviour, not its knowledge.

import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { planSafetensors, pyFloat, pythonJsonDumps, SafetensorsWriter, type OutputPlan } from '@w8a16/format';
import { CliError } from '../cli/errors';
import { fillSamples, nextBelow, sampleTable, streamState, type BitsArray } from './prng';
import { specTensors, LLAMA3_VOCAB_SIZE, type LlamaCheckpointSpec } from './specs';
import { writeLlama3TokenizerFiles } from './tokenizer-files';

/** Bumped whenever the bytes a (spec, seed) produces change, so caches made by older code are not reused. */
export const GENERATOR_VERSION = 1;
/** transformers' LlamaConfig.initializer_range: the std of every linear and embedding weight at init. */
export const WEIGHT_STD = 0.02;
/** RMSNorm gains around 1 with some spread (the fixtures use 1 + 0.1·N(0,1) too). */
export const NORM_MEAN = 1;
export const NORM_STD = 0.1;
/**
 * Planted outliers per layer, as in ../shared/fixtures/tiny-llama3-fp16: two input_layernorm channels ×8
 * and one post_attention_layernorm channel ×6 (activation outliers that AWQ-style smoothing targets), and
 * one up_proj row ×10 (a weight row whose int8 step is 10× coarser).
 */
export const OUTLIERS = Object.freeze({
  inputLayernormChannels: 2,
  inputLayernormFactor: 8,
  postAttentionLayernormChannels: 1,
  postAttentionLayernormFactor: 6,
  upProjRowFactor: 10,
});
/** Each write is at most this many bytes: bounds memory whatever the tensor size (a 70B up_proj is 470 MB). */
export const GENERATE_CHUNK_BYTES = 8 << 20;
/** Hugging Face's weight file names (transformers' SAFE_WEIGHTS_NAME / SAFE_WEIGHTS_INDEX_NAME). */
export const HF_WEIGHTS_BASE_NAME = 'model';
export const HF_INDEX_FILE_NAME = 'model.safetensors.index.json';
/** `safetensors.torch.save_file(..., metadata={"format": "pt"})`, as save_pretrained writes it. */
const HF_SAFETENSORS_METADATA = { format: 'pt' };

const TORCH_DTYPE = { F16: 'float16', BF16: 'bfloat16', F32: 'float32' } as const;
const DTYPE_BYTES = { F16: 2, BF16: 2, F32: 4 } as const;

export interface PlantedOutliers {
  readonly layer: number;
  readonly inputLayernormChannels: number[];
  readonly postAttentionLayernormChannels: number[];
  readonly upProjRow: number;
}

export interface GenerateProgress {
  readonly tensor: string;
  readonly tensorsDone: number;
  readonly tensorsTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
}

export interface GenerateOptions {
  /** uint32 seed: same seed and spec, same bytes. */
  readonly seed: number;
  /** Shard the weights into files of about this many bytes (model-0000i-of-0000N.safetensors + index). */
  readonly shardSizeBytes?: number;
  /** Defaults to spec.tokenizer. */
  readonly tokenizer?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: GenerateProgress) => void;
}

export interface GenerateSummary {
  readonly dir: string;
  /** File names written, sorted. */
  readonly files: string[];
  readonly tensors: number;
  readonly weightBytes: number;
  readonly seconds: number;
  readonly outliers: PlantedOutliers[];
}

function sortedObject(entries: [string, unknown][]): Record<string, unknown> {
  return Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** config.json as transformers 4.x writes a LLaMA-3.x config (json.dumps(indent=2, sort_keys=True) + newline). */
export function llamaConfigText(spec: LlamaCheckpointSpec): string {
  const rs = spec.ropeScaling;
  const config = sortedObject([
    ['architectures', ['LlamaForCausalLM']],
    ['attention_bias', false],
    ['attention_dropout', pyFloat(0)],
    ['bos_token_id', spec.bosTokenId],
    ['eos_token_id', spec.eosTokenIds.length === 1 ? spec.eosTokenIds[0] : [...spec.eosTokenIds]],
    ['head_dim', spec.headDim],
    ['hidden_act', 'silu'],
    ['hidden_size', spec.hiddenSize],
    ['initializer_range', WEIGHT_STD],
    ['intermediate_size', spec.intermediateSize],
    ['max_position_embeddings', spec.maxPositionEmbeddings],
    ['mlp_bias', false],
    ['model_type', 'llama'],
    ['num_attention_heads', spec.nHeads],
    ['num_hidden_layers', spec.nLayers],
    ['num_key_value_heads', spec.nKvHeads],
    ['pretraining_tp', 1],
    ['rms_norm_eps', pyFloat(spec.rmsNormEps)],
    [
      'rope_scaling',
      rs === null
        ? null
        : {
            factor: pyFloat(rs.factor),
            high_freq_factor: pyFloat(rs.highFreqFactor),
            low_freq_factor: pyFloat(rs.lowFreqFactor),
            original_max_position_embeddings: rs.originalMaxPositionEmbeddings,
            rope_type: 'llama3',
          },
    ],
    ['rope_theta', pyFloat(spec.ropeTheta)],
    ['tie_word_embeddings', spec.tieWordEmbeddings],
    ['torch_dtype', TORCH_DTYPE[spec.dtype]],
    ['use_cache', true],
    ['vocab_size', spec.vocabSize],
  ]);
  return `${pythonJsonDumps(config, 2)}\n`;
}

/** generation_config.json of a LLaMA-3.x instruct model (sampling defaults as Meta ships them). */
export function generationConfigText(spec: LlamaCheckpointSpec): string {
  const config = sortedObject([
    ['bos_token_id', spec.bosTokenId],
    ['do_sample', true],
    ['eos_token_id', spec.eosTokenIds.length === 1 ? spec.eosTokenIds[0] : [...spec.eosTokenIds]],
    ['temperature', 0.6],
    ['top_p', 0.9],
  ]);
  return `${pythonJsonDumps(config, 2)}\n`;
}

/** The outlier channels and rows planted in each layer for this seed (depends on the seed and shapes only). */
export function plantedOutliers(spec: LlamaCheckpointSpec, seed: number): PlantedOutliers[] {
  const out: PlantedOutliers[] = [];
  for (let layer = 0; layer < spec.nLayers; layer++) {
    const s = streamState(seed, `outliers.layer.${layer}`);
    const distinct = (count: number, n: number): number[] => {
      const picked = new Set<number>();
      while (picked.size < Math.min(count, n)) picked.add(nextBelow(s, n));
      return [...picked].sort((a, b) => a - b);
    };
    out.push({
      layer,
      inputLayernormChannels: distinct(OUTLIERS.inputLayernormChannels, spec.hiddenSize),
      postAttentionLayernormChannels: distinct(OUTLIERS.postAttentionLayernormChannels, spec.hiddenSize),
      upProjRow: nextBelow(s, spec.intermediateSize),
    });
  }
  return out;
}

function checkSpec(spec: LlamaCheckpointSpec, tokenizer: boolean): void {
  const ints: (keyof LlamaCheckpointSpec)[] = ['vocabSize', 'hiddenSize', 'intermediateSize', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'maxPositionEmbeddings'];
  for (const k of ints) {
    const v = spec[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new CliError('E_GENERATE_SPEC', `spec '${spec.name}': ${k} must be a positive integer, found ${JSON.stringify(v)}`);
    }
  }
  if (spec.nHeads % spec.nKvHeads !== 0) {
    throw new CliError('E_GENERATE_SPEC', `spec '${spec.name}': nKvHeads ${spec.nKvHeads} must divide nHeads ${spec.nHeads}`);
  }
  if (!(spec.dtype in DTYPE_BYTES)) throw new CliError('E_GENERATE_SPEC', `spec '${spec.name}': dtype must be F16, BF16 or F32, found ${JSON.stringify(spec.dtype)}`);
  if (tokenizer && spec.vocabSize !== LLAMA3_VOCAB_SIZE) {
    throw new CliError('E_GENERATE_SPEC', `spec '${spec.name}': the LLaMA-3 tokenizer needs vocabSize ${LLAMA3_VOCAB_SIZE}, found ${spec.vocabSize}`);
  }
}

/** One run of elements drawn from one table: [previous end, end). */
interface Segment {
  readonly end: number;
  readonly table: BitsArray;
}

/**
 * Fills `out` (elements [start, start + out.length) of the tensor) from consecutive draws of the tensor's
 * stream, each element through the table of the segment it falls in. Consecutive draws whatever the
 * chunking, so the bytes do not depend on GENERATE_CHUNK_BYTES.
 */
function fillChunk(out: BitsArray, start: number, segments: readonly Segment[], state: Uint32Array): void {
  let at = start;
  const end = start + out.length;
  for (const seg of segments) {
    if (seg.end <= at) continue;
    const stop = Math.min(seg.end, end);
    fillSamples(out.subarray(at - start, stop - start), seg.table, state);
    at = stop;
    if (at === end) return;
  }
}

/** HF's index: {"metadata": {"total_size"}, "weight_map": sorted by tensor name}, indent 2, final newline. */
function hfIndexText(plan: OutputPlan): string {
  const weightMap = new Map<string, string>();
  const names = plan.files.flatMap((f) => f.tensors.map((t) => [t.name, f.fileName] as const));
  for (const [name, file] of names.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) weightMap.set(name, file);
  return `${pythonJsonDumps(new Map<string, unknown>([['metadata', { total_size: plan.totalTensorBytes }], ['weight_map', weightMap]]), 2)}\n`;
}

/**
 * Generates a checkpoint into `dir` (absent or empty). Memory stays at a few chunks whatever the model
 * size. On failure the files written so far are removed (and `dir` too if this call created it).
 */
export async function generateLlamaCheckpoint(dir: string, spec: LlamaCheckpointSpec, opts: GenerateOptions): Promise<GenerateSummary> {
  const started = performance.now();
  const tokenizer = opts.tokenizer ?? spec.tokenizer;
  checkSpec(spec, tokenizer);
  if (!Number.isInteger(opts.seed) || opts.seed < 0 || opts.seed > 0xffffffff) {
    throw new CliError('E_GENERATE_SPEC', `seed must be an integer in 0..2^32-1, found ${opts.seed}`);
  }
  const target = resolve(dir);
  if (existsSync(target) && readdirSync(target).length > 0) {
    throw new CliError('E_TARGET_NOT_EMPTY', `${target}: the generator writes into an absent or empty directory; this one is not empty`);
  }
  const createdDir = !existsSync(target);
  mkdirSync(target, { recursive: true });

  const tensors = specTensors(spec);
  const outliers = plantedOutliers(spec, opts.seed);
  const bytesPer = DTYPE_BYTES[spec.dtype];
  const basePlan = planSafetensors(
    tensors.map((t) => ({ name: t.name, dtype: spec.dtype, shape: t.shape })),
    { baseName: HF_WEIGHTS_BASE_NAME, partFileSizeBytes: opts.shardSizeBytes, metadata: HF_SAFETENSORS_METADATA },
  );
  const plan: OutputPlan = basePlan.indexFileName === undefined ? basePlan : { ...basePlan, indexJson: hfIndexText(basePlan) };

  let writer: SafetensorsWriter | undefined;
  const written: string[] = [];
  try {
    writer = SafetensorsWriter.create(target, plan);
    written.push(...plan.files.map((f) => f.fileName));
    if (plan.indexFileName) written.push(plan.indexFileName);

    const normal = sampleTable(spec.dtype, 0, WEIGHT_STD, 1);
    const upOutlier = sampleTable(spec.dtype, 0, WEIGHT_STD, OUTLIERS.upProjRowFactor);
    const norm = sampleTable(spec.dtype, NORM_MEAN, NORM_STD, 1);
    const inLnOutlier = sampleTable(spec.dtype, NORM_MEAN, NORM_STD, OUTLIERS.inputLayernormFactor);
    const postLnOutlier = sampleTable(spec.dtype, NORM_MEAN, NORM_STD, OUTLIERS.postAttentionLayernormFactor);
    const channelSegments = (channels: number[], outlier: BitsArray, size: number): Segment[] => [
      ...channels.flatMap((c) => [
        { end: c, table: norm },
        { end: c + 1, table: outlier },
      ]),
      { end: size, table: norm },
    ];

    const chunkElems = Math.floor(GENERATE_CHUNK_BYTES / bytesPer);
    const scratch = spec.dtype === 'F32' ? new Uint32Array(chunkElems) : new Uint16Array(chunkElems);
    const bytesTotal = plan.totalTensorBytes;
    let bytesDone = 0;
    for (let ti = 0; ti < tensors.length; ti++) {
      if (opts.signal?.aborted) throw new CliError('E_INTERRUPTED', 'checkpoint generation interrupted');
      const { name, shape } = tensors[ti];
      const cols = shape.length === 2 ? shape[1] : shape[0];
      const rows = shape.length === 2 ? shape[0] : 1;
      const total = rows * cols;
      const layerMatch = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
      const planted = layerMatch ? outliers[Number(layerMatch[1])] : undefined;
      const part = layerMatch?.[2];
      let segments: Segment[];
      if (planted && part === 'input_layernorm.weight') segments = channelSegments(planted.inputLayernormChannels, inLnOutlier, total);
      else if (planted && part === 'post_attention_layernorm.weight') segments = channelSegments(planted.postAttentionLayernormChannels, postLnOutlier, total);
      else if (shape.length === 1) segments = [{ end: total, table: norm }];
      else if (planted && part === 'mlp.up_proj.weight') {
        const r = planted.upProjRow;
        segments = [
          { end: r * cols, table: normal },
          { end: (r + 1) * cols, table: upOutlier },
          { end: total, table: normal },
        ];
      } else segments = [{ end: total, table: normal }];

      const state = streamState(opts.seed, name);
      // Whole rows per chunk (at least one) keep each write a contiguous row range.
      const rowsPerChunk = Math.max(1, Math.floor(chunkElems / cols));
      for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
        const n = Math.min(rowsPerChunk, rows - r0) * cols;
        const buf = n <= scratch.length ? scratch.subarray(0, n) : spec.dtype === 'F32' ? new Uint32Array(n) : new Uint16Array(n);
        fillChunk(buf, r0 * cols, segments, state);
        writer.write(name, new Uint8Array(buf.buffer, buf.byteOffset, n * bytesPer), r0 * cols * bytesPer);
      }
      bytesDone += total * bytesPer;
      opts.onProgress?.({ tensor: name, tensorsDone: ti + 1, tensorsTotal: tensors.length, bytesDone, bytesTotal });
      // Let signals and timers in between tensors.
      await new Promise((r) => setImmediate(r));
    }
    writer.finish();
    writer = undefined;

    writeFileSync(join(target, 'config.json'), llamaConfigText(spec), { flag: 'wx' });
    written.push('config.json');
    writeFileSync(join(target, 'generation_config.json'), generationConfigText(spec), { flag: 'wx' });
    written.push('generation_config.json');
    if (tokenizer) written.push(...writeLlama3TokenizerFiles(target));
    return {
      dir: target,
      files: [...written].sort(),
      tensors: tensors.length,
      weightBytes: plan.totalTensorBytes,
      seconds: (performance.now() - started) / 1000,
      outliers,
    };
  } catch (e) {
    writer?.abort();
    if (createdDir) rmSync(target, { recursive: true, force: true });
    else for (const f of written) rmSync(join(target, f), { force: true });
    throw e;
  }
}
