// Paged KV cache bookkeeping (vLLM / run_pa style): a pool of fixed-size blocks, a block table per sequence,
// slot mapping for new tokens, and the flat block-table arrays an attention kernel reads. Storage-agnostic:
// the K/V memory itself belongs to a backend (one `[numBlocks, blockSize, nKvHeads, headDim]` pair per layer).

import { KvCacheError } from './errors';

/** run_pa's `--block_size` default. */
export const DEFAULT_BLOCK_SIZE = 128;

/** Element type the backend stores K/V in; carried through so one object describes the whole cache. */
export type KvStorageDType = 'f32' | 'f16' | 'int8';

/** Bytes per stored K or V element, by storage type. */
export const KV_STORAGE_BYTES = { f32: 4, f16: 2, int8: 1 } as const satisfies Record<KvStorageDType, number>;

export interface PagedKvCacheOptions {
  numBlocks: number;
  /** Tokens per block (default 128, as run_pa). */
  blockSize?: number;
  /** Storage element type (default `f32`). */
  dtype?: KvStorageDType;
  /** What the user can change when blocks run out, quoted in E_KV_BLOCKS_EXHAUSTED (e.g. `--num_blocks`). */
  exhaustedHint?: string;
}

/** Bytes of K+V storage for `numBlocks` blocks over every layer: `2 · layers · numBlocks · blockSize · kvDim · bytes`. */
export function kvCacheBytes(
  numBlocks: number,
  blockSize: number,
  nLayers: number,
  nKvHeads: number,
  headDim: number,
  dtype: KvStorageDType,
): number {
  return 2 * nLayers * numBlocks * blockSize * nKvHeads * headDim * KV_STORAGE_BYTES[dtype];
}

/** Blocks needed to hold `tokens` tokens. */
export function blocksForTokens(tokens: number, blockSize: number): number {
  return Math.ceil(tokens / blockSize);
}

function checkCount(what: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new KvCacheError('E_KV_ARGUMENT', `${what} must be an integer >= ${min}, found ${v}`);
  }
}

/**
 * A free list of block ids 0..numBlocks-1. Blocks are handed out lowest id first and returned ones are reused
 * before untouched ones (LIFO), which keeps a short run's working set small.
 */
export class BlockAllocator {
  readonly numBlocks: number;
  private readonly freeList: Int32Array;
  private freeTop: number;

  constructor(numBlocks: number) {
    checkCount('numBlocks', numBlocks, 1);
    this.numBlocks = numBlocks;
    this.freeList = new Int32Array(numBlocks);
    for (let i = 0; i < numBlocks; i++) this.freeList[i] = numBlocks - 1 - i;
    this.freeTop = numBlocks;
  }

  get freeCount(): number {
    return this.freeTop;
  }

  /** Pops one block id; the caller has checked `freeCount`. */
  take(): number {
    if (this.freeTop === 0) throw new KvCacheError('E_KV_BLOCKS_EXHAUSTED', `no free block left of ${this.numBlocks}`);
    return this.freeList[--this.freeTop];
  }

  give(block: number): void {
    if (!Number.isInteger(block) || block < 0 || block >= this.numBlocks || this.freeTop >= this.numBlocks) {
      throw new KvCacheError('E_KV_ARGUMENT', `cannot return block ${block}: expected an allocated id in 0..${this.numBlocks - 1}`);
    }
    this.freeList[this.freeTop++] = block;
  }
}

interface SeqState {
  /** Block ids in order: token t lives in blocks[t / blockSize]. */
  blocks: number[];
  /** Tokens reserved (positions 0..length-1 have a slot). */
  length: number;
}

/** Shape-compatible with ascend-runtime's AttentionBatch fields it fills (no dependency on that package). */
export interface BlockTablesOut {
  /** `[numSeqs * maxBlocksPerSeq]`, row s = sequence s's blocks, unused entries 0. */
  blockTables: Int32Array;
  /** `[numSeqs]` tokens held per sequence. */
  contextLens: Int32Array;
  maxBlocksPerSeq: number;
}

