/* m3GridLosses: the whole grid of msModelSlim's m3 (AWQ-style) scale search for a run of weight rows, fused:
 * per grid point g and row r, e_r = w_r − fround(Q(fround(w_r·s_g)) / s_g) with quant-core's float32 per-row fake
 * quantizer Q bit for bit, then out[g] = Σ_t Σ_r (x_t · e_r)² (float32 dots, float64 sum of squares).
 * Not the search's choice (the caller picks the minimum) and no f16/bf16 compute (the caller falls back to JS). */
/* No fused multiply-adds in the quantizer: every step must round to float32 on its own, as Math.fround does.
 * The dot products use explicit FMA intrinsics, which this does not affect. */
#pragma GCC optimize("fp-contract=off")
#define NAPI_VERSION 8
#include <immintrin.h>
#include <math.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "pool.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

/* Rows per work item: their e (CHUNK_ROWS·C floats, 96 KiB at C = 2048) stays in L1/L2 while every token meets
 * it. Fixed, not derived from the thread count, so the float64 sums (per chunk, added in chunk order) are the
 * same bits whatever the thread count. */
#define CHUNK_ROWS 12
/* weight rows × tokens of one register tile: 24 accumulators of the 32 zmm registers. 4 tokens, so a calibration
 * sample's usual 64 (or any multiple of 4) tokens leave no tail; CHUNK_ROWS is a multiple of TILE_R. */
#define TILE_R 6
#define TILE_T 4
#define LANES 16

static const float QUANT_EPS_F = 1.1920928955078125e-07f; /* 2^-23, quant-core's QUANT_EPS */

/* ---- quantizer: quant-core's fakeRowsF32 (spec §1), one float32 rounding per operation ------------------ */

/* Per-row scale/offset from min(row, 0), max(row, 0) of W⊙s, as quant-core's rowScaleOffset. */
static void row_params(float mn, float mx, int sym, float *scale, float *off) {
  if (!sym) {
    float sc = (mx - mn) / 255.0f;
    *scale = sc > QUANT_EPS_F ? sc : QUANT_EPS_F;
    *off = nearbyintf(-mn / *scale) + -128.0f;
  } else {
    float sc = (-mn > mx ? -mn : mx) / 127.0f;
    *scale = sc > QUANT_EPS_F ? sc : QUANT_EPS_F;
    *off = 0.0f;
  }
}

/* e = w − fround(fround((q − off)·scale) / s) for one row; returns 0 when W⊙s holds a non-finite value. */
static int row_error_scalar(const float *w, const float *s, int C, int sym, float *e) {
  float mn = 0, mx = 0, bad = 0;
  for (int j = 0; j < C; j++) {
    float ws = w[j] * s[j];
    mn = ws < mn ? ws : mn;
    mx = ws > mx ? ws : mx;
    bad += ws - ws;
  }
  if (bad != 0 || bad != bad) return 0;
  float scale, off;
  row_params(mn, mx, sym, &scale, &off);
  const float lo = sym ? -127.0f : -128.0f;
  for (int j = 0; j < C; j++) {
    float ws = w[j] * s[j];
    float v = nearbyintf(ws / scale + off);
    v = v < lo ? lo : v > 127.0f ? 127.0f : v;
    float dq = (v - off) * scale;
    e[j] = w[j] - dq / s[j];
  }
  return 1;
}

T512 static int row_error_512(const float *w, const float *s, int C, int sym, float *e) {
  __m512 vmn = _mm512_setzero_ps(), vmx = _mm512_setzero_ps(), vbad = _mm512_setzero_ps();
  int full = C & ~(LANES - 1);
  __mmask16 tail = (__mmask16)((1u << (C & (LANES - 1))) - 1);
  for (int j = 0; j < full; j += LANES) {
    __m512 ws = _mm512_mul_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(s + j));
    vmn = _mm512_min_ps(vmn, ws);
    vmx = _mm512_max_ps(vmx, ws);
    vbad = _mm512_add_ps(vbad, _mm512_sub_ps(ws, ws));
  }
  if (tail) {
    __m512 ws = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, w + full), _mm512_maskz_loadu_ps(tail, s + full));
    vmn = _mm512_min_ps(vmn, ws); /* masked-out lanes are 0: min/max with 0 is what the quantizer does anyway */
    vmx = _mm512_max_ps(vmx, ws);
    vbad = _mm512_add_ps(vbad, _mm512_sub_ps(ws, ws));
  }
  float bad = _mm512_reduce_add_ps(vbad);
  if (bad != 0 || bad != bad) return 0;
  float scale, off;
  row_params(_mm512_reduce_min_ps(vmn), _mm512_reduce_max_ps(vmx), sym, &scale, &off);
  const __m512 vs = _mm512_set1_ps(scale), vo = _mm512_set1_ps(off), vlo = _mm512_set1_ps(sym ? -127.0f : -128.0f),
               vhi = _mm512_set1_ps(127.0f);
