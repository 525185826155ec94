// The generation loop: prompts in groups of maxBatchSize; each group is prefilled (packed, long prompts in chunks),
// then decoded together one token per sequence per step until every sequence stops. Greedy unless a temperature
// is given. Timing of prefill and decode is kept apart. Not the model (model/) nor text handling (tokenizer/).

import { createRng, type Rng, type SamplingParams } from '@w8a16/ascend-runtime';
import { CliError } from '../cli/errors';
import type { LlamaModel } from '../model/llama';

export interface SamplingOptions {
  /** `<= 0` or absent: greedy (argmax), run_pa's default. */
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Seed of the sampling stream (used only when temperature > 0). */
  seed?: number;
}

export interface GenerateOptions {
  /** New tokens per prompt at most (run_pa's max_output_length). */
  maxOutputLength: number;
  sampling?: SamplingOptions;
  /** Token ids that end a sequence (eos ids, `<|eot_id|>`); the stop token is kept in the output. */
  stopIds?: Iterable<number>;
  /** Never stop on a stop id (benchmarks). */
  ignoreEos?: boolean;
  /** Prompts decoded together (default: all of them, bounded by the model's maxSeqsPerStep). */
  maxBatchSize?: number;
  /** Prompt tokens per prefill step (default: the model's maxTokensPerStep); longer prompts are prefilled in chunks. */
  maxPrefillTokens?: number;
  /** Called with each new token as soon as it is chosen. */
  onToken?: (promptIndex: number, tokenId: number) => void;
  /** Called when a sequence has stopped. */
  onSequenceDone?: (result: SequenceResult) => void;
  /** Called before a batch is prefilled, with the prompt indices it holds. */
  onBatchStart?: (promptIndices: readonly number[]) => void;
}

export type FinishReason = 'stop' | 'length';

export interface SequenceResult {
  promptIndex: number;
  promptIds: number[];
  outputIds: number[];
  finishReason: FinishReason;
  /** Index of the batch it ran in (timings are per batch). */
  batch: number;
}

export interface PhaseTiming {
  tokens: number;
  seconds: number;
}

export interface BatchTiming {
  promptIndices: number[];
  /** Prompt tokens and the time to run them and pick the first new token of each sequence. */
  prefill: PhaseTiming;
  /** Tokens made by decode steps (every new token after the first) and their time. */
  decode: PhaseTiming & { steps: number };
}

export interface GenerateResult {
  sequences: SequenceResult[];
  batches: BatchTiming[];
  prefill: PhaseTiming;
  decode: PhaseTiming;
  /** The sampling seed used (absent when greedy). */
  seed?: number;
}

/** tokens / second, 0 when nothing was timed. */
export function tokensPerSecond(p: PhaseTiming): number {
  return p.seconds > 0 ? p.tokens / p.seconds : 0;
}

interface Live {
  id: number; // prompt index, also the cache sequence id
  prompt: number[];
  done: number; // prompt tokens already prefilled
  out: number[];
  finished: FinishReason | undefined;
}

