// The Backend interface: every operation a LLaMA forward pass needs, on opaque handles owned by the backend.
// Types and contracts only; the host (CPU) implementation is in host/, the Ascend (NPU) one comes later.

/** Element type of an activation tensor. The host backend computes in f32; f16/bf16 are reserved for device backends. */
export type ActDType = 'f32' | 'f16' | 'bf16';

/** Element type of a float weight as the checkpoint stores it. */
export type FloatWeightDType = 'f32' | 'f16' | 'bf16';

/** Element type of the paged KV cache storage. `int8` quantizes on write with per-channel scale/offset. */
export type KvCacheDType = 'f32' | 'f16' | 'int8';

/**
 * Host bytes of a float tensor, row-major: a Float32Array for `f32`, a Uint16Array holding the raw bits for
 * `f16`/`bf16`, or a Uint8Array of the little-endian bytes of either (e.g. a slice of a safetensors file).
 */
export type FloatHostData = Float32Array | Uint16Array | Uint8Array;

/** Optional sink for the few lines a backend reports (which kernels it picked, fallbacks). */
export interface Logger {
  debug?(message: string): void;
  info?(message: string): void;
  warn?(message: string): void;
}

/**
 * A 2-D activation tensor `[rows, cols]` living wherever the backend keeps it (host memory, device memory).
 * Callers never see the storage: they move data with `upload` / `download`. Every activation of the forward
 * pass is 2-D: rows are tokens (T), cols a model dimension.
 */
export interface Tensor {
  readonly shape: readonly [rows: number, cols: number];
  readonly dtype: ActDType;
}

/** An embedding table `[vocab, hidden]` uploaded once at load. */
export interface EmbeddingTable {
  readonly vocab: number;
  readonly hidden: number;
  readonly dtype: FloatWeightDType;
}

/** An RMSNorm weight `[hidden]` (kept as f32). */
export interface NormWeight {
  readonly size: number;
}

/** A linear layer `y = x·Wᵀ + b`, weight `[n, k]` (n = out features, k = in features), uploaded once at load. */
export interface LinearWeight {
  readonly kind: 'float' | 'w8a16';
  /** Output features (rows of the weight). */
  readonly n: number;
  /** Input features (columns of the weight). */
  readonly k: number;
  /** Storage type of the weight: the float dtype, or `i8` for W8A16. */
  readonly dtype: FloatWeightDType | 'i8';
  readonly hasBias: boolean;
}

/** Rotary-embedding tables for one `headDim` / `invFreq`; see `computeInvFreq`. */
export interface RopeTable {
  readonly headDim: number;
}

/** One layer's paged KV cache: K and V, each `[numBlocks, blockSize, nKvHeads, headDim]` (run_pa's layout). */
export interface KvCacheLayer {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly nKvHeads: number;
  readonly headDim: number;
  readonly dtype: KvCacheDType;
}

export interface EmbeddingDesc {
  vocab: number;
  hidden: number;
  dtype: FloatWeightDType;
  /** `vocab * hidden` elements, row-major. */
  data: FloatHostData;
}

export interface FloatLinearDesc {
  n: number;
  k: number;
  dtype: FloatWeightDType;
  /** `n * k` elements, row-major `[n, k]` as in the checkpoint (not transposed). */
  data: FloatHostData;
  /** `[n]` bias, already converted to f32 by the caller. */
  bias?: Float32Array;
  /** Tensor name, used only in error messages. */
  name?: string;
}

export interface W8A16LinearDesc {
  n: number;
  k: number;
  /** `n * k` int8 codes, row-major `[n, k]` as msModelSlim writes them (not transposed). */
  weight: Int8Array;
  /** `[n]` per-row scale (the checkpoint's `weight_scale [n,1]`, converted to f32 by the caller). */
  scale: Float32Array;
  /**
   * `[n]` per-row offset as msModelSlim writes it (`weight_offset`, integral values in -128..127, NOT negated):
   * dequantized weight = `(q − offset)·scale`.
   */
  offset: Float32Array;
  /** `[n]` bias in f32. */
  bias?: Float32Array;
  /** Tensor name, used only in error messages. */
  name?: string;
}

