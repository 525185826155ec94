// Argument checks shared by the Backend implementations (host, Ascend): one error code and one wording per misuse.
// Checks only, no state and no allocation on the success path; backend-specific rules (dtypes a device takes) stay in each backend.

import type { AttentionBatch, EmbeddingDesc, FloatLinearDesc, KvCacheDType, KvCacheDesc, Tensor, W8A16LinearDesc } from './backend';
import { asTypedWeight } from './dtype';
import { BackendError } from './errors';

/** Names the backend in handle and lifetime messages ("not a live tensor of this host backend"). */
export type BackendLabel = 'host' | 'ascend';

/** What a backend's tensor class exposes for the liveness check: views point at their base, which owns the storage. */
interface TensorHandle {
  readonly base: object | undefined;
  readonly alive: boolean;
}

/** Weights, rope tables and cache layers: freed by freeWeight or dispose. */
interface WeightHandle {
  freed: boolean;
}

type HandleClass<T> = abstract new (...args: never[]) => T;

const KV_CACHE_DTYPES: readonly KvCacheDType[] = ['f32', 'f16', 'int8'];
const KV_QUANT_KEYS = ['kScale', 'kOffset', 'vScale', 'vOffset'] as const;
const KV_ZERO_POINT_KEYS = ['kOffset', 'vOffset'] as const;

// --- generic -----------------------------------------------------------------------------------------------

export function positiveInt(value: number, what: string): void {
  if (!Number.isInteger(value) || value <= 0) throw new BackendError('E_ARGUMENT', `${what}: expected a positive integer, found ${value}`);
}

/** `arr` (when given) has `want` elements. */
export function lengthIs(arr: ArrayLike<number> | undefined, want: number, what: string): void {
  if (arr && arr.length !== want) throw new BackendError('E_SHAPE', `${what}: expected ${want} elements, found ${arr.length}`);
}

export function shapeIs(t: Tensor, rows: number, cols: number, what: string): void {
  if (t.shape[0] !== rows || t.shape[1] !== cols) {
    throw new BackendError('E_SHAPE', `${what}: expected [${rows}, ${cols}], found [${t.shape.join(', ')}]`);
  }
}

// --- handles and lifetime ------------------------------------------------------------------------------------

export function checkNotDisposed(disposed: boolean, backend: BackendLabel): void {
  if (disposed) throw new BackendError('E_DISPOSED', `${backend} backend: used after dispose()`);
}

/** `x` as a live tensor of the backend whose tensor class is `cls` and whose live handles are `live`. */
export function liveTensor<T extends TensorHandle>(x: unknown, cls: HandleClass<T>, live: ReadonlySet<unknown>, what: string, backend: BackendLabel): T {
  if (!(x instanceof cls) || !live.has(x.base ?? x) || !x.alive) {
    throw new BackendError('E_FOREIGN_HANDLE', `${what}: not a live tensor of this ${backend} backend`);
  }
  return x;
}

/** `x` as a live weight (or rope table, or cache layer) of class `cls` of this backend. */
export function liveWeight<C extends HandleClass<WeightHandle>>(x: unknown, cls: C, live: ReadonlySet<unknown>, what: string, backend: BackendLabel): InstanceType<C> {
  if (!(x instanceof cls) || x.freed || !live.has(x)) {
    throw new BackendError('E_FOREIGN_HANDLE', `${what}: not a live ${cls.name} of this ${backend} backend`);
  }
  return x as InstanceType<C>;
}

/** freeWeight's argument: any live weight handle of this backend. */
export function checkFreeWeight(h: WeightHandle, live: ReadonlySet<unknown>): void {
  if (!live.has(h) || h.freed) throw new BackendError('E_FOREIGN_HANDLE', 'freeWeight: not a live handle of this backend');
}

/** free's argument must own its storage: a view dies with its base. */
export function checkFreeTensor(base: object | undefined): void {
  if (base) throw new BackendError('E_ARGUMENT', 'free: a view is released with its base tensor');
}

// --- memory --------------------------------------------------------------------------------------------------

export function checkAllocShape(rows: number, cols: number): void {
  positiveInt(rows, 'alloc rows');
  positiveInt(cols, 'alloc cols');
}

/** view(t, rowStart, rows): a non-empty run of whole rows inside the `tensorRows` rows of t. */
export function checkViewRows(rowStart: number, rows: number, tensorRows: number): void {
  if (!Number.isInteger(rowStart) || !Number.isInteger(rows) || rowStart < 0 || rows <= 0 || rowStart + rows > tensorRows) {
    throw new BackendError('E_RANGE', `view: rows ${rowStart}..${rowStart + rows - 1} outside a tensor of ${tensorRows} rows`);
  }
}

