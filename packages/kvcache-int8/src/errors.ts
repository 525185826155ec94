// The one error class of @w8a16/kvcache-int8: every failure carries a string `code` callers can branch on.

export type KvCacheErrorCode =
  | 'E_KV_BLOCKS_EXHAUSTED' // a sequence needs more blocks than are free
  | 'E_KV_SEQ_UNKNOWN' // a sequence id that was never allocated (or was released)
  | 'E_KV_SEQ_EXISTS' // allocate() on an id that already holds blocks
  | 'E_KV_ARGUMENT'; // a malformed argument (negative count, bad block size, short output array, ...)

export class KvCacheError extends Error {
  override readonly name = 'KvCacheError';
  constructor(
    readonly code: KvCacheErrorCode,
    message: string,
  ) {
    super(message);
  }
}
