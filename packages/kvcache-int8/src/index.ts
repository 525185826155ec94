// @w8a16/kvcache-int8: paged KV-cache bookkeeping (blocks, block tables, slot mapping; storage stays with the
// backend) and the C8 int8 KV scale/offset math of msModelSlim (spec §3.2). Depends only on quant-core.

export { KvCacheError, type KvCacheErrorCode } from './errors';
export {
  BlockAllocator,
  DEFAULT_BLOCK_SIZE,
  KV_STORAGE_BYTES,
  PagedKvCache,
  blocksForTokens,
  kvCacheBytes,
  type BlockTablesOut,
  type KvStorageDType,
  type PagedKvCacheOptions,
} from './paged-cache';
export { createMinMax, kvScalesFromMinMax, updateMinMax, type KvQuantScales, type KvScaleOptions } from './c8';
