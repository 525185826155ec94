// Test-only helpers (not exported by the package): fixture paths, a minimal safetensors reader and the
// float32 embedding → RMSNorm that produces layer 0's q/k/v input. A library test must not import
// @w8a16/format (module boundaries), hence this small local reader.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeFloats, type FloatDType } from '@w8a16/quant-core';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The monorepo root (packages/anti-outlier/src -> ../../..). */
export const REPO_ROOT = path.resolve(here, '../../..');
/** Reference fixtures live beside the repository, read in place. */
export const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures');
export const TINY = path.join(FIXTURES, 'tiny-llama3-fp16');
export const TINY_M3 = path.join(TINY, 'reference/w8a16-m3-c8');

/** A fixture header is a few KiB; anything this large means a corrupt length prefix. */
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export interface TensorF32 {
  dtype: FloatDType;
  shape: number[];
  /** The tensor's values widened to float32 (exact for F16/BF16/F32). */
  data: Float32Array;
}

/** Reads every float tensor of a safetensors file: 8-byte LE header length, JSON header, raw data. */
export function readSafetensors(file: string): Map<string, TensorF32> {
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > buf.length) {
    throw new Error(`${file}: header length ${headerLen} does not fit the file (${buf.length} bytes)`);
  }
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const dataStart = 8 + headerLen;
  const out = new Map<string, TensorF32>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (e.dtype !== 'F16' && e.dtype !== 'BF16' && e.dtype !== 'F32') continue;
    const [b, end] = e.data_offsets;
    if (dataStart + end > buf.length || b > end) throw new Error(`${file}: tensor ${name} offsets [${b}, ${end}] exceed the file`);
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset + dataStart + b, end - b);
    const numel = e.shape.reduce((p, q) => p * q, 1);
    const data = new Float32Array(numel);
    decodeFloats(data, bytes, e.dtype);
    out.set(name, { dtype: e.dtype, shape: e.shape, data });
  }
  return out;
}

export function tensor(map: Map<string, TensorF32>, name: string): Float32Array {
  const t = map.get(name);
  if (!t) throw new Error(`tensor ${name} not found`);
  return t.data;
}

/** The `input_ids` of line `index` (0-based) of a calib.jsonl. */
export function calibIds(file: string, index: number): number[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  return (JSON.parse(lines[index]) as { input_ids: number[] }).input_ids;
}

/** Float32 lanes of an AVX2 register: the fixture was produced by PyTorch's AVX2 CPU kernels. */
const AVX2_F32_LANES = 8;

/**
 * Σ p as PyTorch's AVX2 inner (contiguous) float32 sum adds it (aten SumKernel.cpp, vectorized_inner_sum):
 * 8-float vectors, four interleaved vector accumulators (row_sum's ILP factor), combined, then the
 * 8 lanes added left to right onto 0. For p.length a multiple of 8 (the fixture's hidden size 128).
 */
export function torchAvx2InnerSum(p: Float32Array): number {
  const f = Math.fround;
  const V = AVX2_F32_LANES;
  const nv = Math.floor(p.length / V);
  const sizeIlp = Math.floor(nv / 4);
  let total = 0;
  for (let l = 0; l < V; l++) {
    const ps = [0, 0, 0, 0];
    for (let i = 0; i < sizeIlp; i++) for (let k = 0; k < 4; k++) ps[k] = f(ps[k] + p[(i * 4 + k) * V + l]);
    for (let i = sizeIlp * 4; i < nv; i++) ps[0] = f(ps[0] + p[i * V + l]);
    total = f(total + f(f(f(ps[0] + ps[1]) + ps[2]) + ps[3]));
  }
  for (let i = nv * V; i < p.length; i++) total = f(total + p[i]);
  return total;
}

/**
 * HF LlamaRMSNorm of the embedding rows of `ids`, float32 as PyTorch's AVX2 CPU kernels compute it:
 * variance = mean(x²) (squares rounded, summed in torchAvx2InnerSum's order, divided by hidden),
 * h = x · (1 / sqrt(variance + eps)) (torch's vectorised rsqrt is a division by a sqrt), out = γ · h.
 */
export function embedRmsNorm(embed: Float32Array, gamma: Float32Array, ids: number[], hidden: number, eps: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(ids.length * hidden);
  const sq = new Float32Array(hidden);
  ids.forEach((id, t) => {
    const row = embed.subarray(id * hidden, (id + 1) * hidden);
    for (let j = 0; j < hidden; j++) sq[j] = row[j] * row[j];
    const variance = f(torchAvx2InnerSum(sq) / hidden);
    const rs = f(1 / f(Math.sqrt(f(variance + f(eps)))));
    for (let j = 0; j < hidden; j++) out[t * hidden + j] = f(gamma[j] * f(row[j] * rs));
  });
  return out;
}

/** mulberry32: a small seeded PRNG for generated test data (uniform in [0, 1)). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Float32 standard normal samples (Box–Muller) scaled by `scale`. */
export function gaussianF32(n: number, rand: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return out;
}
