// `llama3-70b run <dir>`: generate from a W8A16 (or float) checkpoint through the paged KV cache, with run_pa's
// flags. Tokens stream to stdout as they come, then one line of prefill/decode speed; `--json` prints one object
// per prompt instead. Device selection, prompt handling and printing only: the work is in model/ and generate/.

import type { Backend, KvCacheDType } from '@w8a16/ascend-runtime';
import { readLlamaConfig } from '@w8a16/format';
import { kvCacheBytes } from '@w8a16/kvcache-int8';
import { formatFlagHelp, parseFlags, type FlagSpec, type ParsedFlags } from '../cli/args';
import { CliError } from '../cli/errors';
import { selectBackend } from '../device';
import { formatBytes } from '../cli/format';
import { generate, tokensPerSecond, type GenerateResult, type PhaseTiming, type SequenceResult } from '../generate/generate';
import { LlamaModel } from '../model/llama';
import { loadLlamaWeights, type KvCacheChoice, type LlamaWeights } from '../model/load';
import { defaultThreadsPerRank, startTensorParallel, type TensorParallelRun } from '../parallel/runtime';
import { LlamaTokenizer, readGenerationEos, type StreamDecoder } from '../tokenizer/tokenizer';

/** run_pa's defaults (examples/run_pa.py). */
export const RUN_DEFAULTS = Object.freeze({
  inputText: "What's deep learning?",
  maxInputLength: 1024,
  maxOutputLength: 20,
  blockSize: 128,
});

/**
 * Prompt tokens one prefill step carries by default: longer batches are prefilled in chunks. Bounds the activation
 * buffers (the MLP's two [T, intermediate] f32 buffers are 2·2048·28672·4 B = 470 MB on a 70B-shaped model).
 */
export const DEFAULT_PREFILL_TOKEN_CAP = 2048;

export const RUN_FLAGS = {
  model_path: { kind: 'string', help: 'checkpoint directory (or give it as the first argument)' },
  input_texts: { kind: 'list', help: `prompts, batched together (default: "${RUN_DEFAULTS.inputText}")` },
  input_ids: { kind: 'string', repeatable: true, help: 'one prompt as comma-separated token ids, e.g. 1,162,38 (repeat for more prompts)' },
  max_input_length: { kind: 'int', help: `longest prompt accepted, in tokens (default ${RUN_DEFAULTS.maxInputLength})` },
  max_output_length: { kind: 'int', help: `new tokens per prompt at most (default ${RUN_DEFAULTS.maxOutputLength})` },
  block_size: { kind: 'int', help: `tokens per KV-cache block (default ${RUN_DEFAULTS.blockSize})` },
  max_batch_size: { kind: 'int', help: 'prompts decoded together (default: all of them)' },
  num_blocks: { kind: 'int', help: 'KV-cache blocks per layer (default: enough for max_batch_size full sequences)' },
  max_prefill_tokens: { kind: 'int', help: `prompt tokens per prefill step (default: the batch, at most ${DEFAULT_PREFILL_TOKEN_CAP})` },
  is_chat_model: { kind: 'switch', help: "wrap each text in the checkpoint's chat template (tokenizer_config.json chat_template; the LLaMA-3 Instruct format when it has none)" },
  temperature: { kind: 'number', help: 'sampling temperature (default 0: greedy)' },
  top_k: { kind: 'int', help: 'sample among the k most likely tokens (0: off)' },
  top_p: { kind: 'number', help: 'sample within the top-p probability mass (1: off)' },
  seed: { kind: 'int', help: 'seed of the sampling stream (default: random, printed)' },
  ignore_eos: { kind: 'switch', help: 'do not stop at eos / <|eot_id|> (benchmarks)' },
  threads: { kind: 'int', help: 'threads per operation, per rank (default: all cores, divided among the ranks)' },
  world_size: {
    kind: 'int',
    help: 'tensor-parallel ranks, weights split as ATB-Models does (default 1): on the NPU one device per rank (0..N-1) with HCCL all-reduce, on the host one thread per rank',
  },
  kernels: { kind: 'string', choices: ['native', 'js', 'auto'], help: 'host kernels (default auto: native when built, else js)' },
  device_type: { kind: 'string', choices: ['cpu', 'npu', 'auto'], help: 'npu: the Ascend backend (CANN libraries); cpu: the host; auto (default): npu when its libraries are found, else cpu' },
  kv_cache_dtype: {
    kind: 'string',
    choices: ['auto', 'float', 'int8'],
    help: "KV-cache storage: int8 uses the checkpoint's C8 scales (an error without them); float ignores them and keeps the activation dtype (f32 on the host, f16 on the NPU); auto (default): int8 when the checkpoint has C8 scales, else float",
  },
  json: { kind: 'switch', help: 'print one JSON object per prompt per line instead of streaming' },
  help: { kind: 'switch', help: 'show this help' },
} as const satisfies Record<string, FlagSpec>;