/** Per-channel int8 KV quantization (spec §3.2): `q = clamp(round_half_even(x/scale + offset), −128, 127)`, dequant `(q − offset)·scale`. */
export interface KvQuantParams {
  /** `[nKvHeads * headDim]` each. */
  kScale: Float32Array;
  kOffset: Float32Array;
  vScale: Float32Array;
  vOffset: Float32Array;
}

export interface KvCacheDesc {
  numBlocks: number;
  blockSize: number;
  nKvHeads: number;
  headDim: number;
  dtype: KvCacheDType;
  /** Required when `dtype` is `int8`, ignored otherwise. */
  quant?: KvQuantParams;
}

/**
 * Where the query rows of a batch sit and which cache blocks they read. Sequences are packed one after another
 * in the rows of q / out (prefill rows and decode rows may be mixed). A query row at position p attends to the
 * keys at positions 0..p of its own sequence (causal); those keys must already be in the cache (`kvWrite` first).
 */
export interface AttentionBatch {
  /** Number of sequences. */
  numSeqs: number;
  /** `[numSeqs + 1]` cumulative row offsets: sequence s owns rows `queryStart[s] .. queryStart[s+1]-1`; `queryStart[numSeqs] = T`. */
  queryStart: Int32Array;
  /** `[T]` absolute position of each query row in its sequence (the same positions RoPE uses). */
  positions: Int32Array;
  /** `[numSeqs]` number of tokens of each sequence held in the cache (every `positions` entry is below it). */
  contextLens: Int32Array;
  /** `[numSeqs * maxBlocksPerSeq]` block ids; row s lists sequence s's blocks in order (token t is in block row[t / blockSize]). */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
}

export interface SamplingParams {
  /** `<= 0` means greedy (argmax). */
  temperature: number;
  /** Keep only the k most likely tokens; `0` or absent = off. */
  topK?: number;
  /** Keep the smallest most-likely set whose probability reaches p; `1` or absent = off. */
  topP?: number;
}

/** A seeded source of uniform floats in [0, 1); see `createRng`. Sampling is deterministic given the seed. */
export interface Rng {
  nextFloat(): number;
}

export interface BackendInfo {
  /** `host` now; `ascend` later. */
  readonly name: string;
  /** Kernels in use, e.g. `native-avx512`, `native-avx2`, `native-scalar`, `js`. */
  readonly kernels: string;
  /** Threads one operation may use. */
  readonly threads: number;
}

/**
 * Everything the LLaMA forward pass asks of a device. Ops write their output first and allocate nothing;
 * shapes are checked and a mismatch throws `BackendError` with code `E_SHAPE`. Handles from another backend
 * throw `E_FOREIGN_HANDLE`. Unless an op says so, `out` must not alias an input.
 */
export interface Backend {
  readonly info: BackendInfo;

  // --- memory -------------------------------------------------------------------------------------------
  /** A new activation tensor `[rows, cols]`, contents unspecified. */
  alloc(rows: number, cols: number, dtype?: ActDType): Tensor;
  /** A tensor sharing storage with rows `rowStart .. rowStart+rows-1` of `t` (no copy). Freeing `t` invalidates it. */
  view(t: Tensor, rowStart: number, rows: number): Tensor;
  /** Copy host data into `dst` (all of it, row-major). f32 tensors take a Float32Array. */
  upload(dst: Tensor, src: Float32Array | Uint16Array): void;
  /** Copy `src` to the host (into `dst` when given, else a new array) and return it. */
  download(src: Tensor, dst?: Float32Array): Float32Array;
  /** Release a tensor (not a view: views die with their base). */
  free(t: Tensor): void;

