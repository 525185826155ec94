/* N-API surface of the host kernels: typed arrays in, no copies; every call runs on the shared thread pool.
 * Argument checks live here so the kernels can trust their inputs. */
#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "pool.h"

/* m3.c: the fused m3 grid-loss kernel (its own argument checks) */
napi_value m3_grid_losses(napi_env env, napi_callback_info info);

#define SMALL_JOB (1 << 16) /* multiply-adds below which a second thread costs more than it saves */

static int best_isa = -1;

/* scratch for W8A16 activation codes, grown on demand; guarded by pool_lock */
static void *scratch = NULL;
static size_t scratch_bytes = 0;

static void *scratch_get(size_t bytes) {
  if (bytes <= scratch_bytes) return scratch;
  free(scratch);
  scratch_bytes = (bytes + 4095) & ~(size_t)4095;
  scratch = aligned_alloc(64, scratch_bytes);
  if (!scratch) scratch_bytes = 0;
  return scratch;
}

#define CHECK(env, call)                                       \
  do {                                                         \
    if ((call) != napi_ok) {                                   \
      napi_throw_error((env), "E_NATIVE", "N-API call failed: " #call); \
      return NULL;                                             \
    }                                                          \
  } while (0)

typedef struct {
  void *data;
  size_t length;
  napi_typedarray_type type;
} typed;

static int get_typed(napi_env env, napi_value v, const char *what, napi_typedarray_type want, int allow_null, typed *out) {
  napi_valuetype vt;
  napi_typeof(env, v, &vt);
  if (allow_null && (vt == napi_null || vt == napi_undefined)) {
    out->data = NULL;
    out->length = 0;
    return 1;
  }
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: expected a typed array", what);
    napi_throw_type_error(env, "E_ARGUMENT", msg);
    return 0;
  }
  napi_value ab;
  size_t off;
  napi_get_typedarray_info(env, v, &out->type, &out->length, &out->data, &ab, &off);
  if ((int)want >= 0 && out->type != want) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: wrong typed array type (%d, expected %d)", what, (int)out->type, (int)want);
    napi_throw_type_error(env, "E_ARGUMENT", msg);
    return 0;
  }
  return 1;
}

static int get_int(napi_env env, napi_value v, int32_t *out) { return napi_get_value_int32(env, v, out) == napi_ok; }

static int pick_isa(napi_env env, int32_t isa) {
  if (isa < 0 || isa > best_isa) {
    char msg[120];
    snprintf(msg, sizeof msg, "instruction set %d requested, this CPU supports up to %d", isa, best_isa);
    napi_throw_range_error(env, "E_ARGUMENT", msg);
    return -1;
  }
  return isa;
}

static int fit(napi_env env, const char *what, size_t have, size_t need) {
  if (have >= need) return 1;
  char msg[160];
  snprintf(msg, sizeof msg, "%s: expected at least %zu elements, found %zu", what, need, have);
  napi_throw_range_error(env, "E_SHAPE", msg);
  return 0;
}

static int threads_for(int32_t threads, double work) {
  if (threads < 1) threads = 1;
  if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
  return work < SMALL_JOB ? 1 : threads;
}

/* Row chunks: a multiple of the kernels' 4-row tile, about 8 per thread so a late helper costs little, and
 * at least 64 KiB of weights each so claiming stays cheap. */
static int row_chunk(int n, size_t row_bytes, int nth) {
  int rows = (int)((65536 + row_bytes - 1) / row_bytes);
  int even = (n + 8 * nth - 1) / (8 * nth);
  if (even > rows) rows = even;
  return (rows + 3) & ~3;
}

typedef struct {
  const void *job;
  int rows_per_chunk, n;
} rows_ctx;

static void w8_chunk(void *ctx, int chunk, int tid) {
  (void)tid;
  const rows_ctx *c = ctx;
  int r0 = chunk * c->rows_per_chunk, r1 = r0 + c->rows_per_chunk < c->n ? r0 + c->rows_per_chunk : c->n;
  w8a16_rows(c->job, r0, r1);
}

