// `eval`'s work: teacher-forced passes of the float source and of each converted variant over the same token
// sequences, compared position by position (top-1, KL(float‖variant), NLL of the actual next token). One model
// is loaded at a time; the float logits wait in a LogitSpool. No printing: the command formats the report.

import type { Backend, KvCacheDType } from '@w8a16/ascend-runtime';
import type { LlamaConfig } from '@w8a16/format';
import { CliError } from '../cli/errors';
import { LlamaModel } from '../model/llama';
import { loadLlamaWeights, type LlamaWeights } from '../model/load';
import { compareRows, emptyTotals, mergeTotals, refRowStats, type CompareTotals, type RefRowStats } from './metrics';
import { LogitSpool } from './spool';
import { describeQuantDir, planVariantRuns, type QuantScheme, type VariantRun } from './variants';
import { weightQuantErrors, type WeightErrorReport } from './weight-error';

/**
 * Positions one forward call carries (longer sequences go in chunks through the KV cache, which gives the same
 * logits). Bounds the all-positions logits buffer: 256 rows of a 128256 vocabulary are 131 MB of f32.
 */
export const DEFAULT_EVAL_CHUNK_TOKENS = 256;

export interface EvalSequence {
  ids: Int32Array;
  /** Where it came from, e.g. `calib.jsonl:3` or `--input_ids #1`. */
  source: string;
}

export interface EvalOptions {
  modelPath: string;
  quantPaths: readonly string[];
  sequences: readonly EvalSequence[];
  backend: Backend;
  /** Positions per forward call (default DEFAULT_EVAL_CHUNK_TOKENS). */
  chunkTokens?: number;
  /** Also measure every quantized linear's weight error against the source (reads both checkpoints once more). */
  weightError?: boolean;
  /** Passed to LogitSpool (tests force the file path). */
  spoolMemoryLimitBytes?: number;
  onInfo?: (message: string) => void;
}

export interface SequenceResult {
  index: number;
  source: string;
  tokens: number;
  top1Agreement: number;
  klMean: number;
  klMax: number;
  /** KL at the sequence's last position (what forward-w8a16.json's `kl_last_fp32_to_w8a16` measures). */
  klLast: number;
  /** Mean next-token NLL of the variant and of the float model; null for a one-token sequence. */
  nllMean: number | null;
  nllMeanFloat: number | null;
}

export interface VariantResult {
  label: string;
  dir: string;
  scheme: QuantScheme;
  /** The KV cache this run used (int8 = C8). */
  kvCache: KvCacheDType;
  positions: number;
  predicted: number;
  top1Agreement: number;
  klMean: number;
  klMax: number;
  klMaxAt: { sequence: number; position: number };
  nllMean: number | null;
  ppl: number | null;
  pplFloat: number | null;
  seconds: number;
  sequences: SequenceResult[];
}

export interface EvalReport {
  modelPath: string;
  /** The reference's own scheme (FLOAT for a float source). */
  reference: QuantScheme;
  sequences: number;
  positions: number;
  /** Positions with a known next token (the perplexity denominator). */
  predicted: number;
  float: { nllMean: number | null; ppl: number | null; seconds: number };
  variants: VariantResult[];
  weightErrors: WeightErrorReport[] | undefined;
  /** The float logits went through a temporary file of this many bytes (0: memory). */
  spoolFileBytes: number;
}

/** Architecture keys that must agree between the float source and a variant. */
const SHAPE_KEYS = ['vocabSize', 'hiddenSize', 'intermediateSize', 'nLayers', 'nHeads', 'nKvHeads', 'headDim'] as const satisfies readonly (keyof LlamaConfig)[];

function checkSameShape(ref: LlamaConfig, got: LlamaConfig, refDir: string, dir: string): void {
  for (const k of SHAPE_KEYS) {
    if (ref[k] !== got[k]) throw new CliError('E_EVAL_MISMATCH', `${dir}: config.json ${k} = ${got[k]}, but the float source ${refDir} has ${ref[k]}; compare a checkpoint with its own source`);
  }
}