  // --- weights (given once at load; see each backend for its memory cost) ----------------------------------
  createEmbedding(desc: EmbeddingDesc): EmbeddingTable;
  createNormWeight(weight: Float32Array): NormWeight;
  createFloatLinear(desc: FloatLinearDesc): LinearWeight;
  createW8A16Linear(desc: W8A16LinearDesc): LinearWeight;
  /** Tables for `rope`: `invFreq` has `headDim / 2` entries (see `computeInvFreq`). */
  createRope(headDim: number, invFreq: Float32Array): RopeTable;
  /** Storage for one layer's K and V. Cost: `2 · numBlocks · blockSize · nKvHeads · headDim · bytes(dtype)`. */
  createKvCache(desc: KvCacheDesc): KvCacheLayer;
  /** Release a weight, rope table or cache layer. */
  freeWeight(w: EmbeddingTable | NormWeight | LinearWeight | RopeTable | KvCacheLayer): void;

  // --- ops ------------------------------------------------------------------------------------------------
  /** out[t] = table[ids[t]]; out `[ids.length, hidden]`. Throws `E_RANGE` for an id outside the vocabulary. */
  embedding(out: Tensor, table: EmbeddingTable, ids: Int32Array): void;
  /** HF LlamaRMSNorm: `out = x / sqrt(mean(x²) + eps) · weight`, per row, in f32. `out` may be `x`. */
  rmsNorm(out: Tensor, x: Tensor, weight: NormWeight, eps: number): void;
  /** `out[T, n] = x[T, k] · Wᵀ (+ bias)` for a float or W8A16 weight, f32 accumulation. */
  linear(out: Tensor, x: Tensor, w: LinearWeight): void;
  /**
   * Rotary embedding in place, HF `rotate_half` layout (pairs `i` and `i + headDim/2` of each head):
   * q `[T, nHeads·headDim]`, k `[T, nKvHeads·headDim]`, `positions [T]`.
   */
  rope(q: Tensor, k: Tensor, positions: Int32Array, table: RopeTable): void;
  /** `out = silu(gate) · up` elementwise. `out` may be `gate` or `up`. */
  siluMul(out: Tensor, gate: Tensor, up: Tensor): void;
  /** `out = a + b` elementwise (the residual add). `out` may be `a` or `b`. */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** out[i] = src[rows[i]] (e.g. the last row of each sequence before lm_head). */
  gatherRows(out: Tensor, src: Tensor, rows: Int32Array): void;
  /**
   * Scatter k and v (`[T, nKvHeads·headDim]`) into the cache: row t goes to slot `slots[t]`
   * (`slot = block·blockSize + offsetInBlock`); a negative slot skips the row. int8 caches quantize here.
   */
  kvWrite(cache: KvCacheLayer, k: Tensor, v: Tensor, slots: Int32Array): void;
  /**
   * Paged causal attention with grouped KV heads: out, q `[T, nHeads·headDim]`; query head h reads KV head
   * `h / (nHeads / nKvHeads)`; softmax scale `scale` (default `1/sqrt(headDim)`); int8 caches dequantize inside.
   */
  pagedAttention(out: Tensor, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale?: number): void;
  /** out[r] = index of the largest logit of row r (the lowest index on ties). */
  argmax(out: Int32Array, logits: Tensor): void;
  /** One token per row of `logits [rows, vocab]`, drawn with `rng` (greedy when temperature <= 0). */
  sample(out: Int32Array, logits: Tensor, params: SamplingParams, rng: Rng): void;
  /** Debug/test view of a cache: a host copy of K or V storage (`Float32Array` for f32, `Uint16Array` bits for f16, `Int8Array` for int8). */
  readKvCache(cache: KvCacheLayer, which: 'k' | 'v'): Float32Array | Uint16Array | Int8Array;

  /** Release everything this backend allocated; the backend is unusable afterwards. */
  dispose(): void;
}