/* w8a16Linear(out, x, T, q, scale, offset, bias|null, n, k, threads, isa) */
static napi_value w8a16_linear(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value a[11];
  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 11) {
    napi_throw_type_error(env, "E_ARGUMENT", "w8a16Linear: expected 11 arguments");
    return NULL;
  }
  typed out, x, q, scale, offset, bias;
  int32_t T, n, k, threads, isa;
  if (!get_typed(env, a[0], "out", napi_float32_array, 0, &out) || !get_typed(env, a[1], "x", napi_float32_array, 0, &x) ||
      !get_typed(env, a[3], "q", napi_int8_array, 0, &q) || !get_typed(env, a[4], "scale", napi_float32_array, 0, &scale) ||
      !get_typed(env, a[5], "offset", napi_float32_array, 0, &offset) ||
      !get_typed(env, a[6], "bias", napi_float32_array, 1, &bias))
    return NULL;
  if (!get_int(env, a[2], &T) || !get_int(env, a[7], &n) || !get_int(env, a[8], &k) || !get_int(env, a[9], &threads) ||
      !get_int(env, a[10], &isa) || T < 0 || n < 0 || k < 0) {
    napi_throw_type_error(env, "E_ARGUMENT", "w8a16Linear: T, n, k, threads, isa must be non-negative int32");
    return NULL;
  }
  if (pick_isa(env, isa) < 0) return NULL;
  if (!fit(env, "out", out.length, (size_t)T * n) || !fit(env, "x", x.length, (size_t)T * k) ||
      !fit(env, "q", q.length, (size_t)n * k) || !fit(env, "scale", scale.length, n) ||
      !fit(env, "offset", offset.length, n) || (bias.data && !fit(env, "bias", bias.length, n)))
    return NULL;
  if (T == 0 || n == 0) return NULL;

  pool_lock();
  size_t kpad = act_codes_kpad(k > 0 ? k : 1);
  size_t codes = (size_t)T * kpad * sizeof(int16_t);
  char *buf = scratch_get(2 * codes + (size_t)T * (sizeof(double) + sizeof(int64_t)) + 64);
  if (!buf) {
    pool_unlock();
    napi_throw_error(env, "E_NATIVE", "w8a16Linear: out of memory for activation codes");
    return NULL;
  }
  w8a16_job jb = {
      .out = out.data, .x = x.data, .T = T, .n = n, .k = k, .kpad = (int)kpad, .q = q.data, .scale = scale.data,
      .offset = offset.data, .bias = bias.data, .xhi = (int16_t *)buf, .xlo = (int16_t *)(buf + codes),
      .xs = (double *)(buf + 2 * codes), .xsum = (int64_t *)(buf + 2 * codes + (size_t)T * sizeof(double)), .isa = isa};
  for (int t = 0; t < T; t++)
    prepare_act_codes(isa, jb.x + (size_t)t * k, k, (int)kpad, (int16_t *)jb.xhi + (size_t)t * kpad,
                      (int16_t *)jb.xlo + (size_t)t * kpad, (double *)jb.xs + t, (int64_t *)jb.xsum + t);
  int nth = threads_for(threads, (double)T * n * k);
  rows_ctx rc = {.job = &jb, .rows_per_chunk = row_chunk(n, (size_t)k, nth), .n = n};
  pool_run(w8_chunk, &rc, (n + rc.rows_per_chunk - 1) / rc.rows_per_chunk, nth);
  pool_unlock();
  return NULL;
}

static void fl_chunk(void *ctx, int chunk, int tid) {
  (void)tid;
  const rows_ctx *c = ctx;
  int r0 = chunk * c->rows_per_chunk, r1 = r0 + c->rows_per_chunk < c->n ? r0 + c->rows_per_chunk : c->n;
  float_linear_rows(c->job, r0, r1);
}

