// `run --kv_cache_dtype auto|float|int8` and the KV-cache footprint `run --json` reports: flag parsing and the
// missing-C8 error, the footprint against what the backend allocated, and (built CLI) the same C8 checkpoint run
// with a float cache against the same conversion without C8.

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { createHostBackend, type Backend } from '@w8a16/ascend-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kvCacheFootprint, parseRunArgs, type KvCacheFootprint, type RunOptions } from '../src/commands/run';
import { LlamaModel } from '../src/model/llama';
import { c8TensorNames, loadLlamaWeights, type KvCacheChoice } from '../src/model/load';
import { CliError } from '../src/cli/errors';
import { FIXTURES, loadAllTensors, runCli, scratchDir } from './helpers';

const SRC = join(FIXTURES, 'tiny-llama3-fp16');
const RTN_REF = join(SRC, 'reference/w8a16-rtn');
const C8_REF = join(SRC, 'reference/w8a16-m3-c8');
/** tiny-llama3-fp16: 4 layers, 2 KV heads of 16 → kvDim 32. */
const LAYERS = 4;
const KV_DIM = 32;
/** Per layer, the C8 cache keeps k/v scale and offset: 4 f32 arrays of kvDim. */
const C8_ARRAY_BYTES = LAYERS * 4 * KV_DIM * 4;

function usageError(f: () => unknown): CliError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CliError);
    expect((e as CliError).code).toBe('E_USAGE');
    return e as CliError;
  }
  throw new Error('expected an E_USAGE error');
}

describe('run --kv_cache_dtype parsing', () => {
  it('defaults to auto and takes auto, float, int8', () => {
    expect((parseRunArgs(['/m']) as RunOptions).kvCacheDType).toBe('auto');
    for (const v of ['auto', 'float', 'int8'] as const) expect((parseRunArgs(['/m', '--kv_cache_dtype', v]) as RunOptions).kvCacheDType).toBe(v);
    expect((parseRunArgs(['/m', '--kv_cache_dtype=float']) as RunOptions).kvCacheDType).toBe('float');
  });

  it('any other value is E_USAGE listing the choices', () => {
    const e = usageError(() => parseRunArgs(['/m', '--kv_cache_dtype', 'f16']));
    expect(e.message).toContain('--kv_cache_dtype expects one of auto, float, int8');
    usageError(() => parseRunArgs(['/m', '--kv_cache_dtype']));
  });
});

describe('KV-cache choice at load and the footprint of the allocated cache', () => {
  let backend: Backend;
  beforeAll(() => {
    backend = createHostBackend({ kernels: 'js', threads: 1 });
  });
  afterAll(() => backend.dispose());

  /** Loads `dir`, builds a model holding 3 blocks of 16 per layer, returns its footprint and the allocated bytes. */
  function measure(dir: string, kvCache: KvCacheChoice): { fp: KvCacheFootprint; allocated: number; c8: number } {
    const weights = loadLlamaWeights(dir, backend, { kvCache });
    const model = new LlamaModel(weights, backend, { maxTokensPerStep: 8, maxSeqsPerStep: 1, maxContext: 40, blockSize: 16 });
    try {
      let allocated = 0;
      for (let l = 0; l < weights.layers.length; l++) allocated += model.readKvCache(l, 'k').byteLength + model.readKvCache(l, 'v').byteLength;
      const c8 = weights.layers.reduce((s, L) => s + (L.kvQuant ? Object.values(L.kvQuant).reduce((a, x) => a + x.byteLength, 0) : 0), 0);
      return { fp: kvCacheFootprint(model), allocated, c8 };
    } finally {
      model.dispose();
      weights.free();
    }
  }

  it('int8 on a checkpoint without C8 tensors is E_USAGE naming the missing tensors', () => {
    const e = usageError(() => loadLlamaWeights(RTN_REF, backend, { kvCache: 'int8' }));
    for (const n of c8TensorNames(0)) expect(e.message).toContain(n);
    expect(e.message).toContain('--use_kvcache_quant True');
  });

  it('storage bytes equal the K/V arrays the backend allocated; C8 bytes equal the scale/offset arrays held', () => {
    const int8 = measure(C8_REF, 'int8');
    expect(int8.fp).toMatchObject({ dtype: 'int8', numBlocks: 3, blockSize: 16, layers: LAYERS, ranks: 1 });
    expect(int8.fp.storageBytes).toBe(int8.allocated);
    expect(int8.fp.storageBytes).toBe(3 * 16 * LAYERS * 2 * KV_DIM); // 1 byte per element
    expect(int8.fp.quantBytes).toBe(int8.c8);
    expect(int8.fp.quantBytes).toBe(C8_ARRAY_BYTES);
    expect(int8.fp.bytes).toBe(int8.fp.storageBytes + int8.fp.quantBytes);
    // auto picks int8 on a C8 checkpoint, float on one without
    expect(measure(C8_REF, 'auto').fp.dtype).toBe('int8');
    expect(measure(RTN_REF, 'auto').fp.dtype).toBe('f32');
  });

  it('float ignores the C8 tensors (f32 on the host); int8 storage is half of f16 and a quarter of f32 for the same blocks', () => {
    const int8 = measure(C8_REF, 'int8');
    const float = measure(C8_REF, 'float');
    const f16 = measure(C8_REF, 'f16');
    expect(float.fp).toMatchObject({ dtype: 'f32', quantBytes: 0 });
    expect(float.c8).toBe(0);
    expect(f16.fp.dtype).toBe('f16');
    for (const m of [float, f16]) expect(m.fp.storageBytes).toBe(m.allocated);
    expect(2 * int8.fp.storageBytes).toBe(f16.fp.bytes);
    expect(4 * int8.fp.storageBytes).toBe(float.fp.bytes);
    // the scale/offset arrays are a fixed cost per layer, not per token: 16·kvDim bytes per layer on top of half
    expect(int8.fp.bytes - f16.fp.bytes / 2).toBe(C8_ARRAY_BYTES);
  });
});

