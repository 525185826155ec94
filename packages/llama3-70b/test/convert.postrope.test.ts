// `convert --kv_calibrate_post_rope True` (the built CLI) on tiny-llama3-fp16: the same files and description as
// the default C8 conversion, only the K scales taken after RoPE; the usage error; `run` on the result.

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHostBackend } from '@w8a16/ascend-runtime';
import { Checkpoint, readLlamaConfig } from '@w8a16/format';
import { readCalibFile } from '../src/calibrate/calib-data';
import { collectCalibration } from '../src/calibrate/collect';
import { UnitRunner } from '../src/convert/units';
import { FIXTURES, loadAllTensors, runCli, scratchDir, tensorAsF32, writeTinyModel, type LoadedTensor } from './helpers';

const SRC = join(FIXTURES, 'tiny-llama3-fp16');
const CALIB = join(SRC, 'calib.jsonl');
const PROMPT = (JSON.parse(readFileSync(join(SRC, 'prompt.json'), 'utf8')) as { input_ids: number[] }).input_ids;
const C8 = ['--w_sym', 'False', '--use_kvcache_quant', 'True', '--calib_file', CALIB];
/**
 * The CLI's K scales vs an in-process calibration of the same samples: same code, but the CLI's backend may pick
 * the native kernels (another summation order) where this test runs one js thread. Measured: 0 (bit-identical).
 */
const CLI_SCALE_REL_TOL = 1e-6;

let work: string;
let pre: Map<string, LoadedTensor>;
let post: Map<string, LoadedTensor>;
let preRun: { stdout: string; status: number | null; stderr: string };
let postRun: { stdout: string; status: number | null; stderr: string };
let report: { kv_post_rope: boolean | null; kv_sym: boolean | null; samples: number };

beforeAll(() => {
  work = scratchDir();
  preRun = runCli(['convert', '--model_path', SRC, '--save_directory', join(work, 'pre'), ...C8]);
  postRun = runCli(['convert', '--model_path', SRC, '--save_directory', join(work, 'post'), ...C8, '--kv_calibrate_post_rope', 'True', '--calib_report', join(work, 'post.json')]);
  expect(preRun.status, preRun.stderr).toBe(0);
  expect(postRun.status, postRun.stderr).toBe(0);
  pre = loadAllTensors(join(work, 'pre'));
  post = loadAllTensors(join(work, 'post'));
  report = JSON.parse(readFileSync(join(work, 'post.json'), 'utf8'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function scaleRelError(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  a.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - b[i]) / Math.abs(b[i]))));
  return worst;
}

describe('convert --kv_calibrate_post_rope True', () => {
  it('says which K statistics it used in the summary and the calibration report', () => {
    expect(postRun.stdout).toMatch(/C8 +4 layers, symmetric k\/v scales, K statistics post-RoPE\n/);
    expect(preRun.stdout).toMatch(/C8 +4 layers, symmetric k\/v scales, K statistics pre-RoPE \(as msModelSlim\)\n/);
    expect(report.kv_post_rope).toBe(true);
    expect(report.kv_sym).toBe(true);
  });

  it('writes the same tensor names, dtypes and shapes and a byte-identical description JSON', () => {
    expect([...post.keys()].sort()).toEqual([...pre.keys()].sort());
    for (const [name, t] of pre) {
      expect(post.get(name)?.dtype, name).toBe(t.dtype);
      expect(post.get(name)?.shape, name).toEqual(t.shape);
    }
    expect(readFileSync(join(work, 'post', 'quant_model_description.json'), 'utf8')).toBe(readFileSync(join(work, 'pre', 'quant_model_description.json'), 'utf8'));
  });

  it('changes only the k_proj kv_cache_scale tensors: weights, V scales and offsets are byte-identical', () => {
    let kScalesChanged = 0;
    for (const [name, t] of pre) {
      const same = Buffer.compare(Buffer.from(post.get(name)!.bytes), Buffer.from(t.bytes)) === 0;
      if (/k_proj\.kv_cache_scale$/.test(name)) kScalesChanged += same ? 0 : 1;
      else expect(same, name).toBe(true);
    }
    expect(kScalesChanged).toBe(4);
  });

  it(`writes the K scales of a post-RoPE calibration of the same samples (within ${CLI_SCALE_REL_TOL})`, async () => {
    const { config } = readLlamaConfig(SRC);
    const ckpt = Checkpoint.open(SRC);
    const backend = createHostBackend({ threads: 1 });
    const runner = new UnitRunner();
    try {
      const samples = readCalibFile(CALIB, config.vocabSize);
      const r = await collectCalibration(ckpt, config, samples, { backend, runUnit: async (u) => runner.run(u), kv: { sym: true, postRope: true } });
      for (let l = 0; l < config.nLayers; l++) {
        const name = `model.layers.${l}.self_attn.k_proj.kv_cache_scale`;
        expect(scaleRelError(tensorAsF32(post.get(name)!), r.layers[l].k!.scale), name).toBeLessThanOrEqual(CLI_SCALE_REL_TOL);
      }
    } finally {
      runner.close();
      backend.dispose();
      ckpt.close();
    }
  });

  it('gives a checkpoint that `run` loads with the int8 KV cache and generates from', () => {
    const n = 6;
    const json = runCli(['run', join(work, 'post'), '--input_ids', PROMPT.join(','), '--max_output_length', String(n), '--ignore_eos', '--json']);
    expect(json.status, json.stderr).toBe(0);
    const obj = JSON.parse(json.stdout.trim()) as { prompt_ids: number[]; output_ids: number[] };
    expect(obj.prompt_ids).toEqual(PROMPT);
    expect(obj.output_ids).toHaveLength(n);
    expect(obj.output_ids.every((id) => Number.isInteger(id) && id >= 0 && id < 256)).toBe(true);
    const text = runCli(['run', join(work, 'post'), '--input_ids', PROMPT.join(','), '--max_output_length', '2']);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/, kv int8\b/);
  });

  it('is a usage error without --use_kvcache_quant True (either value), and nothing is written', () => {
    const src = writeTinyModel(join(work, 'tiny'));
    for (const value of ['True', 'False']) {
      const out = join(work, `usage-${value}`);
      const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--calib_file', CALIB, '--kv_calibrate_post_rope', value]);
      expect(r.status).toBe(2);
      expect(r.stderr).toContain('error E_USAGE: --kv_calibrate_post_rope only applies with --use_kvcache_quant True');
      expect(existsSync(out)).toBe(false);
    }
  });
});