/**
 * Block tables for a set of sequences. Positions are reserved before they are written: `allocate` a prompt, then
 * `append` one token per decode step; `slots` gives where the backend's kvWrite must put each new token.
 */
export class PagedKvCache {
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly dtype: KvStorageDType;
  private readonly allocator: BlockAllocator;
  private readonly seqs = new Map<number, SeqState>();
  private readonly hint: string;

  constructor(options: PagedKvCacheOptions) {
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    checkCount('blockSize', blockSize, 1);
    const dtype = options.dtype ?? 'f32';
    if (!(dtype in KV_STORAGE_BYTES)) throw new KvCacheError('E_KV_ARGUMENT', `dtype must be one of f32, f16, int8, found ${String(dtype)}`);
    this.allocator = new BlockAllocator(options.numBlocks);
    this.numBlocks = options.numBlocks;
    this.blockSize = blockSize;
    this.dtype = dtype;
    this.hint = options.exhaustedHint ?? 'numBlocks';
  }

  get freeBlocks(): number {
    return this.allocator.freeCount;
  }

  /** Sequence ids currently holding blocks, in allocation order. */
  get sequenceIds(): number[] {
    return [...this.seqs.keys()];
  }

  has(seqId: number): boolean {
    return this.seqs.has(seqId);
  }

  /** Tokens reserved for `seqId`. */
  length(seqId: number): number {
    return this.seq(seqId).length;
  }

  /** The block ids of `seqId`, in order (a copy). */
  blockTable(seqId: number): number[] {
    return [...this.seq(seqId).blocks];
  }

  /** Whether `tokens` more tokens fit for `seqId` (a new sequence when it holds nothing yet). */
  canGrow(seqId: number, tokens: number): boolean {
    return this.blocksNeeded(seqId, tokens) <= this.freeBlocks;
  }

  /** Starts sequence `seqId` with `tokens` positions reserved (its prompt). All-or-nothing. */
  allocate(seqId: number, tokens: number): void {
    if (this.seqs.has(seqId)) throw new KvCacheError('E_KV_SEQ_EXISTS', `sequence ${seqId} already holds ${this.seqs.get(seqId)!.blocks.length} blocks; release it first`);
    checkCount(`allocate(${seqId}): tokens`, tokens, 0);
    this.reserve(seqId, { blocks: [], length: 0 }, tokens);
  }

  /** Reserves `tokens` more positions (default 1: one decode step) for `seqId`. All-or-nothing. */
  append(seqId: number, tokens = 1): void {
    checkCount(`append(${seqId}): tokens`, tokens, 0);
    this.reserve(seqId, this.seq(seqId), tokens);
  }

  /** Returns every block of `seqId` to the pool and forgets it. */
  release(seqId: number): void {
    const s = this.seq(seqId);
    for (let i = s.blocks.length - 1; i >= 0; i--) this.allocator.give(s.blocks[i]);
    this.seqs.delete(seqId);
  }

  /** Releases every sequence. */
  reset(): void {
    for (const id of [...this.seqs.keys()]) this.release(id);
  }

  /** Cache slot of position `pos` of `seqId`: `block · blockSize + pos % blockSize`. */
  slot(seqId: number, pos: number): number {
    const s = this.seq(seqId);
    if (!Number.isInteger(pos) || pos < 0 || pos >= s.length) {
      throw new KvCacheError('E_KV_ARGUMENT', `sequence ${seqId}: position ${pos} is outside its ${s.length} reserved tokens`);
    }
    return s.blocks[Math.floor(pos / this.blockSize)] * this.blockSize + (pos % this.blockSize);
  }

