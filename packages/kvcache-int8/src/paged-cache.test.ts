import { describe, expect, it } from 'vitest';
import { BlockAllocator, DEFAULT_BLOCK_SIZE, KvCacheError, PagedKvCache, blocksForTokens, kvCacheBytes } from './index';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof KvCacheError ? e.code : `not a KvCacheError: ${String(e)}`;
  }
  return undefined;
}

describe('BlockAllocator', () => {
  it('hands out every block once, lowest id first, and reuses returned ones first', () => {
    const a = new BlockAllocator(4);
    expect([a.take(), a.take(), a.take()]).toEqual([0, 1, 2]);
    a.give(1);
    expect(a.take()).toBe(1);
    expect(a.take()).toBe(3);
    expect(a.freeCount).toBe(0);
    expect(codeOf(() => a.take())).toBe('E_KV_BLOCKS_EXHAUSTED');
  });

  it('rejects a block id outside the pool', () => {
    const a = new BlockAllocator(2);
    a.take();
    expect(codeOf(() => a.give(7))).toBe('E_KV_ARGUMENT');
  });
});

describe('PagedKvCache', () => {
  it('defaults to run_pa block size 128 and f32 storage', () => {
    const c = new PagedKvCache({ numBlocks: 3 });
    expect(c.blockSize).toBe(DEFAULT_BLOCK_SIZE);
    expect(DEFAULT_BLOCK_SIZE).toBe(128);
    expect(c.dtype).toBe('f32');
  });

  it('allocates ceil(tokens / blockSize) blocks and maps slots as block*blockSize + offset', () => {
    const c = new PagedKvCache({ numBlocks: 8, blockSize: 4, dtype: 'int8' });
    c.allocate(10, 6); // blocks 0, 1
    c.allocate(11, 4); // block 2
    expect(c.blockTable(10)).toEqual([0, 1]);
    expect(c.blockTable(11)).toEqual([2]);
    expect(c.freeBlocks).toBe(5);
    const out = new Int32Array(6);
    c.slots(out, 0, 10, 0, 6);
    expect([...out]).toEqual([0, 1, 2, 3, 4, 5]);
    c.append(11); // position 4 crosses into a new block: 3
    expect(c.blockTable(11)).toEqual([2, 3]);
    expect(c.slot(11, 4)).toBe(3 * 4 + 0);
    expect(c.slot(11, 3)).toBe(2 * 4 + 3);
    c.append(10); // position 6 still fits block 1
    expect(c.blockTable(10)).toEqual([0, 1]);
    expect(c.slot(10, 6)).toBe(1 * 4 + 2);
    expect(c.length(10)).toBe(7);
  });

  it('fills block tables and context lengths for a batch, zero-padding short rows', () => {
    const c = new PagedKvCache({ numBlocks: 8, blockSize: 2 });
    c.allocate(0, 5); // 3 blocks
    c.allocate(1, 1); // 1 block
    const out = { blockTables: new Int32Array(2 * 4).fill(-9), contextLens: new Int32Array(2), maxBlocksPerSeq: 4 };
    c.fillBlockTables(out, [1, 0]);
    expect([...out.contextLens]).toEqual([1, 5]);
    expect([...out.blockTables]).toEqual([3, 0, 0, 0, 0, 1, 2, 0]);
    const fresh = c.blockTablesFor([0, 1]);
    expect(fresh.maxBlocksPerSeq).toBe(3);
    expect([...fresh.blockTables]).toEqual([0, 1, 2, 3, 0, 0]);
    expect(codeOf(() => c.fillBlockTables({ ...out, maxBlocksPerSeq: 2 }, [0]))).toBe('E_KV_ARGUMENT');
  });

  it('raises E_KV_BLOCKS_EXHAUSTED naming blocks needed, free and the hint, and takes nothing', () => {
    const c = new PagedKvCache({ numBlocks: 3, blockSize: 4, exhaustedHint: '--num_blocks' });
    c.allocate(1, 8);
    let err: unknown;
    try {
      c.allocate(2, 9);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KvCacheError);
    expect((err as KvCacheError).code).toBe('E_KV_BLOCKS_EXHAUSTED');
    expect((err as Error).message).toMatch(/needs 3 more block\(s\) of 4 tokens/);
    expect((err as Error).message).toMatch(/only 1 of 3 are free/);
    expect((err as Error).message).toMatch(/raise --num_blocks/);
    expect(c.freeBlocks).toBe(1);
    expect(c.has(2)).toBe(false);
    expect(c.canGrow(1, 4)).toBe(true);
    expect(c.canGrow(1, 5)).toBe(false);
    c.append(1, 4);
    expect(codeOf(() => c.append(1))).toBe('E_KV_BLOCKS_EXHAUSTED');
    expect(c.length(1)).toBe(12);
  });

  it('release returns the blocks to the pool; unknown and duplicate ids are errors', () => {
    const c = new PagedKvCache({ numBlocks: 4, blockSize: 1 });
    c.allocate(5, 3);
    expect(codeOf(() => c.allocate(5, 1))).toBe('E_KV_SEQ_EXISTS');
    c.release(5);
    expect(c.freeBlocks).toBe(4);
    expect(codeOf(() => c.append(5))).toBe('E_KV_SEQ_UNKNOWN');
    expect(codeOf(() => c.release(5))).toBe('E_KV_SEQ_UNKNOWN');
    c.allocate(6, 4);
    expect(c.freeBlocks).toBe(0);
    c.reset();
    expect(c.freeBlocks).toBe(4);
    expect(c.sequenceIds).toEqual([]);
  });

  it('never gives one block to two live sequences under random allocate/append/release (seeded)', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed % n;
    };
    const c = new PagedKvCache({ numBlocks: 40, blockSize: 3 });
    let next = 0;
    for (let step = 0; step < 2000; step++) {
      const live = c.sequenceIds;
      const op = rnd(3);
      try {
        if (op === 0 || live.length === 0) c.allocate(next++, rnd(10));
        else if (op === 1) c.append(live[rnd(live.length)], 1 + rnd(4));
        else c.release(live[rnd(live.length)]);
      } catch (e) {
        expect((e as KvCacheError).code).toBe('E_KV_BLOCKS_EXHAUSTED');
      }
      const owned = c.sequenceIds.flatMap((id) => c.blockTable(id));
      expect(new Set(owned).size).toBe(owned.length);
      expect(owned.length + c.freeBlocks).toBe(40);
      for (const id of c.sequenceIds) expect(c.blockTable(id).length).toBe(blocksForTokens(c.length(id), 3));
    }
  });

  it('rejects bad arguments with E_KV_ARGUMENT', () => {
    expect(codeOf(() => new PagedKvCache({ numBlocks: 0 }))).toBe('E_KV_ARGUMENT');
    expect(codeOf(() => new PagedKvCache({ numBlocks: 2, blockSize: 0 }))).toBe('E_KV_ARGUMENT');
    const c = new PagedKvCache({ numBlocks: 2, blockSize: 2 });
    c.allocate(0, 2);
    expect(codeOf(() => c.slot(0, 2))).toBe('E_KV_ARGUMENT');
    expect(codeOf(() => c.slots(new Int32Array(1), 0, 0, 0, 2))).toBe('E_KV_ARGUMENT');
    expect(codeOf(() => c.append(0, -1))).toBe('E_KV_ARGUMENT');
  });

  it('kvCacheBytes counts K and V over every layer', () => {
    expect(kvCacheBytes(10, 128, 80, 8, 128, 'f16')).toBe(2 * 80 * 10 * 128 * 8 * 128 * 2);
    expect(kvCacheBytes(1, 4, 1, 1, 2, 'int8')).toBe(16);
  });
});
