// Tensor parallelism across NPUs through the CANN stand-in (packages/ascend-runtime/test/standin, compiled here with
// gcc): worker-thread ranks each on their own device with HCCL all-reduce, in process (logits against one device)
// and through the BUILT cli (greedy tokens, summary line, a failing rank's device ends the run naming that rank).

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAscendBackend, type AscendBackend } from '@w8a16/ascend-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generate } from '../src/generate/generate';
import { LlamaModel, type LlamaModelOptions } from '../src/model/llama';
import { loadLlamaWeights } from '../src/model/load';
import { startTensorParallel } from '../src/parallel/runtime';
import { buildWorkerForTests } from '../src/parallel/test-support';
import { CLI, FIXTURES, REPO_ROOT, maxAbsDiff } from './helpers';

const C8 = 'tiny-llama3-fp16/reference/w8a16-m3-c8'; // 8 heads, 2 KV heads (replicated at N = 4), int8 KV cache
const STORIES = 'stories260K/reference/w8a16-rtn'; // 8 heads, 4 KV heads, f16 KV cache
const PROMPTS = [
  [1, 162, 38, 15, 28, 206, 236, 138, 220, 245, 9, 73], // tiny-llama3-fp16/prompt.json
  [1, 7, 99],
];
const MODEL: LlamaModelOptions = { maxTokensPerStep: 16, maxSeqsPerStep: 2, maxContext: 32, blockSize: 4 };

/**
 * |Δlogit| allowed between N NPU ranks and one NPU (f16 activations). One device rounds each o_proj / down_proj
 * product to f16 once; with N ranks each partial is rounded to f16 (2^-11 relative) and HCCL rounds the sum again, so
 * every all-reduce adds up to (N + 1)/2 ulps of the activations, 2 per layer, carried through the remaining layers,
 * the final norm and lm_head into logits where one f16 ulp is 2^-7 ≈ 0.008 (|logit| in 8..16). Measured over every
 * position of a 12-token prompt: ≤ 0.015 (tiny C8, |logit| ≤ 2.2, N = 2 and 4) and ≤ 0.039 (stories260K,
 * |logit| ≤ 13.3, N = 2 and 4). 0.1 is ~2.5× the largest and ~13 logit ulps, while a lost or doubled rank partial
 * moves logits by O(1).
 */
const TP_NPU_LOGIT_ABS_TOL = 0.1;
/** A bounded wait for a cli run that must end on its own (a hung rank would run into it and fail the test). */
const RUN_DEADLINE_MS = 60_000;

let lib: string;
let workerScript: string;
beforeAll(() => {
  lib = mkdtempSync(join(tmpdir(), 'w8a16-standin-tp-'));
  execFileSync('gcc', ['-shared', '-fPIC', '-O2', '-o', join(lib, 'libascend_standin.so'), join(REPO_ROOT, 'packages/ascend-runtime/test/standin/ascend_standin.c'), '-lm']);
  for (const n of ['libascendcl.so', 'libnnopbase.so', 'libopapi.so', 'libhccl.so']) symlinkSync('libascend_standin.so', join(lib, n));
  workerScript = buildWorkerForTests();
});
afterAll(() => rmSync(lib, { recursive: true, force: true }));

interface Outcome {
  tokens: number[][];
  logits: Float32Array; // (T, vocab) every position of PROMPTS[0], on a fresh sequence after generation
}

function exercise(model: LlamaModel, be: AscendBackend): Outcome {
  const r = generate(model, PROMPTS, { maxOutputLength: 8, ignoreEos: true });
  const p = PROMPTS[0];
  const logits = be.download(model.forward([5], p, [0, p.length], true));
  model.release(5);
  return { tokens: r.sequences.map((s) => s.outputIds), logits };
}

function oneDevice(dir: string): Outcome {
  const be = createAscendBackend({ libDir: lib });
  const w = loadLlamaWeights(dir, be);
  const m = new LlamaModel(w, be, MODEL);
  try {
    return exercise(m, be);
  } finally {
    m.dispose();
    w.free();
    be.dispose();
  }
}

async function ranks(dir: string, N: number): Promise<Outcome> {
  const be = createAscendBackend({ libDir: lib });
  try {
    const run = await startTensorParallel({ dir, worldSize: N, backend: be, model: MODEL, workerScript, ascend: { libDir: lib } });
    try {
      expect(run.model.worldSize).toBe(N);
      return exercise(run.model, be);
    } finally {
      await run.close();
    }
  } finally {
    be.dispose();
  }
}

/** Per position, the gap between the best and second-best logit (how close a greedy choice is to flipping). */
function topMargins(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < logits.length / vocab; t++) {
    let a = -Infinity;
    let b = -Infinity;
    for (let v = t * vocab; v < (t + 1) * vocab; v++) {
      const x = logits[v];
      if (x > a) [a, b] = [x, a];
      else if (x > b) b = x;
    }
    out.push(a - b);
  }
  return out;
}

function argmaxRows(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < logits.length / vocab; t++) {
    let best = 0;
    for (let v = 1; v < vocab; v++) if (logits[t * vocab + v] > logits[t * vocab + best]) best = v;
    out.push(best);
  }
  return out;
}