/** Runs `prompts` (token ids) through `model`. */
export function generate(model: LlamaModel, prompts: readonly (readonly number[])[], options: GenerateOptions): GenerateResult {
  const be = model.backend;
  const maxOut = options.maxOutputLength;
  if (!Number.isSafeInteger(maxOut) || maxOut < 1) throw new CliError('E_USAGE', `max_output_length must be a positive integer, found ${maxOut}`);
  const maxBatch = Math.min(options.maxBatchSize ?? prompts.length, model.maxSeqsPerStep);
  if (!(maxBatch >= 1)) throw new CliError('E_USAGE', `max_batch_size must be at least 1, found ${options.maxBatchSize}`);
  const maxPrefill = Math.min(options.maxPrefillTokens ?? model.maxTokensPerStep, model.maxTokensPerStep);
  prompts.forEach((p, i) => {
    if (p.length === 0) throw new CliError('E_PROMPT_EMPTY', `prompt ${i} has no tokens`);
    if (p.length + maxOut > model.maxContext) {
      throw new CliError('E_PROMPT_TOO_LONG', `prompt ${i} has ${p.length} tokens; with ${maxOut} new tokens that exceeds the context of ${model.maxContext}`);
    }
  });

  const temperature = options.sampling?.temperature ?? 0;
  const greedy = !(temperature > 0);
  const params: SamplingParams = { temperature, topK: options.sampling?.topK, topP: options.sampling?.topP };
  const seed = greedy ? undefined : (options.sampling?.seed ?? Math.floor(Math.random() * 2 ** 32));
  const rng: Rng | undefined = seed === undefined ? undefined : createRng(seed);
  const stop = new Set(options.ignoreEos ? [] : (options.stopIds ?? []));

  const result: GenerateResult = { sequences: [], batches: [], prefill: { tokens: 0, seconds: 0 }, decode: { tokens: 0, seconds: 0 }, seed };
  const chosen = new Int32Array(maxBatch); // (S,) tokens picked this step
  const stepTokens = new Int32Array(Math.max(maxPrefill, maxBatch)); // (T,)
  const stepStarts = new Int32Array(maxBatch + 1); // (S+1,)
  const stepIds = new Int32Array(maxBatch); // (S,)
  // Views of the arrays above per decode batch size, made once, so a decode step allocates nothing.
  const decodeViews: { ids: Int32Array; tokens: Int32Array; starts: Int32Array; out: Int32Array }[] = [];

  /** Appends a token to a sequence; returns whether it is still running. */
  const accept = (s: Live, tok: number): boolean => {
    s.out.push(tok);
    options.onToken?.(s.id, tok);
    if (stop.has(tok)) s.finished = 'stop';
    else if (s.out.length >= maxOut) s.finished = 'length';
    return s.finished === undefined;
  };

  for (let b0 = 0, batchNo = 0; b0 < prompts.length; b0 += maxBatch, batchNo++) {
    const group: Live[] = [];
    for (let i = b0; i < Math.min(b0 + maxBatch, prompts.length); i++) group.push({ id: i, prompt: [...prompts[i]], done: 0, out: [], finished: undefined });
    const timing: BatchTiming = { promptIndices: group.map((s) => s.id), prefill: { tokens: 0, seconds: 0 }, decode: { tokens: 0, seconds: 0, steps: 0 } };
    options.onBatchStart?.(timing.promptIndices);
    const finish = (s: Live): void => {
      model.release(s.id);
      const r: SequenceResult = { promptIndex: s.id, promptIds: s.prompt, outputIds: s.out, finishReason: s.finished!, batch: batchNo };
      result.sequences.push(r);
      options.onSequenceDone?.(r);
    };

    try {
      runBatch(group, timing, finish);
    } catch (e) {
      for (const s of group) model.release(s.id); // leave the cache empty for the caller
      throw e;
    }
    result.batches.push(timing);
    result.prefill.tokens += timing.prefill.tokens;
    result.prefill.seconds += timing.prefill.seconds;
    result.decode.tokens += timing.decode.tokens;
    result.decode.seconds += timing.decode.seconds;
  }
  result.sequences.sort((a, b) => a.promptIndex - b.promptIndex);
  return result;

  /** Prefill then decode one batch of sequences. */
  function runBatch(group: Live[], timing: BatchTiming, finish: (s: Live) => void): void {
    // prefill: pack prompt pieces into steps of at most maxPrefill tokens; a cut prompt continues in the next step
    const t0 = performance.now();
    let next = 0;
    while (next < group.length) {
      let S = 0;
      let T = 0;
      const members: Live[] = [];
      while (next < group.length && S < maxBatch && T < maxPrefill) {
        const s = group[next];
        const n = Math.min(s.prompt.length - s.done, maxPrefill - T);
        for (let i = 0; i < n; i++) stepTokens[T + i] = s.prompt[s.done + i];
        s.done += n;
        stepIds[S] = s.id;
        stepStarts[S] = T;
        T += n;
        S++;
        members.push(s);
        if (s.done === s.prompt.length) next++;
      }
      stepStarts[S] = T;
      const logits = model.forward(stepIds.subarray(0, S), stepTokens.subarray(0, T), stepStarts.subarray(0, S + 1));
      // Only the last member can be cut short, so the completed prompts are the leading rows.
      const complete = members[S - 1].done === members[S - 1].prompt.length ? S : S - 1;
      if (complete > 0) {
        const rows = complete === S ? logits : be.view(logits, 0, complete);
        const out = chosen.subarray(0, complete);
        if (rng) be.sample(out, rows, params, rng);
        else be.argmax(out, rows);
        for (let r = 0; r < complete; r++) accept(members[r], out[r]);
      }
      timing.prefill.tokens += T;
    }
    timing.prefill.seconds = (performance.now() - t0) / 1000;

    // decode: one token per running sequence per step
    const t1 = performance.now();
    const running = group.filter((s) => s.finished === undefined);
    for (const s of group) if (s.finished) finish(s);
    while (running.length > 0) {
      const S = running.length;
      for (let r = 0; r < S; r++) {
        stepIds[r] = running[r].id;
        stepTokens[r] = running[r].out[running[r].out.length - 1];
        stepStarts[r + 1] = r + 1;
      }
      stepStarts[0] = 0;
      const v = (decodeViews[S] ??= { ids: stepIds.subarray(0, S), tokens: stepTokens.subarray(0, S), starts: stepStarts.subarray(0, S + 1), out: chosen.subarray(0, S) });
      const logits = model.forward(v.ids, v.tokens, v.starts);
      const out = v.out;
      if (rng) be.sample(out, logits, params, rng);
      else be.argmax(out, logits);
      timing.decode.steps++;
      timing.decode.tokens += S;
      let still = 0;
      for (let r = 0; r < S; r++) {
        const s = running[r];
        if (accept(s, out[r])) running[still++] = s;
        else finish(s);
      }
      running.length = still;
    }
    timing.decode.seconds = (performance.now() - t1) / 1000;
  }
}
