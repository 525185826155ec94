/* A small persistent thread pool: one job is a set of chunks that the caller and the helpers claim one at a
 * time, so the job finishes even if a helper is descheduled (a VM's vCPU, a busy machine): the caller then
 * does the remaining chunks itself instead of waiting. One job at a time (callers serialize with pool_lock). */
#ifndef ASCEND_HOST_POOL_H
#define ASCEND_HOST_POOL_H

#define POOL_MAX_THREADS 64

/* Run one chunk; tid (0 = the caller, < nth) indexes per-thread scratch. */
typedef void (*pool_chunk_fn)(void *ctx, int chunk, int tid);

/* Serialize whole calls (the addon may be loaded by several Node environments in one process). */
void pool_lock(void);
void pool_unlock(void);
/* Run fn(ctx, c, tid) for every chunk c in 0..nchunks-1 on up to nth threads (the caller included); returns
 * when every chunk is done. */
void pool_run(pool_chunk_fn fn, void *ctx, int nchunks, int nth);
/* Join the helpers (process teardown). */
void pool_shutdown(void);

#endif
