// `llama3-70b eval`: how far converted checkpoints are from their float source on a token set (top-1
// agreement, KL, perplexity, per variant), printed as a table and optionally written as JSON and HTML.
// Flag parsing, token loading and output only: the work is in eval/.

import { writeFileSync } from 'node:fs';
import type { Backend } from '@w8a16/ascend-runtime';
import { readLlamaConfig } from '@w8a16/format';
import { formatFlagHelp, parseFlags, type FlagSpec } from '../cli/args';
import { CliError } from '../cli/errors';
import { selectBackend } from '../device';
import { readCalibFile } from '../calibrate/calib-data';
import { DEFAULT_EVAL_CHUNK_TOKENS, evaluateCheckpoints, type EvalSequence } from '../eval/evaluate';
import { evalReportJson, formatEvalTable, renderEvalHtml, type TokenSource } from '../eval/report';
import { LlamaTokenizer } from '../tokenizer/tokenizer';
import { parseIdList } from './run';

export const EVAL_FLAGS = {
  model_path: { kind: 'string', help: 'the float source checkpoint (or give it as the first argument)' },
  quant_path: { kind: 'string', repeatable: true, help: 'a converted directory to compare (repeat for more; or give them after the source)' },
  calib_file: { kind: 'string', help: 'JSON Lines token set: "inputs_pretokenized" text (tokenized with the source\'s tokenizer) or "input_ids"' },
  input_ids: { kind: 'string', repeatable: true, help: 'one sequence as comma-separated token ids, e.g. 1,162,38 (repeat for more)' },
  input_texts: { kind: 'list', help: 'sequences given as text (tokenized with the source\'s tokenizer)' },
  num_samples: { kind: 'int', help: 'use only the first N sequences of --calib_file' },
  max_seq_len: { kind: 'int', help: 'cut every sequence to its first N tokens' },
  ppl: { kind: 'switch', help: 'show perplexity columns for id input too (always shown for text)' },
  json: { kind: 'string', help: 'write the numbers to this JSON file' },
  html: { kind: 'string', help: 'write a self-contained HTML report (table + per-layer weight-error chart) to this file' },
  weight_error: { kind: 'switch', help: 'measure each quantized linear\'s weight error against the source (implied by --html)' },
  max_prefill_tokens: { kind: 'int', help: `positions per forward call (default ${DEFAULT_EVAL_CHUNK_TOKENS})` },
  threads: { kind: 'int', help: 'threads per operation (default: all cores)' },
  kernels: { kind: 'string', choices: ['native', 'js', 'auto'], help: 'host kernels (default auto: native when built, else js)' },
  device_type: { kind: 'string', choices: ['cpu', 'npu', 'auto'], help: 'npu: the Ascend backend (CANN libraries); cpu: the host; auto (default): npu when its libraries are found, else cpu' },
  help: { kind: 'switch', help: 'show this help' },
} as const satisfies Record<string, FlagSpec>;

export const EVAL_USAGE = `usage: llama3-70b eval --model_path FLOAT_DIR --quant_path DIR [--quant_path DIR ...] (--calib_file F | --input_ids 1,2,3 ...)
       llama3-70b eval FLOAT_DIR DIR [DIR ...] (--calib_file F | --input_ids 1,2,3 ...)

Runs the float source and every converted directory teacher-forced over the same token sequences and compares
each position's next-token distribution: top-1 agreement with the float model, mean and max KL(float ‖ quant),
and perplexity of both. Each directory is labelled from its quant_model_description.json (RTN, m3, +C8); a C8
directory is also run with the float KV cache ("[f32 KV]") to separate the weight error from the KV-cache error.

flags:
${formatFlagHelp(EVAL_FLAGS)}`;

export interface EvalCliOptions {
  modelPath: string;
  quantPaths: string[];
  calibFile: string | undefined;
  ids: number[][] | undefined;
  texts: string[] | undefined;
  numSamples: number | undefined;
  maxSeqLen: number | undefined;
  ppl: boolean;
  json: string | undefined;
  html: string | undefined;
  weightError: boolean;
  chunkTokens: number;
  threads: number | undefined;
  kernels: 'native' | 'js' | 'auto';
  deviceType: 'cpu' | 'npu' | 'auto';
}

function positiveInt(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || v < 1) throw new CliError('E_USAGE', `--${name} must be an integer >= 1, got ${String(v)}`);
  return v;
}