/** upload(dst, src): an f32 tensor takes a Float32Array (f16/bf16 tensors take either); src fills dst exactly. */
export function checkUpload(dst: Tensor, src: Float32Array | Uint16Array): void {
  if (dst.dtype === 'f32' && !(src instanceof Float32Array)) throw new BackendError('E_DTYPE', 'upload: an f32 tensor takes a Float32Array');
  lengthIs(src, dst.shape[0] * dst.shape[1], 'upload');
}

/** download(src, dst): dst holds every element of src. */
export function checkDownload(src: Tensor, dst: Float32Array): void {
  lengthIs(dst, src.shape[0] * src.shape[1], 'download dst');
}

// --- weights -------------------------------------------------------------------------------------------------

/** The embedding table's data as the typed array of its dtype (see asTypedWeight). */
export function checkEmbeddingDesc(desc: EmbeddingDesc): Float32Array | Uint16Array {
  positiveInt(desc.vocab, 'embedding vocab');
  positiveInt(desc.hidden, 'embedding hidden');
  return asTypedWeight(desc.data, desc.dtype, desc.vocab * desc.hidden, 'embedding');
}

export function checkNormWeight(weight: Float32Array): void {
  positiveInt(weight.length, 'norm weight length');
}

/** The weight's name for messages and its data as the typed array of its dtype. */
export function checkFloatLinearDesc(desc: FloatLinearDesc): { what: string; data: Float32Array | Uint16Array } {
  const what = desc.name ?? 'float linear';
  positiveInt(desc.n, `${what} n`);
  positiveInt(desc.k, `${what} k`);
  lengthIs(desc.bias, desc.n, `${what} bias`);
  return { what, data: asTypedWeight(desc.data, desc.dtype, desc.n * desc.k, what) };
}

/** Returns the weight's name for messages. */
export function checkW8A16LinearDesc(desc: W8A16LinearDesc): string {
  const what = desc.name ?? 'w8a16 linear';
  positiveInt(desc.n, `${what} n`);
  positiveInt(desc.k, `${what} k`);
  if (!(desc.weight instanceof Int8Array)) throw new BackendError('E_DTYPE', `${what}: weight must be an Int8Array`);
  lengthIs(desc.weight, desc.n * desc.k, `${what} weight`);
  lengthIs(desc.scale, desc.n, `${what} scale`);
  lengthIs(desc.offset, desc.n, `${what} offset`);
  lengthIs(desc.bias, desc.n, `${what} bias`);
  return what;
}

export function checkRopeTable(headDim: number, invFreq: Float32Array): void {
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2) {
    throw new BackendError('E_ARGUMENT', `createRope: headDim must be a positive even integer, found ${headDim}`);
  }
  lengthIs(invFreq, headDim / 2, 'createRope invFreq');
}

/** Returns kvDim = nKvHeads · headDim. An int8 cache needs `quant`, each `[kvDim]`, with integral zero points. */
export function checkKvCacheDesc(desc: KvCacheDesc): number {
  positiveInt(desc.numBlocks, 'kv cache numBlocks');
  positiveInt(desc.blockSize, 'kv cache blockSize');
  positiveInt(desc.nKvHeads, 'kv cache nKvHeads');
  positiveInt(desc.headDim, 'kv cache headDim');
  if (!KV_CACHE_DTYPES.includes(desc.dtype)) {
    throw new BackendError('E_DTYPE', `kv cache: unknown dtype ${desc.dtype}, expected one of ${KV_CACHE_DTYPES.join(', ')}`);
  }
  const kvDim = desc.nKvHeads * desc.headDim;
  if (desc.dtype === 'int8') {
    if (!desc.quant) throw new BackendError('E_ARGUMENT', 'kv cache int8: quant (scale/offset per channel) is required');
    for (const key of KV_QUANT_KEYS) lengthIs(desc.quant[key], kvDim, `kv cache ${key}`);
    for (const key of KV_ZERO_POINT_KEYS) {
      const bad = desc.quant[key].findIndex((o) => !Number.isInteger(o));
      // msModelSlim's offsets are round(...) - 128, always integral (spec §3.2); aclnnQuantize takes them as INT32
      if (bad >= 0) throw new BackendError('E_ARGUMENT', `kv cache ${key}[${bad}] = ${desc.quant[key][bad]}: zero points must be integers`);
    }
  }
  return kvDim;
}

// --- ops -----------------------------------------------------------------------------------------------------

/** embedding: every id indexes a row of the `vocab`-row table. */
export function checkTokenIds(ids: Int32Array, vocab: number): void {
  for (let t = 0; t < ids.length; t++) {
    if (!(ids[t] >= 0 && ids[t] < vocab)) {
      throw new BackendError('E_RANGE', `embedding: token id ${ids[t]} at row ${t} outside vocabulary 0..${vocab - 1}`);
    }
  }
}

