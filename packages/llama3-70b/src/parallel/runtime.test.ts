// Tensor parallelism end to end on the host: worker-thread ranks (N = 1, 2, 4) give the unsplit model's greedy tokens
// and its logits within a named tolerance, on the shared fixtures (float, W8A16, W8A16 + int8 KV cache) and on a
// model with biases and replicated KV heads; failures of a rank reach the driver.

import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { createHostBackend, type Backend } from '@w8a16/ascend-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, TINY_CONFIG, maxAbsDiff, scratchDir, tinyTensors, writeTinyModel, type RawTensor } from '../../test/helpers';
import { generate } from '../generate/generate';
import { LlamaModel, type LlamaModelOptions } from '../model/llama';
import { loadLlamaWeights } from '../model/load';
import { startTensorParallel, type TensorParallelRun } from './runtime';
import { buildScriptForTests, buildWorkerForTests, HOST_ADDON_PATH } from './test-support';

/**
 * |Δlogit| allowed between N ranks and the unsplit model. The all-reduce sums o_proj / down_proj partials in another
 * order than one dot product does: a few f32 ulps of the O(1..10) activations per layer, carried through ≤ 5 layers
 * (measured: ≤ 1.1e-5 on these fixtures, stories260K float the largest). N = 1 must be bit-identical.
 */
const TP_LOGIT_ABS_TOL = 5e-5;

const PROMPTS = [
  [1, 162, 38, 15, 28, 206, 236, 138, 220, 245, 9, 73], // tiny-llama3-fp16/prompt.json
  [1, 7, 99],
  [1, 250, 3, 17, 17, 40, 41],
];
const NEW_TOKENS = 16;
const MODEL: LlamaModelOptions = { maxTokensPerStep: 8, maxSeqsPerStep: 3, maxContext: 40, blockSize: 4 };

const FIXTURE_CASES = [
  'tiny-llama3-fp16', // F16 float
  'tiny-llama3-fp16/reference/w8a16-rtn',
  'tiny-llama3-fp16/reference/w8a16-m3-c8', // m3 + C8: int8 KV cache
  'stories260K', // F32 float, tied lm_head, 4 KV heads
  'stories260K/reference/w8a16-rtn',
];

let workerScript: string;
beforeAll(() => {
  // Worker bundles live under node_modules/.cache, away from the addon they would find beside the sources.
  process.env.W8A16_HOST_ADDON = HOST_ADDON_PATH;
  workerScript = buildWorkerForTests();
});

interface Outcome {
  tokens: number[][];
  logits: Float32Array; // (T, vocab) every position of PROMPTS[0], run after generation on a fresh sequence
  kvCache: string;
}

/** Greedy generation (chunked prefill of 8 tokens, three prompts decoded together) then every-position logits. */
function exercise(model: LlamaModel, be: Backend, prompt: number[], vocab: number): Outcome {
  const r = generate(model, PROMPTS.map((p) => p.map((t) => t % vocab)), { maxOutputLength: NEW_TOKENS, ignoreEos: true, maxPrefillTokens: 8 });
  const logits = be.download(model.forward([7], prompt, [0, prompt.length], true));
  model.release(7);
  return { tokens: r.sequences.map((s) => s.outputIds), logits, kvCache: model.weights.summary.kvCacheDType };
}

function unsplit(dir: string): Outcome {
  const be = createHostBackend({ threads: 1 });
  const w = loadLlamaWeights(dir, be);
  const m = new LlamaModel(w, be, MODEL);
  try {
    return exercise(m, be, PROMPTS[0].map((t) => t % w.config.vocabSize).slice(0, 8), w.config.vocabSize);
  } finally {
    m.dispose();
    w.free();
    be.dispose();
  }
}

async function split(dir: string, N: number): Promise<Outcome & { run: TensorParallelRun }> {
  const be = createHostBackend({ threads: 1 });
  const run = await startTensorParallel({ dir, worldSize: N, backend: be, model: MODEL, threadsPerRank: 1, workerScript });
  try {
    const vocab = run.weights.config.vocabSize;
    return { ...exercise(run.model, be, PROMPTS[0].map((t) => t % vocab).slice(0, 8), vocab), run };
  } finally {
    await run.close();
    be.dispose();
  }
}

describe.each(FIXTURE_CASES)('tensor parallel on %s', (fixture) => {
  const dir = join(FIXTURES, fixture);
  let ref: Outcome;
  beforeAll(() => {
    ref = unsplit(dir);
  });

  it.each([1, 2, 4])('N = %i: the same greedy tokens as the unsplit model, logits within TP_LOGIT_ABS_TOL', async (N) => {
    const got = await split(dir, N);
    expect(got.kvCache).toBe(ref.kvCache);
    expect(got.run.model.worldSize).toBe(N);
    expect(got.tokens).toEqual(ref.tokens);
    const d = maxAbsDiff(got.logits, ref.logits);
    if (N === 1) expect(d).toBe(0);
    else expect(d).toBeLessThanOrEqual(TP_LOGIT_ABS_TOL);
  });
});

it('the C8 fixture really runs an int8 KV cache on every rank', () => {
  expect(unsplit(join(FIXTURES, 'tiny-llama3-fp16/reference/w8a16-m3-c8')).kvCache).toBe('int8');
});

