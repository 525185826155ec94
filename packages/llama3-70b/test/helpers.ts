// Test helpers for the app's end-to-end tests: fixture paths, running the built CLI, tiny checkpoints
// written byte by byte (so malformed ones can be made on purpose), and reading safetensors back.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { Checkpoint } from '@w8a16/format';
import { decodeFloats, type FloatDType } from '@w8a16/quant-core';

export const APP_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = resolve(APP_ROOT, '../..');
export const FIXTURES = resolve(REPO_ROOT, '../shared/fixtures');
export const CLI = join(APP_ROOT, 'bin/llama3-70b.js');

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string> = {}): CliRun {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function scratchDir(prefix = 'w8a16-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface RawTensor {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Writes a safetensors file by hand; `mutateHeader` may corrupt the header object before it is serialized. */
export function writeRawSafetensors(
  path: string,
  tensors: RawTensor[],
  opts: { mutateHeader?: (h: Record<string, unknown>) => void; headerText?: (json: string) => string; truncateBy?: number } = {},
): void {
  const header: Record<string, unknown> = {};
  let off = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.data.length] };
    off += t.data.length;
  }
  opts.mutateHeader?.(header);
  let json = JSON.stringify(header);
  if (opts.headerText) json = opts.headerText(json);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
  const hb = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  let file = Buffer.concat([len, hb, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
  if (opts.truncateBy) file = file.subarray(0, file.length - opts.truncateBy);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, file);
}

/** A deterministic tiny LLaMA (1-2 layers) as F32 tensors, for the bad-input tests. */
export const TINY_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  torch_dtype: 'float32',
  vocab_size: 16,
  hidden_size: 8,
  intermediate_size: 12,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 4,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  max_position_embeddings: 64,
  tie_word_embeddings: false,
  attention_bias: false,
  mlp_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
};

export function tinyTensors(): RawTensor[] {
  const c = TINY_CONFIG;
  const h = c.hidden_size;
  const kv = c.num_key_value_heads * c.head_dim;
  const q = c.num_attention_heads * c.head_dim;
  const shapes: [string, number[]][] = [
    ['model.embed_tokens.weight', [c.vocab_size, h]],
    ['model.layers.0.self_attn.q_proj.weight', [q, h]],
    ['model.layers.0.self_attn.k_proj.weight', [kv, h]],
    ['model.layers.0.self_attn.v_proj.weight', [kv, h]],
    ['model.layers.0.self_attn.o_proj.weight', [h, q]],
    ['model.layers.0.mlp.gate_proj.weight', [c.intermediate_size, h]],
    ['model.layers.0.mlp.up_proj.weight', [c.intermediate_size, h]],
    ['model.layers.0.mlp.down_proj.weight', [h, c.intermediate_size]],
    ['model.layers.0.input_layernorm.weight', [h]],
    ['model.layers.0.post_attention_layernorm.weight', [h]],
    ['model.norm.weight', [h]],
    ['lm_head.weight', [c.vocab_size, h]],
  ];
  let seed = 12345;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed / 2 ** 32 - 0.5) * 0.2;
  };
  return shapes.map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = name.includes('norm') ? 1 + rnd() : rnd();
    return { name, dtype: 'F32', shape, data: new Uint8Array(f.buffer) };
  });
}

/** Writes the tiny model to `dir` (config.json + model.safetensors) and returns the directory. */
export function writeTinyModel(dir: string, opts: Parameters<typeof writeRawSafetensors>[2] & { tensors?: RawTensor[]; config?: unknown } = {}): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(opts.config ?? TINY_CONFIG, null, 2));
  writeRawSafetensors(join(dir, 'model.safetensors'), opts.tensors ?? tinyTensors(), opts);
  return dir;
}

/** One tensor of a written checkpoint, as raw bytes. */
export interface LoadedTensor {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Every tensor of a checkpoint directory (single file or shards), by name. For small test checkpoints only. */
export function loadAllTensors(dir: string): Map<string, LoadedTensor> {
  const ck = Checkpoint.open(dir);
  try {
    const out = new Map<string, LoadedTensor>();
    for (const t of ck.tensors) {
      const rows = t.shape.length === 0 ? 1 : t.shape[0];
      out.set(t.name, { dtype: t.dtype, shape: [...t.shape], bytes: ck.readRows(t.name, 0, rows).slice() });
    }
    return out;
  } finally {
    ck.close();
  }
}

/** A float tensor's values as float32. */
export function tensorAsF32(t: LoadedTensor): Float32Array {
  const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
  decodeFloats(out, t.bytes, t.dtype as FloatDType);
  return out;
}

/** Largest |a[i] − b[i]| of two equally long float32 arrays (their lengths are asserted equal). */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