/** rope: q and k have one row per position and whole heads; positions are non-negative. Returns the largest position. */
export function checkRope(q: Tensor, k: Tensor, positions: Int32Array, headDim: number): number {
  const T = positions.length;
  if (q.shape[0] !== T || k.shape[0] !== T || q.shape[1] % headDim || k.shape[1] % headDim) {
    throw new BackendError(
      'E_SHAPE',
      `rope: q [${q.shape}] and k [${k.shape}] must have ${T} rows (positions) and a multiple of headDim ${headDim} columns`,
    );
  }
  let maxPos = 0;
  for (let t = 0; t < T; t++) {
    if (!(positions[t] >= 0)) throw new BackendError('E_RANGE', `rope: negative position ${positions[t]} at row ${t}`);
    if (positions[t] > maxPos) maxPos = positions[t];
  }
  return maxPos;
}

/** gatherRows: every row index is inside the `srcRows` rows of src (all checked before anything is written). */
export function checkGatherRows(rows: Int32Array, srcRows: number): void {
  for (let i = 0; i < rows.length; i++) {
    if (!(rows[i] >= 0 && rows[i] < srcRows)) throw new BackendError('E_RANGE', `gatherRows: row ${rows[i]} outside 0..${srcRows - 1}`);
  }
}

/** kvWrite: every slot is below the cache's `capacity` slots (negative slots skip their row). */
export function checkKvSlots(slots: Int32Array, capacity: number): void {
  for (let t = 0; t < slots.length; t++) {
    if (slots[t] >= capacity) throw new BackendError('E_RANGE', `kvWrite: slot ${slots[t]} at row ${t} beyond the cache's ${capacity} slots`);
  }
}

/** pagedAttention: q holds whole groups of nKvHeads heads of headDim. Returns nHeads. */
export function attentionHeads(q: Tensor, nKvHeads: number, headDim: number): number {
  const nHeads = q.shape[1] / headDim;
  if (!Number.isInteger(nHeads) || nHeads % nKvHeads) {
    throw new BackendError('E_SHAPE', `pagedAttention: q has ${q.shape[1]} columns, not a multiple of nKvHeads·headDim (${nKvHeads}·${headDim})`);
  }
  return nHeads;
}

/**
 * pagedAttention's batch against T query rows and a cache of `numBlocks` blocks of `blockSize`: array lengths, row
 * ranges, the blocks each context reads, and every position inside its context. Returns the longest context (at least 1).
 */
export function checkAttentionBatch(b: AttentionBatch, T: number, cache: { readonly numBlocks: number; readonly blockSize: number }): number {
  const { numSeqs, queryStart, positions, contextLens, blockTables, maxBlocksPerSeq } = b;
  const { numBlocks, blockSize } = cache;
  lengthIs(queryStart, numSeqs + 1, 'pagedAttention queryStart');
  lengthIs(positions, T, 'pagedAttention positions');
  lengthIs(contextLens, numSeqs, 'pagedAttention contextLens');
  lengthIs(blockTables, numSeqs * maxBlocksPerSeq, 'pagedAttention blockTables');
  if (queryStart[0] !== 0 || queryStart[numSeqs] !== T) {
    throw new BackendError('E_SHAPE', `pagedAttention: queryStart must run from 0 to T=${T}, found ${queryStart[0]}..${queryStart[numSeqs]}`);
  }
  let maxContext = 1;
  for (let s = 0; s < numSeqs; s++) {
    const len = contextLens[s];
    if (len > maxBlocksPerSeq * blockSize) {
      throw new BackendError('E_RANGE', `pagedAttention: sequence ${s} context ${len} exceeds its ${maxBlocksPerSeq} blocks of ${blockSize}`);
    }
    for (let i = 0; i < Math.ceil(len / blockSize); i++) {
      const blk = blockTables[s * maxBlocksPerSeq + i];
      if (!(blk >= 0 && blk < numBlocks)) throw new BackendError('E_RANGE', `pagedAttention: sequence ${s} block ${i} is ${blk}, cache has ${numBlocks}`);
    }
    if (queryStart[s + 1] < queryStart[s]) throw new BackendError('E_SHAPE', `pagedAttention: queryStart decreases at sequence ${s}`);
    for (let r = queryStart[s]; r < queryStart[s + 1]; r++) {
      if (!(positions[r] >= 0 && positions[r] < len)) {
        throw new BackendError('E_RANGE', `pagedAttention: row ${r} (sequence ${s}) at position ${positions[r]}, context holds ${len}`);
      }
    }
    if (len > maxContext) maxContext = len;
  }
  return maxContext;
}

/** readKvCache: which half of the cache. */
export function checkKvHalf(which: string): void {
  if (which !== 'k' && which !== 'v') throw new BackendError('E_ARGUMENT', `readKvCache: expected 'k' or 'v', found ${String(which)}`);
}