describe.each([C8, STORIES])('NPU tensor parallel in process on %s', (fixture) => {
  const dir = join(FIXTURES, fixture);
  let ref: Outcome;
  beforeAll(() => {
    ref = oneDevice(dir);
  });

  it.each([1, 2, 4])('N = %i: logits within TP_NPU_LOGIT_ABS_TOL of one NPU; greedy choices agree wherever the margin exceeds it', async (N) => {
    const got = await ranks(dir, N);
    const d = maxAbsDiff(got.logits, ref.logits);
    if (N === 1) expect(d).toBe(0);
    else expect(d).toBeLessThanOrEqual(TP_NPU_LOGIT_ABS_TOL);
    const vocab = ref.logits.length / PROMPTS[0].length;
    const margins = topMargins(ref.logits, vocab);
    const want = argmaxRows(ref.logits, vocab);
    const have = argmaxRows(got.logits, vocab);
    // A choice can only flip where the reference's top two are within twice the tolerance of each other.
    want.forEach((tok, t) => {
      if (margins[t] > 2 * TP_NPU_LOGIT_ABS_TOL) expect(have[t], `position ${t}`).toBe(tok);
    });
    // Generated tokens too, except stories at N = 4: there a near-tie (6th token of prompt 0) flips under f16 rounding.
    if (fixture === C8 || N <= 2) expect(got.tokens).toEqual(ref.tokens);
  });
});

interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(args: string[], env: Record<string, string> = {}): CliResult {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, 'run', ...args], { encoding: 'utf8', env: { ...process.env, W8A16_ASCEND_LIB_DIR: lib, ...env }, timeout: RUN_DEADLINE_MS });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, ms: performance.now() - t0 };
}

function outputIds(fixture: string, worldSize: number): number[][] {
  const r = cli([join(FIXTURES, fixture), ...PROMPTS.flatMap((p) => ['--input_ids', p.join(',')]), '--json', '--ignore_eos', '--max_output_length', '12', '--device_type', 'npu', '--world_size', String(worldSize)]);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { output_ids: number[] }).output_ids);
}

describe('llama3-70b run --device_type npu --world_size N (built cli, stand-in devices)', () => {
  it.each([
    [C8, 2],
    [C8, 4], // KV heads replicated on two ranks each
    [STORIES, 2],
    // STORIES at N = 4 is left to the in-process test: its 6th greedy token of prompt 0 is a near-tie that the
    // f16 rounding of four partials flips (allowed there by margin, not asserted token for token).
  ])('%s: --world_size %i gives the greedy output_ids of --world_size 1 on the NPU path', (fixture, N) => {
    const one = outputIds(fixture, 1);
    expect(one.every((ids) => ids.length === 12)).toBe(true);
    expect(outputIds(fixture, N)).toEqual(one);
  });

  it('the summary line says N tensor-parallel ranks on the Ascend backend; auto picks the NPU ranks when the libraries are found', () => {
    const args = [join(FIXTURES, C8), '--input_ids', '1,5', '--max_output_length', '3', '--world_size', '2'];
    const npu = cli([...args, '--device_type', 'npu']);
    expect(npu.status, npu.stderr).toBe(0);
    expect(npu.stdout).toMatch(/decode: 2 tokens in [\d.]+ s, [\d.]+ tokens\/s \| ascend aclnn, 2 tensor-parallel ranks on the Ascend backend \(NPUs 0\.\.1, HCCL all-reduce\), W8A16/);
    const auto = cli(args);
    expect(auto.status, auto.stderr).toBe(0);
    expect(auto.stdout).toContain('2 tensor-parallel ranks on the Ascend backend');
    const host = cli(args, { W8A16_ASCEND_LIB_DIR: '', ASCEND_TOOLKIT_HOME: '', ASCEND_HOME_PATH: '', ATB_HOME_PATH: '' });
    expect(host.status, host.stderr).toBe(0);
    expect(host.stdout).toMatch(/\| host .*, 2 tensor-parallel ranks, W8A16/);
  });

  // W8A16_STANDIN_FAIL="fn:status@device+skip": the stand-in (in the cli's process) fails call skip+1 of fn on device.
  it.each([
    ['rank 1 cannot open its device', 'aclrtSetDevice:107001@1', 1, /error E_ACL_CALL: tensor-parallel rank 1: aclrtSetDevice \(device 1\) failed/],
    ['rank 1 cannot join the communicator', 'HcclCommInitRootInfo:1@1', 1, /error E_HCCL_CALL: tensor-parallel rank 1: HcclCommInitRootInfo failed/],
    ['a kernel of rank 1 fails mid-run (rank 0 may be waiting for its part of an all-reduce)', 'aclnnWeightQuantBatchMatmulV2:507015@1+40', 1, /error E_ACL_CALL: tensor-parallel rank 1 failed: aclnnWeightQuantBatchMatmulV2 failed/],
    ['a kernel of rank 0 fails mid-run (rank 1 then waits for its part of an all-reduce)', 'aclnnWeightQuantBatchMatmulV2:507015@0+40', 0, /error E_ACL_CALL: tensor-parallel rank 0 failed: aclnnWeightQuantBatchMatmulV2 failed/],
    ['rank 3 of 4 faults at a synchronize', 'aclrtSynchronizeStream:507015@3+4', 3, /error E_ACL_CALL: tensor-parallel rank 3 failed: aclrtSynchronizeStream failed/],
  ])('%s: exit 1 naming the rank, in bounded time, no hung thread', (_what, spec, rank, message) => {
    const N = rank === 3 ? 4 : 2;
    const r = cli([join(FIXTURES, C8), '--input_ids', '1,162,38', '--max_output_length', '8', '--device_type', 'npu', '--world_size', String(N), '--json'], { W8A16_STANDIN_FAIL: spec });
    expect(r.signal, `killed after ${RUN_DEADLINE_MS} ms: a rank hung`).toBeNull();
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).toContain(`on device ${rank}`); // the stand-in's own text names the device that failed
    expect(r.stdout).toBe('');
    // Well inside the stand-in's collective timeout (60 s): the others stopped because the rank left, not by timeout.
    expect(r.ms).toBeLessThan(30_000);
  });
});
