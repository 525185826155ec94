// The generation loop over the paged cache: batching ragged prompts equals running each alone (block sizes 1,
// 4, 128; chunked prefill; smaller batches), stop tokens, seeded sampling, the int8 (C8) KV cache, timings.

import { join } from 'node:path';
import { createHostBackend, type Backend } from '@w8a16/ascend-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../../test/helpers';
import { LlamaModel, type LlamaModelOptions } from '../model/llama';
import { loadLlamaWeights, type LlamaWeights } from '../model/load';
import { generate, tokensPerSecond, type GenerateOptions } from './generate';

/** Ragged prompts (lengths 12, 5, 1) drawn from the tiny model's vocabulary. */
const PROMPTS = [
  [1, 162, 38, 15, 28, 206, 236, 138, 220, 245, 9, 73],
  [1, 77, 200, 3, 150],
  [1],
];
const NEW_TOKENS = 10;

describe('generate', () => {
  let backend: Backend;
  let weights: LlamaWeights;
  const run = (model: Partial<LlamaModelOptions>, opts: Partial<GenerateOptions>, prompts = PROMPTS) => {
    const m = new LlamaModel(weights, backend, { maxTokensPerStep: 32, maxSeqsPerStep: 3, maxContext: 32, ...model });
    try {
      const r = generate(m, prompts, { maxOutputLength: NEW_TOKENS, ignoreEos: true, ...opts });
      expect(m.cache.freeBlocks).toBe(m.cache.numBlocks); // every sequence released
      return r;
    } finally {
      m.dispose();
    }
  };
  let alone: number[][];

  beforeAll(() => {
    backend = createHostBackend({ kernels: 'auto' });
    weights = loadLlamaWeights(join(FIXTURES, 'tiny-llama3-fp16'), backend);
    alone = PROMPTS.map((p) => run({ blockSize: 128 }, {}, [p]).sequences[0].outputIds);
  });
  afterAll(() => {
    weights.free();
    backend.dispose();
  });

  it('the single-prompt runs produce full-length, distinct continuations (the comparison is not vacuous)', () => {
    expect(alone.map((a) => a.length)).toEqual([NEW_TOKENS, NEW_TOKENS, NEW_TOKENS]);
    expect(new Set(alone.map((a) => a.join())).size).toBe(3);
  });

  it.each([1, 4, 128])('3 ragged prompts batched through a paged cache of block size %i give the same greedy tokens as each alone', (blockSize) => {
    const r = run({ blockSize }, {});
    expect(r.sequences.map((s) => s.outputIds)).toEqual(alone);
    expect(r.batches).toHaveLength(1);
    expect(r.batches[0].decode.steps).toBe(NEW_TOKENS - 1);
  });

  it('chunked prefill (4 tokens per step) and batches of 2 change nothing', () => {
    const r = run({ blockSize: 4, maxTokensPerStep: 4 }, { maxBatchSize: 2 });
    expect(r.sequences.map((s) => s.outputIds)).toEqual(alone);
    expect(r.batches.map((b) => b.promptIndices)).toEqual([[0, 1], [2]]);
    expect(r.batches[0].prefill.tokens).toBe(17);
  });

  it('with a small block pool, blocks run out with E_KV_BLOCKS_EXHAUSTED naming the flag, and the cache is left empty', () => {
    const m = new LlamaModel(weights, backend, { maxTokensPerStep: 32, maxSeqsPerStep: 3, maxContext: 32, blockSize: 4, numBlocks: 5 });
    try {
      expect(() => generate(m, PROMPTS, { maxOutputLength: NEW_TOKENS })).toThrow(
        expect.objectContaining({ code: 'E_KV_BLOCKS_EXHAUSTED', message: expect.stringMatching(/needs 1 more block\(s\) of 4 tokens .* only 0 of 5 are free.*raise --num_blocks/) }),
      );
      expect(m.cache.freeBlocks).toBe(5);
    } finally {
      m.dispose();
    }
  });

  it('stops at a stop id (kept in the output) unless ignoreEos', () => {
    const stopAt = alone[0][3];
    const first = alone[0].indexOf(stopAt);
    const r = run({}, { stopIds: [stopAt], ignoreEos: false }, [PROMPTS[0]]);
    expect(r.sequences[0].outputIds).toEqual(alone[0].slice(0, first + 1));
    expect(r.sequences[0].finishReason).toBe('stop');
    const ignored = run({}, { stopIds: [stopAt], ignoreEos: true }, [PROMPTS[0]]);
    expect(ignored.sequences[0].outputIds).toEqual(alone[0]);
    expect(ignored.sequences[0].finishReason).toBe('length');
  });

  it('streams every token to onToken in order', () => {
    const seen: [number, number][] = [];
    const r = run({}, { onToken: (i, t) => seen.push([i, t]) });
    for (let i = 0; i < PROMPTS.length; i++) expect(seen.filter(([p]) => p === i).map(([, t]) => t)).toEqual(r.sequences[i].outputIds);
  });

  it('sampling: the same seed gives the same tokens, top_k 1 is greedy, and temperature differs from greedy', () => {
    const a = run({}, { sampling: { temperature: 1.5, seed: 7 } });
    const b = run({}, { sampling: { temperature: 1.5, seed: 7 } });
    expect(a.seed).toBe(7);
    expect(b.sequences.map((s) => s.outputIds)).toEqual(a.sequences.map((s) => s.outputIds));
    expect(a.sequences.map((s) => s.outputIds)).not.toEqual(alone);
    const k1 = run({}, { sampling: { temperature: 1.5, topK: 1, seed: 3 } });
    expect(k1.sequences.map((s) => s.outputIds)).toEqual(alone);
  });

  it('reports prefill and decode separately', () => {
    const r = run({}, {});
    expect(r.prefill.tokens).toBe(18);
    expect(r.decode.tokens).toBe(3 * (NEW_TOKENS - 1));
    expect(r.prefill.seconds).toBeGreaterThan(0);
    expect(tokensPerSecond(r.decode)).toBeGreaterThan(0);
  });

  it('a prompt that cannot fit the context with its new tokens is E_PROMPT_TOO_LONG', () => {
    expect(() => run({ maxContext: 16 }, {}, [PROMPTS[0]])).toThrow(expect.objectContaining({ code: 'E_PROMPT_TOO_LONG' }));
  });
});

