// The forward pass against Hugging Face transformers (fp32 eager) on the shared fixtures: float checkpoints vs
// forward.json, msModelSlim W8A16 outputs vs forward-w8a16.json; with the js and the native host kernels.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHostBackend, type Backend, type HostKernels } from '@w8a16/ascend-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../../test/helpers';
import { generate } from '../generate/generate';
import { LlamaModel } from './llama';
import { loadLlamaWeights, type KvCacheChoice, type LlamaWeights } from './load';

/**
 * |Δlogit| allowed against transformers' fp32 logits: both sides compute in f32 but sum in another order (and the
 * reference kernels in f64); logits here are O(1..10), so a few hundred f32 ulps of accumulated rounding stay far
 * below 1e-4 (the fixtures README's figure).
 */
const LOGIT_ABS_TOL = 1e-4;

interface ForwardRef {
  prompt_ids: number[];
  logits_last: number[];
  logits_pos0: number[];
  argmax_per_position: number[];
  greedy_new_ids: number[];
  greedy_top1_top2_margin: number[];
}

const readJson = <T,>(p: string): T => JSON.parse(readFileSync(p, 'utf8')) as T;

const CASES: { name: string; dir: string; ref: string; kvCache?: KvCacheChoice }[] = [
  { name: 'tiny-llama3-fp16 (F16 float)', dir: 'tiny-llama3-fp16', ref: 'tiny-llama3-fp16/reference/forward.json' },
  { name: 'stories260K (F32 float, tied)', dir: 'stories260K', ref: 'stories260K/reference/forward.json' },
  { name: 'tiny-llama3-fp16 w8a16-rtn', dir: 'tiny-llama3-fp16/reference/w8a16-rtn', ref: 'tiny-llama3-fp16/reference/w8a16-rtn/forward-w8a16.json' },
  // forward-w8a16.json did not simulate the int8 KV cache, so the C8 scales are ignored here (f32 cache).
  { name: 'tiny-llama3-fp16 w8a16-m3-c8 (C8 ignored)', dir: 'tiny-llama3-fp16/reference/w8a16-m3-c8', ref: 'tiny-llama3-fp16/reference/w8a16-m3-c8/forward-w8a16.json', kvCache: 'f32' },
  { name: 'stories260K w8a16-rtn', dir: 'stories260K/reference/w8a16-rtn', ref: 'stories260K/reference/w8a16-rtn/forward-w8a16.json' },
];

const KERNELS: HostKernels[] = ['js', 'native'];

function maxAbsDiff(a: Float32Array, b: readonly number[]): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - Math.fround(b[i])));
  return m;
}

function argmaxRows(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length / vocab; r++) {
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[r * vocab + i] > logits[r * vocab + best]) best = i;
    out.push(best);
  }
  return out;
}

describe.each(KERNELS)('LlamaModel vs transformers, %s kernels', (kernels) => {
  let backend: Backend;
  beforeAll(() => {
    backend = createHostBackend({ kernels, threads: 2 });
  });
  afterAll(() => backend.dispose());

  describe.each(CASES)('$name', ({ dir, ref, kvCache }) => {
    const expected = readJson<ForwardRef>(join(FIXTURES, ref));
    let weights: LlamaWeights;
    let model: LlamaModel;
    beforeAll(() => {
      weights = loadLlamaWeights(join(FIXTURES, dir), backend, { kvCache });
      model = new LlamaModel(weights, backend, { maxTokensPerStep: 64, maxSeqsPerStep: 4, maxContext: 64, blockSize: 16 });
    });
    afterAll(() => {
      model.dispose();
      weights.free();
    });

    it('matches the logits at the first and last prompt position and the argmax at every position', () => {
      const ids = expected.prompt_ids;
      const vocab = weights.config.vocabSize;
      const logits = backend.download(model.forward([0], ids, [0, ids.length], true));
      model.release(0);
      const last = logits.subarray((ids.length - 1) * vocab);
      const pos0 = logits.subarray(0, vocab);
      expect(maxAbsDiff(last, expected.logits_last)).toBeLessThan(LOGIT_ABS_TOL);
      expect(maxAbsDiff(pos0, expected.logits_pos0)).toBeLessThan(LOGIT_ABS_TOL);
      expect(argmaxRows(logits, vocab)).toEqual(expected.argmax_per_position);
    });

    it('decodes the same 16 greedy tokens (EOS not a stop, as in the reference)', () => {
      const r = generate(model, [expected.prompt_ids], { maxOutputLength: expected.greedy_new_ids.length, ignoreEos: true });
      expect(r.sequences[0].outputIds).toEqual(expected.greedy_new_ids);
      expect(model.cache.freeBlocks).toBe(model.cache.numBlocks);
    });
  });

  it('stories260K: the 40 greedy ids of llama2c run.c from BOS', () => {
    const ref = readJson<{ start_ids: number[]; ids: number[] }>(join(FIXTURES, 'stories260K/reference/llama2c-greedy.json'));
    const weights = loadLlamaWeights(join(FIXTURES, 'stories260K'), backend);
    const model = new LlamaModel(weights, backend, { maxTokensPerStep: 8, maxSeqsPerStep: 1, maxContext: 64, blockSize: 8 });
    try {
      const r = generate(model, [ref.start_ids], { maxOutputLength: ref.ids.length, ignoreEos: true });
      expect(r.sequences[0].outputIds).toEqual(ref.ids);
    } finally {
      model.dispose();
      weights.free();
    }
  });
});