interface RunJson {
  output_ids: number[];
  kv_cache: { dtype: string; bytes: number; storage_bytes: number; quant_bytes: number; num_blocks: number; block_size: number; layers: number; ranks: number };
}

/** The RTN recipe of reference/w8a16-rtn (recipe.json) without its disable list; C8 adds calibration only. */
const RTN_FLAGS = ['--w_sym', 'False', '--a_bit', '16', '--mm_tensor', 'False', '--act_method', '3', '--device_type', 'cpu'];
const PROMPT = [1, 162, 38, 15, 28, 206, 236, 138, 220, 245, 9, 73]; // prompt.json
const NEW_TOKENS = 24;

describe('run --kv_cache_dtype on tiny-llama3-fp16 converted with and without C8 (built cli)', () => {
  let work: string;
  let rtn: string;
  let c8: string;

  beforeAll(() => {
    work = scratchDir('w8a16-kvcache-');
    rtn = join(work, 'rtn');
    c8 = join(work, 'c8');
    for (const [out, extra] of [
      [rtn, []],
      [c8, ['--use_kvcache_quant', 'True', '--calib_file', join(SRC, 'calib.jsonl')]],
    ] as const) {
      const r = runCli(['convert', '--model_path', SRC, '--save_directory', out, ...RTN_FLAGS, ...extra]);
      expect(r.status, r.stderr).toBe(0);
    }
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  function run(dir: string, ...flags: string[]): RunJson {
    const r = runCli(['run', dir, '--input_ids', PROMPT.join(','), '--max_output_length', String(NEW_TOKENS), '--ignore_eos', '--json', '--kernels', 'native', ...flags]);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    return JSON.parse(lines[0]) as RunJson;
  }

  it('the two conversions hold the same weights; the C8 one adds exactly the 16 kv_cache tensors', () => {
    const a = loadAllTensors(rtn);
    const b = loadAllTensors(c8);
    const extra = [...b.keys()].filter((n) => !a.has(n)).sort();
    expect(extra).toEqual([...Array(LAYERS).keys()].flatMap((l) => c8TensorNames(l)).sort());
    for (const [name, t] of a) expect(Buffer.from(b.get(name)!.bytes).equals(Buffer.from(t.bytes)), name).toBe(true);
  });

  it('--kv_cache_dtype float on the C8 checkpoint gives the greedy tokens of the checkpoint without C8', () => {
    const plain = run(rtn);
    const float = run(c8, '--kv_cache_dtype', 'float');
    expect(plain.kv_cache.dtype).toBe('f32');
    expect(float.kv_cache.dtype).toBe('f32');
    expect(float.output_ids).toHaveLength(NEW_TOKENS);
    expect(float.output_ids).toEqual(plain.output_ids);
    expect(float.kv_cache).toEqual(plain.kv_cache);
  });

  it('auto and int8 use the C8 cache; its reported bytes are under half the float cache of the same context', () => {
    const auto = run(c8);
    const int8 = run(c8, '--kv_cache_dtype', 'int8');
    const float = run(c8, '--kv_cache_dtype', 'float');
    expect(auto.kv_cache).toEqual(int8.kv_cache);
    expect(int8.kv_cache).toMatchObject({ dtype: 'int8', num_blocks: 1, block_size: 128, layers: LAYERS, ranks: 1, quant_bytes: C8_ARRAY_BYTES });
    expect(int8.kv_cache.num_blocks).toBe(float.kv_cache.num_blocks);
    expect(4 * int8.kv_cache.storage_bytes).toBe(float.kv_cache.storage_bytes);
    expect(int8.kv_cache.bytes).toBeLessThanOrEqual(float.kv_cache.bytes / 2);
    expect(int8.output_ids).toHaveLength(NEW_TOKENS);
    // On this prompt the int8 cache's rounding flips a close greedy choice (at the 6th new token): the float run
    // above really left the C8 path.
    expect(int8.output_ids).not.toEqual(float.output_ids);
  });

  it('under --world_size 2 the ranks split the KV heads: the same total bytes, reported over 2 ranks', () => {
    const one = run(c8, '--kv_cache_dtype', 'int8');
    const two = run(c8, '--kv_cache_dtype', 'int8', '--world_size', '2');
    expect(two.kv_cache).toEqual({ ...one.kv_cache, ranks: 2 });
    expect(two.output_ids).toEqual(one.output_ids);
  });

  it('--kv_cache_dtype int8 on the checkpoint without C8 exits 2 with E_USAGE naming the flag and the tensors', () => {
    const r = runCli(['run', rtn, '--input_ids', '1,2', '--kv_cache_dtype', 'int8', '--json']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('error E_USAGE: --kv_cache_dtype int8:');
    expect(r.stderr).toContain('model.layers.0.self_attn.k_proj.kv_cache_scale');
    expect(r.stderr).toContain('model.layers.0.self_attn.v_proj.kv_cache_offset');
    expect(r.stdout).toBe('');
  });
});