/* floatLinear(out, x, T, w, wtype, bias|null, n, k, threads, isa) — w: Float32Array (f32) or Uint16Array (f16/bf16 bits) */
static napi_value float_linear(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value a[10];
  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 10) {
    napi_throw_type_error(env, "E_ARGUMENT", "floatLinear: expected 10 arguments");
    return NULL;
  }
  typed out, x, w, bias;
  int32_t T, wtype, n, k, threads, isa;
  if (!get_int(env, a[4], &wtype) || wtype < WT_F32 || wtype > WT_BF16) {
    napi_throw_type_error(env, "E_ARGUMENT", "floatLinear: wtype must be 0 (f32), 1 (f16) or 2 (bf16)");
    return NULL;
  }
  if (!get_typed(env, a[0], "out", napi_float32_array, 0, &out) || !get_typed(env, a[1], "x", napi_float32_array, 0, &x) ||
      !get_typed(env, a[3], "w", wtype == WT_F32 ? napi_float32_array : napi_uint16_array, 0, &w) ||
      !get_typed(env, a[5], "bias", napi_float32_array, 1, &bias))
    return NULL;
  if (!get_int(env, a[2], &T) || !get_int(env, a[6], &n) || !get_int(env, a[7], &k) || !get_int(env, a[8], &threads) ||
      !get_int(env, a[9], &isa) || T < 0 || n < 0 || k < 0) {
    napi_throw_type_error(env, "E_ARGUMENT", "floatLinear: T, n, k, threads, isa must be non-negative int32");
    return NULL;
  }
  if (pick_isa(env, isa) < 0) return NULL;
  if (!fit(env, "out", out.length, (size_t)T * n) || !fit(env, "x", x.length, (size_t)T * k) ||
      !fit(env, "w", w.length, (size_t)n * k) || (bias.data && !fit(env, "bias", bias.length, n)))
    return NULL;
  if (T == 0 || n == 0) return NULL;
  float_linear_job jb = {.out = out.data, .x = x.data, .T = T, .n = n, .k = k, .w = w.data, .wtype = wtype,
                         .bias = bias.data, .isa = isa};
  int nth = threads_for(threads, (double)T * n * k);
  rows_ctx rc = {.job = &jb, .rows_per_chunk = row_chunk(n, (size_t)k * (wtype == WT_F32 ? 4 : 2), nth), .n = n};
  pool_lock();
  pool_run(fl_chunk, &rc, (n + rc.rows_per_chunk - 1) / rc.rows_per_chunk, nth);
  pool_unlock();
  return NULL;
}

#define SUM_CHUNK (4u << 20) /* bytes per claimed chunk of the bandwidth probe */

typedef struct {
  const uint8_t *p;
  size_t bytes;
  int isa;
  uint64_t part[POOL_MAX_THREADS];
} sum_job;

static void sum_chunk(void *ctx, int chunk, int tid) {
  sum_job *jb = ctx;
  size_t b0 = (size_t)chunk * SUM_CHUNK, b1 = b0 + SUM_CHUNK < jb->bytes ? b0 + SUM_CHUNK : jb->bytes;
  jb->part[tid] += read_sum(jb->isa, jb->p + b0, b1 - b0);
}

/* readSum(typedArray, threads, isa) -> number: sums the bytes as u64 words (a read-bandwidth probe) */
static napi_value read_sum_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  typed buf;
  int32_t threads, isa;
  if (argc < 3 || !get_typed(env, a[0], "buffer", (napi_typedarray_type)-1, 0, &buf) || !get_int(env, a[1], &threads) ||
      !get_int(env, a[2], &isa))
    return NULL;
  if (pick_isa(env, isa) < 0) return NULL;
  size_t elem = 1;
  switch (buf.type) {
    case napi_int16_array: case napi_uint16_array: elem = 2; break;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
    default: elem = 1;
  }
  sum_job jb = {.p = buf.data, .bytes = (buf.length * elem) & ~(size_t)63, .isa = isa};
  if (threads < 1) threads = 1;
  if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
  pool_lock();
  pool_run(sum_chunk, &jb, (int)((jb.bytes + SUM_CHUNK - 1) / SUM_CHUNK), threads);
  pool_unlock();
  uint64_t s = 0;
  for (int i = 0; i < threads; i++) s += jb.part[i];
  napi_value r;
  CHECK(env, napi_create_double(env, (double)(s & ((1ULL << 52) - 1)), &r));
  return r;
}

typedef struct {
  attn_job jb;
  int max_len, failed;
} attn_task_ctx;

static attn_scratch attn_scratch_of[POOL_MAX_THREADS]; /* per pool thread; guarded by pool_lock */
static void *attn_items_buf = NULL;                     /* item lists and partials; guarded by pool_lock */
static size_t attn_items_bytes = 0;

