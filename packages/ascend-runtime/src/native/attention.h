/* Paged attention kernel of the host backend (see attention.c). Inputs are validated by the caller (JS). */
#ifndef ASCEND_HOST_ATTENTION_H
#define ASCEND_HOST_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

enum { KV_F32 = 0, KV_F16 = 1, KV_INT8 = 2 };

typedef struct {
  float *out;                 /* [T, nHeads·headDim] */
  const float *q;             /* [T, nHeads·headDim] */
  const void *k, *v;          /* [numBlocks, blockSize, nKvHeads, headDim] of dtype */
  int dtype;
  const float *k_scale, *k_offset, *v_scale, *v_offset; /* int8 only, [nKvHeads·headDim] */
  int T, n_heads, n_kv_heads, head_dim, block_size, max_blocks;
  const int32_t *positions;   /* [T] */
  const int32_t *row_seq;     /* [T] sequence of each row */
  const int32_t *block_tables;/* [numSeqs, maxBlocks] */
  float scale;
  int isa;
  /* work items: query row item_row[i] over cache positions [item_begin[i], item_end[i]); items of one row adjacent */
  int n_items;
  const int32_t *item_row, *item_begin, *item_end;
  float *partials;            /* [n_items, nHeads, headDim + 2]: m, z, Σ p·v */
} attn_job;

typedef struct {
  float *scores, *qs, *bias;
  size_t scores_cap, vec_cap;
} attn_scratch;

/* room for one item: scores [max_len, nHeads], the (pre-scaled) q rows and their int8 constant terms */
int attn_scratch_reserve(attn_scratch *sc, int n_heads, int head_dim, int n_kv_heads, int max_len);
/* one work item (claimed one at a time by the pool's threads, so uneven prefill rows balance themselves) */
void attention_item(const attn_job *jb, attn_scratch *sc, int item);
/* combine each row's partials into out (single thread; O(items · nHeads · headDim)) */
void attention_merge(const attn_job *jb);

#endif