function checkSequences(seqs: readonly EvalSequence[], c: LlamaConfig, dir: string): void {
  if (seqs.length === 0) throw new CliError('E_USAGE', 'eval needs at least one token sequence (--calib_file or --input_ids)');
  for (const s of seqs) {
    if (s.ids.length === 0) throw new CliError('E_USAGE', `${s.source}: empty token sequence`);
    if (s.ids.length > c.maxPositionEmbeddings) {
      throw new CliError('E_PROMPT_TOO_LONG', `${s.source}: ${s.ids.length} tokens exceed max_position_embeddings ${c.maxPositionEmbeddings} of ${dir}`);
    }
    const bad = s.ids.findIndex((id) => id < 0 || id >= c.vocabSize);
    if (bad >= 0) throw new CliError('E_USAGE', `${s.source}: token ${bad} is ${s.ids[bad]}, outside the vocabulary [0, ${c.vocabSize}) of ${dir}`);
  }
}

/**
 * Runs `weights` teacher-forced over every sequence, `chunk` positions per forward call, handing each chunk's
 * logits `(n, vocab)` to `onChunk` (the buffer is reused afterwards).
 */
function teacherForced(
  weights: LlamaWeights,
  backend: Backend,
  seqs: readonly EvalSequence[],
  chunk: number,
  onChunk: (seq: number, pos0: number, n: number, logits: Float32Array) => void,
): void {
  const longest = Math.max(...seqs.map((s) => s.ids.length));
  const step = Math.min(chunk, longest);
  const vocab = weights.config.vocabSize;
  const model = new LlamaModel(weights, backend, { maxTokensPerStep: step, maxSeqsPerStep: 1, maxContext: longest });
  const host = new Float32Array(step * vocab);
  try {
    seqs.forEach((s, si) => {
      for (let pos0 = 0; pos0 < s.ids.length; pos0 += step) {
        const n = Math.min(step, s.ids.length - pos0);
        const out = model.forward([0], s.ids.subarray(pos0, pos0 + n), [0, n], true);
        onChunk(si, pos0, n, backend.download(out, host.subarray(0, n * vocab)));
      }
      model.release(0);
    });
  } finally {
    model.dispose();
  }
}

const mean = (sum: number, n: number): number | null => (n > 0 ? sum / n : null);

function sequenceResult(index: number, s: EvalSequence, t: CompareTotals, klLast: number): SequenceResult {
  return {
    index,
    source: s.source,
    tokens: s.ids.length,
    top1Agreement: t.top1Agree / t.positions,
    klMean: t.klSum / t.positions,
    klMax: t.klMax,
    klLast,
    nllMean: mean(t.nllSum, t.predicted),
    nllMeanFloat: mean(t.nllSumRef, t.predicted),
  };
}