#define ATTN_MIN_CHUNK 64 /* positions per work item when a row's context is split across threads */

static void attn_chunk(void *ctx, int chunk, int tid) {
  attn_task_ctx *c = ctx;
  if (!attn_scratch_reserve(&attn_scratch_of[tid], c->jb.n_heads, c->jb.head_dim, c->jb.n_kv_heads, c->max_len)) {
    c->failed = 1;
    return;
  }
  attention_item(&c->jb, &attn_scratch_of[tid], chunk);
}

/* pagedAttention(out, q, T, nHeads, k, v, dtype, kScale, kOffset, vScale, vOffset, nKvHeads, headDim, blockSize,
 *                maxBlocks, positions, rowSeq, blockTables, maxContext, scale, threads, isa)
 * The caller (host-backend.ts) has validated block ids, positions and context lengths against the cache. */
static napi_value paged_attention(napi_env env, napi_callback_info info) {
  size_t argc = 22;
  napi_value a[22];
  CHECK(env, napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 22) {
    napi_throw_type_error(env, "E_ARGUMENT", "pagedAttention: expected 22 arguments");
    return NULL;
  }
  int32_t T, n_heads, dtype, n_kv, hd, bs, max_blocks, max_context, threads, isa;
  double scale;
  if (!get_int(env, a[2], &T) || !get_int(env, a[3], &n_heads) || !get_int(env, a[6], &dtype) ||
      !get_int(env, a[11], &n_kv) || !get_int(env, a[12], &hd) || !get_int(env, a[13], &bs) ||
      !get_int(env, a[14], &max_blocks) || !get_int(env, a[18], &max_context) ||
      napi_get_value_double(env, a[19], &scale) != napi_ok || !get_int(env, a[20], &threads) ||
      !get_int(env, a[21], &isa) || T < 0 || n_heads <= 0 || n_kv <= 0 || hd <= 0 || bs <= 0 || dtype < KV_F32 ||
      dtype > KV_INT8 || n_heads % n_kv || max_context <= 0 || threads < 1) {
    napi_throw_type_error(env, "E_ARGUMENT", "pagedAttention: bad integer arguments");
    return NULL;
  }
  if (pick_isa(env, isa) < 0) return NULL;
  napi_typedarray_type cache_type = dtype == KV_F32 ? napi_float32_array : dtype == KV_F16 ? napi_uint16_array : napi_int8_array;
  typed out, q, k, v, ks, ko, vs, vo, pos, row_seq, bt;
  int quant = dtype == KV_INT8;
  if (!get_typed(env, a[0], "out", napi_float32_array, 0, &out) || !get_typed(env, a[1], "q", napi_float32_array, 0, &q) ||
      !get_typed(env, a[4], "k", cache_type, 0, &k) || !get_typed(env, a[5], "v", cache_type, 0, &v) ||
      !get_typed(env, a[7], "kScale", napi_float32_array, !quant, &ks) ||
      !get_typed(env, a[8], "kOffset", napi_float32_array, !quant, &ko) ||
      !get_typed(env, a[9], "vScale", napi_float32_array, !quant, &vs) ||
      !get_typed(env, a[10], "vOffset", napi_float32_array, !quant, &vo) ||
      !get_typed(env, a[15], "positions", napi_int32_array, 0, &pos) ||
      !get_typed(env, a[16], "rowSeq", napi_int32_array, 0, &row_seq) ||
      !get_typed(env, a[17], "blockTables", napi_int32_array, 0, &bt))
    return NULL;
  size_t q_cols = (size_t)n_heads * hd, kv_dim = (size_t)n_kv * hd;
  if (!fit(env, "out", out.length, (size_t)T * q_cols) || !fit(env, "q", q.length, (size_t)T * q_cols) ||
      !fit(env, "positions", pos.length, T) || !fit(env, "rowSeq", row_seq.length, T) ||
      !fit(env, "v", v.length, k.length) ||
      (quant && (!fit(env, "kScale", ks.length, kv_dim) || !fit(env, "kOffset", ko.length, kv_dim) ||
                 !fit(env, "vScale", vs.length, kv_dim) || !fit(env, "vOffset", vo.length, kv_dim))))
    return NULL;
  if (T == 0) return NULL;
  attn_task_ctx c = {
      .jb = {.out = out.data, .q = q.data, .k = k.data, .v = v.data, .dtype = dtype, .k_scale = ks.data,
             .k_offset = ko.data, .v_scale = vs.data, .v_offset = vo.data, .T = T, .n_heads = n_heads,
             .n_kv_heads = n_kv, .head_dim = hd, .block_size = bs, .max_blocks = max_blocks, .positions = pos.data,
             .row_seq = row_seq.data, .block_tables = bt.data, .scale = (float)scale, .isa = isa},
      .max_len = 1,
      .failed = 0};
  if (threads > POOL_MAX_THREADS) threads = POOL_MAX_THREADS;
  if ((double)T * max_context * q_cols < SMALL_JOB) threads = 1;
  /* Work items: whole rows when there are enough of them; else split each row's context so every thread has a
   * share (flash-decoding), merged afterwards. */
  const int32_t *positions = pos.data;
  int per_row_max = T >= threads ? 1 : (threads + T - 1) / T;
  size_t n_items = 0;
  for (int r = 0; r < T; r++) {
    int n = positions[r] + 1, chunks = (n + ATTN_MIN_CHUNK - 1) / ATTN_MIN_CHUNK;
    n_items += (size_t)(chunks < per_row_max ? chunks : per_row_max);
  }
  size_t part_floats = n_items * (size_t)n_heads * (size_t)(hd + 2);
  size_t bytes = 3 * n_items * sizeof(int32_t) + 64 + part_floats * sizeof(float);
  pool_lock();
  if (bytes > attn_items_bytes) {
    free(attn_items_buf);
    attn_items_buf = malloc(bytes);
    attn_items_bytes = attn_items_buf ? bytes : 0;
  }
  if (!attn_items_buf) {
    pool_unlock();
    napi_throw_error(env, "E_NATIVE", "pagedAttention: out of memory for work items");
    return NULL;
  }
  int32_t *item_row = attn_items_buf, *item_begin = item_row + n_items, *item_end = item_begin + n_items;
  float *partials = (float *)(((uintptr_t)(item_end + n_items) + 63) & ~(uintptr_t)63);
  size_t it = 0;
  for (int r = 0; r < T; r++) {
    int n = positions[r] + 1, chunks = (n + ATTN_MIN_CHUNK - 1) / ATTN_MIN_CHUNK;
    if (chunks > per_row_max) chunks = per_row_max;
    for (int ch = 0; ch < chunks; ch++, it++) {
      item_row[it] = r;
      item_begin[it] = (int)((long long)n * ch / chunks);
      item_end[it] = (int)((long long)n * (ch + 1) / chunks);
      int len = item_end[it] - item_begin[it];
      if (len > c.max_len) c.max_len = len;
    }
  }
  c.jb.n_items = (int)n_items;
  c.jb.item_row = item_row;
  c.jb.item_begin = item_begin;
  c.jb.item_end = item_end;
  c.jb.partials = partials;
  pool_run(attn_chunk, &c, (int)n_items, threads);
  if (!c.failed) attention_merge(&c.jb);
  pool_unlock();
  if (c.failed) napi_throw_error(env, "E_NATIVE", "pagedAttention: out of memory for scratch");
  return NULL;
}

static napi_value best_isa_js(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value r;
  CHECK(env, napi_create_int32(env, best_isa, &r));
  return r;
}

static void cleanup(void *arg) {
  (void)arg;
  pool_lock();
  pool_shutdown();
  pool_unlock();
}

NAPI_MODULE_INIT() {
  if (best_isa < 0) best_isa = kernels_best_isa();
  napi_property_descriptor props[] = {
      {"bestIsa", NULL, best_isa_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"w8a16Linear", NULL, w8a16_linear, NULL, NULL, NULL, napi_enumerable, NULL},
      {"floatLinear", NULL, float_linear, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readSum", NULL, read_sum_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pagedAttention", NULL, paged_attention, NULL, NULL, NULL, napi_enumerable, NULL},
      {"m3GridLosses", NULL, m3_grid_losses, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_add_env_cleanup_hook(env, cleanup, NULL);
  return exports;
}