#define M3_ERR_VEC(WV, SV)                                                                   \
  __m512 ws = _mm512_mul_ps(WV, SV);                                                       \
  __m512 v = _mm512_roundscale_ps(_mm512_add_ps(_mm512_div_ps(ws, vs), vo),                \
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);          \
  v = _mm512_min_ps(_mm512_max_ps(v, vlo), vhi);                                           \
  __m512 dq = _mm512_mul_ps(_mm512_sub_ps(v, vo), vs);                                     \
  __m512 ev = _mm512_sub_ps(WV, _mm512_div_ps(dq, SV));
  for (int j = 0; j < full; j += LANES) {
    __m512 wv = _mm512_loadu_ps(w + j), sv = _mm512_loadu_ps(s + j);
    M3_ERR_VEC(wv, sv)
    _mm512_storeu_ps(e + j, ev);
  }
  if (tail) {
    /* masked-out lanes divide by s = 1, not 0, so no stray exception state; they are not stored */
    __m512 wv = _mm512_maskz_loadu_ps(tail, w + full), sv = _mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), tail, s + full);
    M3_ERR_VEC(wv, sv)
    _mm512_mask_storeu_ps(e + full, tail, ev);
  }
#undef M3_ERR_VEC
  return 1;
}

/* ---- Σ_t Σ_r (x_t · e_r)² ----------------------------------------------------------------------------------- */

/* Scalar twin: 16 float lanes per dot (as the AVX-512 path), summed, squared in float64. */
static double sum_sq_scalar(const float *x, int T, int C, const float *e, int R) {
  double total = 0;
  for (int t = 0; t < T; t++) {
    for (int r = 0; r < R; r++) {
      float acc[LANES] = {0};
      const float *xt = x + (size_t)t * C, *er = e + (size_t)r * C;
      for (int j = 0; j < C; j++) acc[j & (LANES - 1)] += xt[j] * er[j];
      float d = 0;
      for (int l = 0; l < LANES; l++) d += acc[l];
      total += (double)d * d;
    }
  }
  return total;
}

/* One register tile: RR weight rows × TT tokens, each dot a 16-lane FMA sum over the columns then a float32
 * reduction (the same bits whatever the tile shape, so the tails below compute exactly what a full tile would). */
#define M3_DEF_TILE(NAME, RR, TT)                                                                                  \
  T512 static double NAME(const float *x, const float *e, int C, int full, __mmask16 tail) {                       \
    __m512 acc[RR][TT];                                                                                            \
    for (int a = 0; a < RR; a++)                                                                                   \
      for (int b = 0; b < TT; b++) acc[a][b] = _mm512_setzero_ps();                                                \
    for (int j = 0; j < full; j += LANES) {                                                                        \
      __m512 xv[TT];                                                                                               \
      for (int b = 0; b < TT; b++) xv[b] = _mm512_loadu_ps(x + (size_t)b * C + j);                                 \
      for (int a = 0; a < RR; a++) {                                                                               \
        __m512 ev = _mm512_loadu_ps(e + (size_t)a * C + j);                                                        \
        for (int b = 0; b < TT; b++) acc[a][b] = _mm512_fmadd_ps(ev, xv[b], acc[a][b]);                            \
      }                                                                                                            \
    }                                                                                                              \
    if (tail) {                                                                                                    \
      __m512 xv[TT];                                                                                               \
      for (int b = 0; b < TT; b++) xv[b] = _mm512_maskz_loadu_ps(tail, x + (size_t)b * C + full);                  \
      for (int a = 0; a < RR; a++) {                                                                               \
        __m512 ev = _mm512_maskz_loadu_ps(tail, e + (size_t)a * C + full);                                         \
        for (int b = 0; b < TT; b++) acc[a][b] = _mm512_fmadd_ps(ev, xv[b], acc[a][b]);                            \
      }                                                                                                            \
    }                                                                                                              \
    double total = 0;                                                                                              \
    for (int a = 0; a < RR; a++)                                                                                   \
      for (int b = 0; b < TT; b++) {                                                                               \
        double d = _mm512_reduce_add_ps(acc[a][b]);                                                                \
        total += d * d;                                                                                            \
      }                                                                                                            \
    return total;                                                                                                  \
  }

