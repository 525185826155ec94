/* Persistent pthread pool for the host kernels. A job is published with a generation number; the caller and
 * the helpers claim its chunks with a compare-and-swap on (generation << 32 | next chunk), so a helper that
 * wakes late can never run a chunk of a job that is over, and the caller never waits for a helper that has
 * not claimed anything. Helpers spin ~200 µs on the generation before sleeping: decode issues ops back to back. */
#define _GNU_SOURCE
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define SPIN_NS 200000

static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_t helpers[POOL_MAX_THREADS];
static int n_helpers = 0;
static atomic_uint generation = 0;  /* current job */
static atomic_ullong claim = 0;     /* generation << 32 | next unclaimed chunk */
static atomic_int done = 0;         /* chunks finished in the current job */
static atomic_int sleepers = 0;
static atomic_int stopping = 0;
static _Atomic(pool_chunk_fn) job_fn;
static _Atomic(void *) job_ctx;
static atomic_int job_chunks, job_nth;

void pool_lock(void) { pthread_mutex_lock(&call_mu); }
void pool_unlock(void) { pthread_mutex_unlock(&call_mu); }

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Claim and run chunks of job `gen` until none is left or the job has moved on. */
static void work(unsigned gen, int tid) {
  pool_chunk_fn fn = atomic_load(&job_fn);
  void *ctx = atomic_load(&job_ctx);
  const unsigned long long total = (unsigned long long)atomic_load(&job_chunks);
  if (tid >= atomic_load(&job_nth)) return;
  unsigned long long cur = atomic_load(&claim);
  for (;;) {
    if ((unsigned)(cur >> 32) != gen || (cur & 0xffffffffULL) >= total) return;
    if (!atomic_compare_exchange_weak(&claim, &cur, cur + 1)) continue;
    /* fn and ctx were read after seeing `gen`, and this claim succeeded in `gen`: the job cannot end (nor
     * fn/ctx change) before this chunk is counted done. */
    fn(ctx, (int)(cur & 0xffffffffULL), tid);
    atomic_fetch_add_explicit(&done, 1, memory_order_release);
    cur = atomic_load(&claim);
  }
}

static void *helper_main(void *arg) {
  const int tid = (int)(long)arg;
  unsigned seen = 0;
  for (;;) {
    unsigned g = atomic_load_explicit(&generation, memory_order_acquire);
    if (g == seen) {
      long long t0 = now_ns();
      int spins = 0;
      while ((g = atomic_load_explicit(&generation, memory_order_acquire)) == seen && !atomic_load(&stopping)) {
        __builtin_ia32_pause();
        if (++spins % 256 == 0 && now_ns() - t0 > SPIN_NS) {
          pthread_mutex_lock(&mu);
          atomic_fetch_add(&sleepers, 1);
          while ((g = atomic_load(&generation)) == seen && !atomic_load(&stopping)) pthread_cond_wait(&cv, &mu);
          atomic_fetch_sub(&sleepers, 1);
          pthread_mutex_unlock(&mu);
          break;
        }
      }
    }
    if (atomic_load(&stopping)) return 0;
    seen = g;
    work(g, tid);
  }
}

void pool_run(pool_chunk_fn fn, void *ctx, int nchunks, int nth) {
  if (nchunks <= 0) return;
  if (nth > POOL_MAX_THREADS) nth = POOL_MAX_THREADS;
  if (nth > nchunks) nth = nchunks;
  if (nth <= 1) {
    for (int c = 0; c < nchunks; c++) fn(ctx, c, 0);
    return;
  }
  while (n_helpers < nth - 1) {
    if (pthread_create(&helpers[n_helpers], 0, helper_main, (void *)(long)(n_helpers + 1)) != 0) break;
    n_helpers++;
  }
  unsigned gen = atomic_load(&generation) + 1;
  /* close claiming first: a helper still holding the previous generation must not match the new chunk count */
  atomic_store(&claim, ((unsigned long long)gen << 32) | 0xffffffffULL);
  atomic_store(&job_fn, fn);
  atomic_store(&job_ctx, ctx);
  atomic_store(&job_chunks, nchunks);
  atomic_store(&job_nth, nth);
  atomic_store(&done, 0);
  atomic_store(&claim, (unsigned long long)gen << 32);
  atomic_store_explicit(&generation, gen, memory_order_release);
  if (atomic_load(&sleepers) > 0) {
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
  }
  work(gen, 0);
  while (atomic_load_explicit(&done, memory_order_acquire) < nchunks) __builtin_ia32_pause();
}

void pool_shutdown(void) {
  pthread_mutex_lock(&mu);
  atomic_store(&stopping, 1);
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < n_helpers; i++) pthread_join(helpers[i], 0);
  n_helpers = 0;
  atomic_store(&stopping, 0);
}