export function parseEvalArgs(argv: readonly string[]): EvalCliOptions | 'help' {
  const { flags, positionals } = parseFlags(argv, EVAL_FLAGS);
  if (flags.get('help') === true) return 'help';
  let modelPath = flags.get('model_path') as string | undefined;
  const quantPaths = [...((flags.get('quant_path') as string[] | undefined) ?? [])];
  if (modelPath === undefined) modelPath = positionals.shift();
  quantPaths.push(...positionals);
  if (!modelPath) throw new CliError('E_USAGE', 'missing the float source: llama3-70b eval --model_path FLOAT_DIR --quant_path DIR');
  if (quantPaths.length === 0) throw new CliError('E_USAGE', 'missing a converted directory to compare: --quant_path DIR (repeatable)');
  const calibFile = flags.get('calib_file') as string | undefined;
  const rawIds = flags.get('input_ids') as string[] | undefined;
  const texts = flags.get('input_texts') as string[] | undefined;
  const given = [calibFile, rawIds, texts].filter((x) => x !== undefined).length;
  if (given !== 1) throw new CliError('E_USAGE', `give the token set once: --calib_file, --input_ids or --input_texts (got ${given})`);
  const numSamples = positiveInt(flags.get('num_samples'), 'num_samples');
  if (numSamples !== undefined && calibFile === undefined) throw new CliError('E_USAGE', '--num_samples applies to --calib_file only');
  const html = flags.get('html') as string | undefined;
  return {
    modelPath,
    quantPaths,
    calibFile,
    ids: rawIds?.map(parseIdList),
    texts,
    numSamples,
    maxSeqLen: positiveInt(flags.get('max_seq_len'), 'max_seq_len'),
    ppl: flags.get('ppl') === true,
    json: flags.get('json') as string | undefined,
    html,
    weightError: flags.get('weight_error') === true || html !== undefined,
    chunkTokens: positiveInt(flags.get('max_prefill_tokens'), 'max_prefill_tokens') ?? DEFAULT_EVAL_CHUNK_TOKENS,
    threads: positiveInt(flags.get('threads'), 'threads'),
    kernels: (flags.get('kernels') as EvalCliOptions['kernels'] | undefined) ?? 'auto',
    deviceType: (flags.get('device_type') as EvalCliOptions['deviceType'] | undefined) ?? 'auto',
  };
}

/** The token sequences and where they came from; text is tokenized with the float source's tokenizer. */
export function loadEvalSequences(opts: EvalCliOptions): { sequences: EvalSequence[]; source: TokenSource } {
  const { config } = readLlamaConfig(opts.modelPath);
  let sequences: EvalSequence[];
  let source: TokenSource;
  if (opts.calibFile !== undefined) {
    const tok = LlamaTokenizer.fromDir(opts.modelPath);
    let textLines = 0;
    const counting = tok && { encode: (t: string) => (textLines++, tok.encode(t)) };
    const samples = readCalibFile(opts.calibFile, config.vocabSize, counting);
    sequences = samples.map((s) => ({ ids: s.ids, source: `${opts.calibFile}:${s.line}` }));
    if (opts.numSamples !== undefined) sequences = sequences.slice(0, opts.numSamples);
    source = { kind: 'calib_file', path: opts.calibFile, text: textLines === samples.length };
  } else if (opts.ids !== undefined) {
    sequences = opts.ids.map((ids, i) => ({ ids: Int32Array.from(ids), source: `--input_ids #${i}` }));
    source = { kind: 'input_ids', text: false };
  } else {
    const tok = LlamaTokenizer.fromDir(opts.modelPath);
    if (!tok) throw new CliError('E_NO_TOKENIZER', `${opts.modelPath} has no tokenizer.json, so --input_texts cannot be tokenized; give --input_ids or --calib_file with input_ids`);
    sequences = opts.texts!.map((t, i) => ({ ids: Int32Array.from(tok.encode(t)), source: `--input_texts #${i}` }));
    source = { kind: 'input_texts', text: true };
  }
  if (opts.maxSeqLen !== undefined) sequences = sequences.map((s) => ({ ...s, ids: s.ids.subarray(0, opts.maxSeqLen) }));
  return { sequences, source };
}

function backendFor(opts: EvalCliOptions): Backend {
  return selectBackend({ deviceType: opts.deviceType, threads: opts.threads, kernels: opts.kernels, log: (m) => process.stderr.write(`${m}\n`) });
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseEvalArgs(argv);
  if (opts === 'help') {
    process.stdout.write(`${EVAL_USAGE}\n`);
    return 0;
  }
  const { sequences, source } = loadEvalSequences(opts);
  const backend = backendFor(opts);
  try {
    const report = evaluateCheckpoints({
      modelPath: opts.modelPath,
      quantPaths: opts.quantPaths,
      sequences,
      backend,
      chunkTokens: opts.chunkTokens,
      weightError: opts.weightError,
      onInfo: (m) => process.stderr.write(`${m}\n`),
    });
    const showPpl = opts.ppl || source.text;
    process.stdout.write(`${formatEvalTable(report, source, showPpl)}\n`);
    if (opts.json !== undefined) {
      writeFileSync(opts.json, `${JSON.stringify(evalReportJson(report, source), null, 2)}\n`);
      process.stderr.write(`wrote ${opts.json}\n`);
    }
    if (opts.html !== undefined) {
      writeFileSync(opts.html, renderEvalHtml(report, source, showPpl));
      process.stderr.write(`wrote ${opts.html}\n`);
    }
    return 0;
  } finally {
    backend.dispose();
  }
}