export const RUN_USAGE = `usage: llama3-70b run <dir> [flags]

Generates text from a converted W8A16 directory (quant_model_description.json + int8 safetensors) or a plain
float Hugging Face checkpoint, batching the prompts through a paged KV cache as ATB-Models' run_pa does.
Greedy by default; prompts longer than --max_input_length are an error.

flags:
${formatFlagHelp(RUN_FLAGS)}`;

export interface RunOptions {
  dir: string;
  texts: string[] | undefined;
  ids: number[][] | undefined;
  maxInputLength: number;
  maxOutputLength: number;
  blockSize: number;
  maxBatchSize: number | undefined;
  numBlocks: number | undefined;
  maxPrefillTokens: number | undefined;
  isChatModel: boolean;
  temperature: number;
  topK: number | undefined;
  topP: number | undefined;
  seed: number | undefined;
  ignoreEos: boolean;
  threads: number | undefined;
  worldSize: number;
  kernels: 'native' | 'js' | 'auto';
  deviceType: 'cpu' | 'npu' | 'auto';
  kvCacheDType: 'auto' | 'float' | 'int8';
  json: boolean;
}

function positive(flags: ParsedFlags, name: string, dflt: number | undefined, min = 1): number | undefined {
  const v = flags.get(name);
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || v < min) throw new CliError('E_USAGE', `--${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

/** Parses `--input_ids 1,162,38`: comma-separated non-negative integers. */
export function parseIdList(raw: string): number[] {
  const parts = raw.split(',').map((s) => s.trim());
  if (parts.some((p) => !/^\d+$/.test(p))) throw new CliError('E_USAGE', `--input_ids expects comma-separated token ids like 1,162,38, got '${raw}'`);
  return parts.map(Number);
}

export function parseRunArgs(argv: readonly string[]): RunOptions | 'help' {
  const { flags, positionals } = parseFlags(argv, RUN_FLAGS);
  if (flags.get('help') === true) return 'help';
  const fromFlag = flags.get('model_path') as string | undefined;
  if (positionals.length > 1 || (fromFlag !== undefined && positionals.length > 0)) {
    throw new CliError('E_USAGE', `expected one checkpoint directory, got ${[...positionals, ...(fromFlag ? [fromFlag] : [])].join(', ')}`);
  }
  const dir = fromFlag ?? positionals[0];
  if (!dir) throw new CliError('E_USAGE', 'missing the checkpoint directory: llama3-70b run <dir>');
  const texts = flags.get('input_texts') as string[] | undefined;
  const rawIds = flags.get('input_ids') as string[] | undefined;
  if (texts && rawIds) throw new CliError('E_USAGE', '--input_texts and --input_ids are exclusive: give prompts as text or as ids');
  const temperature = (flags.get('temperature') as number | undefined) ?? 0;
  if (temperature < 0) throw new CliError('E_USAGE', `--temperature must be >= 0, got ${temperature}`);
  const topP = flags.get('top_p') as number | undefined;
  if (topP !== undefined && !(topP > 0 && topP <= 1)) throw new CliError('E_USAGE', `--top_p must be in (0, 1], got ${topP}`);
  const seed = flags.get('seed') as number | undefined;
  if (seed !== undefined && (seed < 0 || seed > 0xffffffff)) throw new CliError('E_USAGE', `--seed must be in 0..4294967295, got ${seed}`);
  return {
    dir,
    texts,
    ids: rawIds?.map(parseIdList),
    maxInputLength: positive(flags, 'max_input_length', RUN_DEFAULTS.maxInputLength)!,
    maxOutputLength: positive(flags, 'max_output_length', RUN_DEFAULTS.maxOutputLength)!,
    blockSize: positive(flags, 'block_size', RUN_DEFAULTS.blockSize)!,
    maxBatchSize: positive(flags, 'max_batch_size', undefined),
    numBlocks: positive(flags, 'num_blocks', undefined),
    maxPrefillTokens: positive(flags, 'max_prefill_tokens', undefined),
    isChatModel: flags.get('is_chat_model') === true,
    temperature,
    topK: positive(flags, 'top_k', undefined, 0),
    topP,
    seed,
    ignoreEos: flags.get('ignore_eos') === true,
    threads: positive(flags, 'threads', undefined),
    worldSize: positive(flags, 'world_size', 1)!,
    kernels: (flags.get('kernels') as RunOptions['kernels'] | undefined) ?? 'auto',
    deviceType: (flags.get('device_type') as RunOptions['deviceType'] | undefined) ?? 'auto',
    kvCacheDType: (flags.get('kv_cache_dtype') as RunOptions['kvCacheDType'] | undefined) ?? 'auto',
    json: flags.get('json') === true,
  };
}

/** Rank 0's backend (the only one when --world_size is 1): the NPU's device 0, or the host. */
function backendFor(opts: RunOptions): Backend {
  return selectBackend({
    deviceType: opts.deviceType,
    threads: opts.threads ?? (opts.worldSize > 1 ? defaultThreadsPerRank(opts.worldSize) : undefined),
    kernels: opts.kernels,
    log: (m) => process.stderr.write(`${m}\n`),
  });
}

/** The prompts as token ids, with their display text; errors name the prompt and its length. */
function preparePrompts(opts: RunOptions, tokenizer: LlamaTokenizer | undefined): { ids: number[][]; shown: string[] } {
  let ids: number[][];
  let shown: string[];
  if (opts.ids) {
    ids = opts.ids;
    shown = ids.map((p) => p.join(','));
  } else {
    const texts = opts.texts ?? [RUN_DEFAULTS.inputText];
    if (!tokenizer) {
      throw new CliError('E_NO_TOKENIZER', `${opts.dir} has no tokenizer.json, so text prompts cannot be tokenized; give token ids with --input_ids 1,162,38`);
    }
    ids = texts.map((t) => (opts.isChatModel ? tokenizer.encodeChat(t) : tokenizer.encode(t)));
    shown = texts;
  }
  ids.forEach((p, i) => {
    if (p.length > opts.maxInputLength) {
      throw new CliError('E_PROMPT_TOO_LONG', `prompt ${i} is ${p.length} tokens long; --max_input_length is ${opts.maxInputLength}`);
    }
  });
  return { ids, shown };
}

/**
 * Prints each batch's answers in prompt order while they are generated: the first unfinished prompt of the batch
 * streams live; later prompts are buffered and printed (then followed live) when the ones before them finish.
 */
class StreamPrinter {
  private order: number[] = [];
  private cursor = 0;
  private readonly buffered = new Map<number, string>();
  private readonly finished = new Set<number>();
  private readonly decoders = new Map<number, StreamDecoder>();

  constructor(
    private readonly shown: string[],
    private readonly tokenizer: LlamaTokenizer | undefined,
    private readonly write: (s: string) => void,
  ) {}

  batchStart(indices: readonly number[]): void {
    this.order = [...indices];
    this.cursor = 0;
    for (const i of indices) {
      this.buffered.set(i, '');
      if (this.tokenizer) this.decoders.set(i, this.tokenizer.streamDecoder());
    }
    this.header(this.order[0]);
  }

  token(i: number, id: number): void {
    const dec = this.decoders.get(i);
    const piece = dec ? dec.push(id) : `${this.buffered.get(i) === '' ? '' : ' '}${id}`;
    this.emit(i, piece);
  }

  done(i: number): void {
    const dec = this.decoders.get(i);
    if (dec) this.emit(i, dec.flush());
    this.finished.add(i);
    while (this.cursor < this.order.length && this.finished.has(this.order[this.cursor])) {
      this.write('\n');
      this.cursor++;
      if (this.cursor < this.order.length) {
        const next = this.order[this.cursor];
        this.header(next);
        this.write(this.buffered.get(next)!);
      }
    }
  }

  private emit(i: number, piece: string): void {
    if (piece === '') return;
    this.buffered.set(i, this.buffered.get(i)! + piece);
    if (this.order[this.cursor] === i) this.write(piece);
  }

  private header(i: number): void {
    this.write(`Question[${i}]: ${this.shown[i]}\nAnswer[${i}]: `);
  }
}

/** What the run's KV cache holds in memory, from the cache the model allocated. */
export interface KvCacheFootprint {
  dtype: KvCacheDType;
  numBlocks: number;
  blockSize: number;
  layers: number;
  /** Tensor-parallel ranks, each holding an equal share of the KV heads (all of them when 1). */
  ranks: number;
  /** K and V storage of every layer and rank: numBlocks · blockSize · layers · 2 · nKvHeads · headDim · element bytes. */
  storageBytes: number;
  /** The C8 scale and offset arrays (f32, k and v, per layer and rank) the int8 cache dequantizes with; 0 for a float cache. */
  quantBytes: number;
  /** storageBytes + quantBytes. */
  bytes: number;
}

/**
 * The KV cache `model` allocated: the block pool and dtype of its PagedKvCache (the numbers createKvCache was given)
 * and the C8 arrays its layers hold. The backend does not report allocation sizes, so the storage bytes are the
 * pool's shape times the element size (kvcache-int8's kvCacheBytes); under tensor parallelism rank 0's share
 * times the ranks (every rank holds the same number of KV heads, split or replicated).
 */
export function kvCacheFootprint(model: LlamaModel, ranks = 1): KvCacheFootprint {
  const w = model.weights;
  const c = w.config;
  const { numBlocks, blockSize, dtype } = model.cache;
  const layers = w.layers.length;
  const perRank = kvCacheBytes(numBlocks, blockSize, layers, w.shard?.nKvHeads ?? c.nKvHeads, c.headDim, dtype);
  const quantPerRank = w.layers.reduce((sum, L) => {
    const q = L.kvQuant;
    return q && dtype === 'int8' ? sum + q.kScale.byteLength + q.kOffset.byteLength + q.vScale.byteLength + q.vOffset.byteLength : sum;
  }, 0);
  const storageBytes = perRank * ranks;
  const quantBytes = quantPerRank * ranks;
  return { dtype, numBlocks, blockSize, layers, ranks, storageBytes, quantBytes, bytes: storageBytes + quantBytes };
}

function phase(p: PhaseTiming): { tokens: number; seconds: number; tokens_per_second: number } {
  return { tokens: p.tokens, seconds: Number(p.seconds.toFixed(6)), tokens_per_second: Number(tokensPerSecond(p).toFixed(3)) };
}

function jsonLine(s: SequenceResult, r: GenerateResult, kv: KvCacheFootprint, tokenizer: LlamaTokenizer | undefined, text: string | undefined): string {
  const b = r.batches[s.batch];
  const obj: Record<string, unknown> = {
    index: s.promptIndex,
    ...(text !== undefined ? { input_text: text } : {}),
    prompt_ids: s.promptIds,
    output_ids: s.outputIds,
    ...(tokenizer ? { text: tokenizer.decode(s.outputIds) } : {}),
    finish_reason: s.finishReason,
    batch: s.batch,
    batch_size: b.promptIndices.length,
    prefill: phase(b.prefill),
    decode: { ...phase(b.decode), steps: b.decode.steps },
    kv_cache: {
      dtype: kv.dtype,
      bytes: kv.bytes,
      storage_bytes: kv.storageBytes,
      quant_bytes: kv.quantBytes,
      num_blocks: kv.numBlocks,
      block_size: kv.blockSize,
      layers: kv.layers,
      ranks: kv.ranks,
    },
    ...(r.seed !== undefined ? { seed: r.seed } : {}),
  };
  return JSON.stringify(obj);
}

function summaryLine(r: GenerateResult, backend: Backend, w: LlamaWeights, kv: KvCacheFootprint, worldSize: number): string {
  const f = (p: PhaseTiming) => `${p.tokens} tokens in ${p.seconds.toFixed(3)} s, ${tokensPerSecond(p).toFixed(1)} tokens/s`;
  const kind = w.summary.format === 'w8a16' ? `W8A16 (${w.summary.linearsW8A16} int8 linears)` : 'float';
  const seed = r.seed !== undefined ? `, seed ${r.seed}` : '';
  const npu = backend.info.name === 'ascend' && 'deviceId' in backend ? (backend.deviceId as number) : undefined;
  const where =
    npu !== undefined && worldSize > 1
      ? `${worldSize} tensor-parallel ranks on the Ascend backend (NPUs ${npu}..${npu + worldSize - 1}, HCCL all-reduce)`
      : `${backend.info.threads} thread(s)${worldSize > 1 ? `, ${worldSize} tensor-parallel ranks` : ''}`;
  return `prefill: ${f(r.prefill)} | decode: ${f(r.decode)} | ${backend.info.name} ${backend.info.kernels}, ${where}, ${kind}, kv ${kv.dtype} ${formatBytes(kv.bytes)}${seed}`;
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseRunArgs(argv);
  if (opts === 'help') {
    process.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  const backend = backendFor(opts);
  let weights: LlamaWeights | undefined;
  let model: LlamaModel | undefined;
  let tp: TensorParallelRun | undefined;
  try {
    const tokenizer = LlamaTokenizer.fromDir(opts.dir);
    const { ids: prompts, shown } = preparePrompts(opts, tokenizer);
    const t0 = performance.now();
    const c = readLlamaConfig(opts.dir).config;
    const longest = Math.max(...prompts.map((p) => p.length));
    if (longest + opts.maxOutputLength > c.maxPositionEmbeddings) {
      throw new CliError('E_PROMPT_TOO_LONG', `a prompt of ${longest} tokens plus ${opts.maxOutputLength} new ones exceeds max_position_embeddings ${c.maxPositionEmbeddings} of ${opts.dir}`);
    }
    const maxBatch = Math.min(opts.maxBatchSize ?? prompts.length, prompts.length);
    const batchTokens = prompts.map((p) => p.length).sort((a, b) => b - a).slice(0, maxBatch).reduce((a, b) => a + b, 0);
    const maxPrefill = opts.maxPrefillTokens ?? Math.min(batchTokens, DEFAULT_PREFILL_TOKEN_CAP);
    const modelOptions = {
      maxTokensPerStep: Math.max(maxPrefill, maxBatch),
      maxSeqsPerStep: maxBatch,
      maxContext: longest + opts.maxOutputLength,
      blockSize: opts.blockSize,
      numBlocks: opts.numBlocks,
      exhaustedHint: '--num_blocks (or lower --max_batch_size)',
    };
    const logger = { warn: (m: string) => process.stderr.write(`warning: ${m}\n`) };
    const kvCache: KvCacheChoice = opts.kvCacheDType;
    try {
      if (opts.worldSize > 1) {
        tp = await startTensorParallel({
          dir: opts.dir,
          worldSize: opts.worldSize,
          backend,
          model: modelOptions,
          load: { logger, kvCache },
          threadsPerRank: backend.info.threads,
          kernels: opts.kernels,
          // Rank 0 on the NPU (npu, or auto with the libraries found): every rank on its own NPU.
          ascend: backend.info.name === 'ascend' ? {} : undefined,
        });
        weights = tp.weights;
        model = tp.model;
      } else {
        weights = loadLlamaWeights(opts.dir, backend, { logger, kvCache });
        model = new LlamaModel(weights, backend, modelOptions);
      }
    } catch (e) {
      // The loader's E_USAGE is the int8 cache asked of a checkpoint without C8 tensors: name the flag that asked.
      if (e instanceof CliError && e.code === 'E_USAGE' && opts.kvCacheDType === 'int8') throw new CliError('E_USAGE', `--kv_cache_dtype int8: ${e.message}`);
      throw e;
    }
    const kv = kvCacheFootprint(model, opts.worldSize);
    if (!opts.json) {
      const ranks = opts.worldSize > 1 ? ` (rank 0's share of ${opts.worldSize} ranks)` : '';
      process.stderr.write(
        `loaded ${opts.dir}: ${weights.summary.format === 'w8a16' ? 'W8A16' : 'float'}, ${c.nLayers} layers, hidden ${c.hiddenSize}, vocab ${c.vocabSize}, ` +
          `${formatBytes(weights.summary.weightBytes)} of weights${ranks} in ${((performance.now() - t0) / 1000).toFixed(2)} s\n`,
      );
    }
    const stopIds = tokenizer ? tokenizer.stopIds(c.eosTokenIds, readGenerationEos(opts.dir)) : [...new Set([...c.eosTokenIds, ...readGenerationEos(opts.dir)])];
    const out = (s: string) => process.stdout.write(s);
    const printer = opts.json ? undefined : new StreamPrinter(shown, tokenizer, out);
    const result = generate(model, prompts, {
      maxOutputLength: opts.maxOutputLength,
      sampling: { temperature: opts.temperature, topK: opts.topK, topP: opts.topP, seed: opts.seed },
      stopIds,
      ignoreEos: opts.ignoreEos,
      maxBatchSize: maxBatch,
      maxPrefillTokens: maxPrefill,
      onBatchStart: printer && ((ix) => printer.batchStart(ix)),
      onToken: printer && ((i, id) => printer.token(i, id)),
      onSequenceDone: printer && ((s) => printer.done(s.promptIndex)),
    });
    if (opts.json) {
      for (const s of result.sequences) out(`${jsonLine(s, result, kv, tokenizer, opts.ids ? undefined : shown[s.promptIndex])}\n`);
    } else {
      out(`${summaryLine(result, backend, weights, kv, opts.worldSize)}\n`);
    }
    return 0;
  } finally {
    if (tp) await tp.close();
    else {
      model?.dispose();
      weights?.free();
    }
    backend.dispose();
  }
}