M3_DEF_TILE(tile_full, TILE_R, TILE_T) /* 24 accumulators */
M3_DEF_TILE(tile_row, 1, TILE_T)       /* a leftover row: still TILE_T independent chains */
M3_DEF_TILE(tile_tok, TILE_R, 1)       /* a leftover token against TILE_R rows */
M3_DEF_TILE(tile_one, 1, 1)

T512 static double sum_sq_512(const float *x, int T, int C, const float *e, int R) {
  int full = C & ~(LANES - 1);
  __mmask16 tail = (__mmask16)((1u << (C & (LANES - 1))) - 1);
  double total = 0;
  int t = 0;
  for (; t + TILE_T <= T; t += TILE_T) {
    const float *xt = x + (size_t)t * C;
    int r = 0;
    for (; r + TILE_R <= R; r += TILE_R) total += tile_full(xt, e + (size_t)r * C, C, full, tail);
    for (; r < R; r++) total += tile_row(xt, e + (size_t)r * C, C, full, tail);
  }
  for (; t < T; t++) {
    const float *xt = x + (size_t)t * C;
    int r = 0;
    for (; r + TILE_R <= R; r += TILE_R) total += tile_tok(xt, e + (size_t)r * C, C, full, tail);
    for (; r < R; r++) total += tile_one(xt, e + (size_t)r * C, C, full, tail);
  }
  return total;
}

/* ---- work split ------------------------------------------------------------------------------------------ */

typedef struct {
  const float *x, *w, *S;
  int T, C, n, nGrid, sym, isa;
  double *part;   /* [nchunks][nGrid] */
  int *bad;       /* [nchunks]: first row with a non-finite W⊙s, or -1 */
  float **e;      /* [threads][CHUNK_ROWS·C] */
} m3_job;

static void m3_chunk(void *ctx, int chunk, int tid) {
  m3_job *jb = ctx;
  int r0 = chunk * CHUNK_ROWS, R = jb->n - r0 < CHUNK_ROWS ? jb->n - r0 : CHUNK_ROWS;
  float *e = jb->e[tid];
  int C = jb->C, fast = jb->isa >= ISA_AVX512;
  jb->bad[chunk] = -1;
  for (int g = 0; g < jb->nGrid; g++) {
    const float *s = jb->S + (size_t)g * C;
    for (int r = 0; r < R; r++) {
      const float *w = jb->w + (size_t)(r0 + r) * C;
      int ok = fast ? row_error_512(w, s, C, jb->sym, e + (size_t)r * C) : row_error_scalar(w, s, C, jb->sym, e + (size_t)r * C);
      if (!ok && (jb->bad[chunk] < 0 || r0 + r < jb->bad[chunk])) jb->bad[chunk] = r0 + r;
    }
    jb->part[(size_t)chunk * jb->nGrid + g] = fast ? sum_sq_512(jb->x, jb->T, C, e, R) : sum_sq_scalar(jb->x, jb->T, C, e, R);
  }
}

static int m3_typed(napi_env env, napi_value v, const char *what, napi_typedarray_type want, size_t need, void **data) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  napi_typedarray_type type;
  size_t len = 0, off;
  napi_value ab;
  if (is_ta) napi_get_typedarray_info(env, v, &type, &len, data, &ab, &off);
  char msg[200];
  if (!is_ta || type != want) {
    snprintf(msg, sizeof msg, "m3GridLosses: %s: expected a %s", what, want == napi_float64_array ? "Float64Array" : "Float32Array");
    napi_throw_type_error(env, "E_ARGUMENT", msg);
    return 0;
  }
  if (len < need) {
    snprintf(msg, sizeof msg, "m3GridLosses: %s: expected at least %zu elements, found %zu", what, need, len);
    napi_throw_range_error(env, "E_SHAPE", msg);
    return 0;
  }
  return 1;
}