describe('a model with q/k/v/o and MLP biases and one KV head (replicated on both ranks)', () => {
  const BIASES: [string, number][] = [
    ['self_attn.q_proj', 8],
    ['self_attn.k_proj', 4],
    ['self_attn.v_proj', 4],
    ['self_attn.o_proj', 8],
    ['mlp.gate_proj', 12],
    ['mlp.up_proj', 12],
    ['mlp.down_proj', 8],
  ];
  let dir: string;
  beforeAll(() => {
    let seed = 99;
    const bias = (name: string, n: number): RawTensor => {
      const f = Float32Array.from({ length: n }, () => {
        seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
        return (seed / 2 ** 32 - 0.5) * 0.5;
      });
      return { name: `model.layers.0.${name}.bias`, dtype: 'F32', shape: [n], data: new Uint8Array(f.buffer) };
    };
    dir = writeTinyModel(scratchDir('w8a16-tp-bias-'), {
      config: { ...TINY_CONFIG, attention_bias: true, mlp_bias: true },
      tensors: [...tinyTensors(), ...BIASES.map(([n, len]) => bias(n, len))],
    });
  });

  it('N = 2 matches the unsplit model (the o/down bias is added once, by rank 0)', async () => {
    const ref = unsplit(dir);
    const got = await split(dir, 2);
    expect(got.run.weights.shard).toMatchObject({ nHeads: 1, nKvHeads: 1, kvReplicas: 2 });
    expect(got.run.weights.layers[0].o.hasBias).toBe(true);
    expect(got.tokens).toEqual(ref.tokens);
    expect(maxAbsDiff(got.logits, ref.logits)).toBeLessThanOrEqual(TP_LOGIT_ABS_TOL);
  });
});

describe('failures', () => {
  let be: Backend;
  beforeAll(() => {
    be = createHostBackend({ threads: 1 });
  });
  afterAll(() => be.dispose());
  const TINY = join(FIXTURES, 'tiny-llama3-fp16/reference/w8a16-rtn');

  it('E_WORLD_SIZE before any thread starts when the split is impossible (8 heads over 3 ranks)', async () => {
    await expect(startTensorParallel({ dir: TINY, worldSize: 3, backend: be, model: MODEL, workerScript })).rejects.toMatchObject({
      code: 'E_WORLD_SIZE',
      message: expect.stringContaining('num_attention_heads 8'),
    });
  });

  it('E_TP_WORKER_MISSING names the script when the app is not built', async () => {
    const missing = join(scratchDir('w8a16-tp-'), 'parallel-worker.js');
    await expect(startTensorParallel({ dir: TINY, worldSize: 2, backend: be, model: MODEL, workerScript: missing })).rejects.toMatchObject({
      code: 'E_TP_WORKER_MISSING',
      message: expect.stringContaining(missing),
    });
  });

  it('a rank failing while it loads rejects the start with its code and rank', async () => {
    const failing = join(scratchDir('w8a16-tp-'), 'failing-worker.mjs');
    writeFileSync(
      failing,
      `import { parentPort } from 'node:worker_threads';\nparentPort.postMessage({ type: 'error', rank: 1, ready: false, code: 'E_TENSOR_MISSING', message: 'planted' });\n`,
    );
    await expect(startTensorParallel({ dir: TINY, worldSize: 2, backend: be, model: MODEL, workerScript: failing })).rejects.toMatchObject({
      code: 'E_TENSOR_MISSING',
      message: 'tensor-parallel rank 1: planted',
    });
  });

  it('a rank failing during a step makes the driver\'s forward throw its error; close() still returns', async () => {
    // A rank that joins, reports ready, takes the first command and fails.
    const script = buildScriptForTests(
      'failing-rank',
      `import { parentPort, workerData } from 'node:worker_threads';
       import { ShmGroup } from './collective';
       const g = new ShmGroup(workerData.buffer, workerData.layout, workerData.rank);
       parentPort.postMessage({ type: 'ready', rank: workerData.rank });
       g.barrier();
       g.barrier();
       g.abort(Object.assign(new Error('kernel exploded'), { code: 'E_TEST_RANK' }));`,
    );
    const run = await startTensorParallel({ dir: TINY, worldSize: 2, backend: be, model: MODEL, workerScript: script });
    expect(() => run.model.forward([0], [1, 2, 3], [0, 3])).toThrow(expect.objectContaining({ code: 'E_TEST_RANK', message: 'tensor-parallel rank 1 failed: kernel exploded' }));
    expect(() => run.model.release(0)).not.toThrow(); // cleanup after a failure does not mask it
    await run.close();
  });

  it('E_CONTEXT_FULL on every rank: the driver reports its own error and the group closes', async () => {
    const run = await startTensorParallel({ dir: TINY, worldSize: 2, backend: be, model: { ...MODEL, maxContext: 4 }, workerScript });
    expect(() => run.model.forward([0], [1, 2, 3, 4, 5], [0, 5])).toThrow(expect.objectContaining({ code: 'E_CONTEXT_FULL' }));
    await run.close();
  });
});