  /** Writes the slots of positions `start .. start+count-1` of `seqId` into `out[outOffset ..]`. Allocates nothing. */
  slots(out: Int32Array, outOffset: number, seqId: number, start: number, count: number): void {
    const s = this.seq(seqId);
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > s.length) {
      throw new KvCacheError('E_KV_ARGUMENT', `sequence ${seqId}: positions [${start}, ${start + count}) are outside its ${s.length} reserved tokens`);
    }
    if (outOffset < 0 || outOffset + count > out.length) {
      throw new KvCacheError('E_KV_ARGUMENT', `slots: output holds ${out.length} entries, need ${outOffset + count}`);
    }
    const bs = this.blockSize;
    for (let i = 0; i < count; i++) {
      const pos = start + i;
      const b = (pos / bs) | 0;
      out[outOffset + i] = s.blocks[b] * bs + (pos - b * bs);
    }
  }

  /**
   * Fills `out.blockTables` (row stride `out.maxBlocksPerSeq`) and `out.contextLens` for `seqIds` in order:
   * the block-table half of an attention batch. Allocates nothing.
   */
  fillBlockTables(out: BlockTablesOut, seqIds: ArrayLike<number>): void {
    const n = seqIds.length;
    const stride = out.maxBlocksPerSeq;
    if (out.contextLens.length < n || out.blockTables.length < n * stride) {
      throw new KvCacheError(
        'E_KV_ARGUMENT',
        `fillBlockTables: ${n} sequences need contextLens[${n}] and blockTables[${n * stride}], found ${out.contextLens.length} and ${out.blockTables.length}`,
      );
    }
    for (let i = 0; i < n; i++) {
      const s = this.seq(seqIds[i]);
      if (s.blocks.length > stride) {
        throw new KvCacheError('E_KV_ARGUMENT', `fillBlockTables: sequence ${seqIds[i]} holds ${s.blocks.length} blocks, more than maxBlocksPerSeq ${stride}`);
      }
      const row = i * stride;
      for (let b = 0; b < s.blocks.length; b++) out.blockTables[row + b] = s.blocks[b];
      out.blockTables.fill(0, row + s.blocks.length, row + stride);
      out.contextLens[i] = s.length;
    }
  }

  /** Convenience: fresh block-table arrays for `seqIds`, the row stride being their largest block count. */
  blockTablesFor(seqIds: ArrayLike<number>): BlockTablesOut {
    let maxBlocksPerSeq = 1;
    for (let i = 0; i < seqIds.length; i++) maxBlocksPerSeq = Math.max(maxBlocksPerSeq, this.seq(seqIds[i]).blocks.length);
    const out: BlockTablesOut = {
      blockTables: new Int32Array(seqIds.length * maxBlocksPerSeq),
      contextLens: new Int32Array(seqIds.length),
      maxBlocksPerSeq,
    };
    this.fillBlockTables(out, seqIds);
    return out;
  }

  private seq(seqId: number): SeqState {
    const s = this.seqs.get(seqId);
    if (s === undefined) throw new KvCacheError('E_KV_SEQ_UNKNOWN', `sequence ${seqId} holds no blocks (never allocated, or released)`);
    return s;
  }

  private blocksNeeded(seqId: number, tokens: number): number {
    const s = this.seqs.get(seqId);
    const length = s ? s.length : 0;
    const have = s ? s.blocks.length : 0;
    return Math.max(0, blocksForTokens(length + tokens, this.blockSize) - have);
  }

  private reserve(seqId: number, s: SeqState, tokens: number): void {
    const need = Math.max(0, blocksForTokens(s.length + tokens, this.blockSize) - s.blocks.length);
    if (need > this.allocator.freeCount) {
      const used = this.numBlocks - this.allocator.freeCount;
      throw new KvCacheError(
        'E_KV_BLOCKS_EXHAUSTED',
        `KV cache out of blocks: sequence ${seqId} needs ${need} more block(s) of ${this.blockSize} tokens to grow from ${s.length} to ${s.length + tokens} tokens, ` +
          `but only ${this.allocator.freeCount} of ${this.numBlocks} are free (${used} in use by ${this.seqs.size} sequence(s)); raise ${this.hint}`,
      );
    }
    for (let i = 0; i < need; i++) s.blocks.push(this.allocator.take());
    s.length += tokens;
    this.seqs.set(seqId, s);
  }
}