/* m3GridLosses(out, x, T, C, w, n, scales, nGrid, sym, threads[, isa]) -> first row whose W⊙s is non-finite, or -1 */
napi_value m3_grid_losses(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value a[11];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 10) {
    napi_throw_type_error(env, "E_ARGUMENT", "m3GridLosses: expected 10 or 11 arguments");
    return NULL;
  }
  int32_t T, C, n, nGrid, sym, threads, isa = kernels_best_isa();
  if (napi_get_value_int32(env, a[2], &T) != napi_ok || napi_get_value_int32(env, a[3], &C) != napi_ok ||
      napi_get_value_int32(env, a[5], &n) != napi_ok || napi_get_value_int32(env, a[7], &nGrid) != napi_ok ||
      napi_get_value_int32(env, a[8], &sym) != napi_ok || napi_get_value_int32(env, a[9], &threads) != napi_ok ||
      (argc > 10 && napi_get_value_int32(env, a[10], &isa) != napi_ok) || T < 0 || C < 1 || n < 0 || nGrid < 0 ||
      (sym != 0 && sym != 1)) {
    napi_throw_type_error(env, "E_ARGUMENT", "m3GridLosses: T, n, nGrid >= 0, C >= 1, sym 0|1, threads (and isa) int32");
    return NULL;
  }
  if (isa < 0 || isa > kernels_best_isa()) {
    napi_throw_range_error(env, "E_ARGUMENT", "m3GridLosses: instruction set not supported by this CPU");
    return NULL;
  }
  void *out, *x, *w, *S;
  if (!m3_typed(env, a[0], "out", napi_float64_array, nGrid, &out) ||
      !m3_typed(env, a[1], "x", napi_float32_array, (size_t)T * C, &x) ||
      !m3_typed(env, a[4], "w", napi_float32_array, (size_t)n * C, &w) ||
      !m3_typed(env, a[6], "scales", napi_float32_array, (size_t)nGrid * C, &S))
    return NULL;
  int nchunks = (n + CHUNK_ROWS - 1) / CHUNK_ROWS;
  int nth = threads < 1 ? 1 : threads > POOL_MAX_THREADS ? POOL_MAX_THREADS : threads;
  if (nth > nchunks) nth = nchunks > 0 ? nchunks : 1;
  size_t e_floats = ((size_t)CHUNK_ROWS * C + 15) & ~(size_t)15;
  double *part = malloc((size_t)nchunks * (nGrid > 0 ? nGrid : 1) * sizeof(double) + 1);
  int *bad = malloc((size_t)nchunks * sizeof(int) + 1);
  float *e_all = aligned_alloc(64, (size_t)nth * e_floats * sizeof(float));
  float *e_of[POOL_MAX_THREADS];
  if (!part || !bad || !e_all) {
    free(part), free(bad), free(e_all);
    napi_throw_error(env, "E_NATIVE", "m3GridLosses: out of memory for scratch");
    return NULL;
  }
  for (int i = 0; i < nth; i++) e_of[i] = e_all + (size_t)i * e_floats;
  m3_job jb = {.x = x, .w = w, .S = S, .T = T, .C = C, .n = n, .nGrid = nGrid, .sym = sym, .isa = isa,
               .part = part, .bad = bad, .e = e_of};
  if (nth == 1) {
    /* inline, without the pool's lock: the app runs one search per worker thread, side by side */
    for (int c = 0; c < nchunks; c++) m3_chunk(&jb, c, 0);
  } else {
    pool_lock();
    pool_run(m3_chunk, &jb, nchunks, nth);
    pool_unlock();
  }
  double *o = out;
  int first_bad = -1;
  for (int g = 0; g < nGrid; g++) o[g] = 0;
  for (int c = 0; c < nchunks; c++) {
    for (int g = 0; g < nGrid; g++) o[g] += part[(size_t)c * nGrid + g];
    if (bad[c] >= 0 && (first_bad < 0 || bad[c] < first_bad)) first_bad = bad[c];
  }
  free(part), free(bad), free(e_all);
  napi_value r;
  napi_create_int32(env, first_bad, &r);
  return r;
}