describe('int8 (C8) KV cache from the w8a16-m3-c8 checkpoint', () => {
  /**
   * Measured max |Δlogit| between the int8 and the f32 cache on this prompt: 0.17 (logits span about −2.3..1.5). The
   * C8 scales were calibrated on pre-RoPE K while the cache holds post-RoPE K (as ATB does, spec §3.4), so some
   * K values clip. 0.5 leaves room across kernels yet catches a wrong scale or a missing dequantization (errors ≫ 1).
   */
  const INT8_KV_LOGIT_TOL = 0.5;

  it('stores int8 codes and stays close to the float-cache logits', () => {
    const backend = createHostBackend({ kernels: 'auto' });
    const dir = join(FIXTURES, 'tiny-llama3-fp16/reference/w8a16-m3-c8');
    const prompt = PROMPTS[0];
    const logitsWith = (kvCache: 'auto' | 'f32') => {
      const w = loadLlamaWeights(dir, backend, { kvCache });
      const m = new LlamaModel(w, backend, { maxTokensPerStep: 16, maxSeqsPerStep: 1, maxContext: 16, blockSize: 4 });
      const logits = backend.download(m.forward([0], prompt, [0, prompt.length]));
      const k = m.readKvCache(1, 'k');
      const kind = w.summary.kvCacheDType;
      m.dispose();
      w.free();
      return { logits, k, kind };
    };
    const q = logitsWith('auto');
    const f = logitsWith('f32');
    backend.dispose();
    expect(q.kind).toBe('int8');
    expect(q.k).toBeInstanceOf(Int8Array);
    expect(f.kind).toBe('f32');
    let maxDiff = 0;
    for (let i = 0; i < f.logits.length; i++) maxDiff = Math.max(maxDiff, Math.abs(q.logits[i] - f.logits[i]));
    expect(maxDiff).toBeGreaterThan(0); // the int8 path really ran
    expect(maxDiff).toBeLessThan(INT8_KV_LOGIT_TOL);
    const argmax = (x: Float32Array) => x.indexOf(Math.max(...x));
    expect(argmax(q.logits)).toBe(argmax(f.logits));
  });
});