/** Compares every converted directory with the float source on the sequences. */
export function evaluateCheckpoints(opts: EvalOptions): EvalReport {
  const be = opts.backend;
  const chunk = opts.chunkTokens ?? DEFAULT_EVAL_CHUNK_TOKENS;
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new CliError('E_USAGE', `chunk of positions per forward call must be a positive integer, got ${chunk}`);
  const info = opts.onInfo ?? (() => undefined);
  const seqs = opts.sequences;
  const runs: VariantRun[] = planVariantRuns(opts.quantPaths);

  // float pass: logits to the spool, per-position log-sum-exp and argmax kept
  const floatStart = performance.now();
  const ref = loadLlamaWeights(opts.modelPath, be, { kvCache: 'f32' });
  const c = ref.config;
  let spool: LogitSpool | undefined;
  try {
    checkSequences(seqs, c, opts.modelPath);
    const positions = seqs.reduce((a, s) => a + s.ids.length, 0);
    spool = new LogitSpool(positions, c.vocabSize, opts.spoolMemoryLimitBytes);
    if (spool.onDisk) info(`float logits: ${(spool.bytes / 1e9).toFixed(2)} GB in a temporary file`);
    const stats: RefRowStats[] = seqs.map((s) => ({ lse: new Float64Array(s.ids.length), argmax: new Int32Array(s.ids.length) }));
    // Summed per sequence, then over sequences: the order compareRows + mergeTotals use, so a variant identical
    // to the source reports bit-identical perplexities.
    const seqNll = new Float64Array(seqs.length);
    let predicted = 0;
    teacherForced(ref, be, seqs, chunk, (si, pos0, n, logits) => {
      spool!.append(logits);
      const st = refRowStats(logits, n, c.vocabSize);
      stats[si].lse.set(st.lse, pos0);
      stats[si].argmax.set(st.argmax, pos0);
      const ids = seqs[si].ids;
      for (let r = 0; r < n && pos0 + r + 1 < ids.length; r++) {
        seqNll[si] += st.lse[r] - logits[r * c.vocabSize + ids[pos0 + r + 1]];
        predicted++;
      }
    });
    const nllSum = seqNll.reduce((a, b) => a + b, 0);
    ref.free(); // before any variant is loaded (free is idempotent; the finally below repeats it on errors)
    const floatSeconds = (performance.now() - floatStart) / 1000;
    const floatNll = mean(nllSum, predicted);
    info(`float ${opts.modelPath}: ${seqs.length} sequence(s), ${positions} positions in ${floatSeconds.toFixed(2)} s`);

    // variants, one model in memory at a time
    const seqStart: number[] = [];
    seqs.reduce((a, s) => (seqStart.push(a), a + s.ids.length), 0);
    const refBuf = new Float32Array(Math.min(chunk, Math.max(...seqs.map((s) => s.ids.length))) * c.vocabSize);
    const variants: VariantResult[] = [];
    for (const run of runs) {
      const t0 = performance.now();
      const w = loadLlamaWeights(run.dir, be, { kvCache: run.kvCache });
      try {
        checkSameShape(c, w.config, opts.modelPath, run.dir);
        const perSeq = seqs.map(() => emptyTotals());
        const klLast = new Float64Array(seqs.length);
        teacherForced(w, be, seqs, chunk, (si, pos0, n, logits) => {
          const refRows = spool!.read(seqStart[si] + pos0, n, refBuf);
          const kls = compareRows(perSeq[si], si, pos0, seqs[si].ids, refRows, stats[si], logits, n, c.vocabSize);
          if (pos0 + n === seqs[si].ids.length) klLast[si] = kls[n - 1];
        });
        const total = emptyTotals();
        perSeq.forEach((t) => mergeTotals(total, t));
        const nll = mean(total.nllSum, total.predicted);
        const seconds = (performance.now() - t0) / 1000;
        variants.push({
          label: run.label,
          dir: run.dir,
          scheme: run.scheme,
          kvCache: w.summary.kvCacheDType,
          positions: total.positions,
          predicted: total.predicted,
          top1Agreement: total.top1Agree / total.positions,
          klMean: total.klSum / total.positions,
          klMax: total.klMax,
          klMaxAt: total.klMaxAt,
          nllMean: nll,
          ppl: nll === null ? null : Math.exp(nll),
          pplFloat: floatNll === null ? null : Math.exp(floatNll),
          seconds,
          sequences: perSeq.map((t, i) => sequenceResult(i, seqs[i], t, klLast[i])),
        });
        info(`${run.label} ${run.dir}: ${seconds.toFixed(2)} s`);
      } finally {
        w.free();
      }
    }

    let weightErrors: WeightErrorReport[] | undefined;
    if (opts.weightError) {
      weightErrors = [];
      for (const dir of new Set(runs.map((r) => r.dir))) {
        const scheme = runs.find((r) => r.dir === dir)!.scheme;
        if (scheme.w8a16Linears === 0) continue;
        weightErrors.push(weightQuantErrors(opts.modelPath, dir, scheme));
      }
    }
    return {
      modelPath: opts.modelPath,
      reference: describeQuantDir(opts.modelPath),
      sequences: seqs.length,
      positions,
      predicted,
      float: { nllMean: floatNll, ppl: floatNll === null ? null : Math.exp(floatNll), seconds: floatSeconds },
      variants,
      weightErrors,
      spoolFileBytes: spool.onDisk ? spool.bytes : 0,
    };
  } finally {
    spool?.close();
    ref.free();
  }
}

