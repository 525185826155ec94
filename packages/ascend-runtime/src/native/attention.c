/* Paged causal GQA attention on the host (decode and prefill), f32 / f16 / int8 caches, one work item per
 * (query row, KV head): the group of query heads sharing that KV head reads each K/V row once.
 * Plain C loops over 16-lane partial sums, compiled per ISA (target attributes) so GCC vectorizes them. */
#include "attention.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0) {
    float v = (float)m * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  bits = e == 31 ? (sign | 0x7f800000u | (m << 13)) : (sign | ((e + 112) << 23) | (m << 13));
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Cache values at base[idx ..] as floats, converted in registers (no scratch row): f32 as stored, f16 through F16C,
 * int8 as its raw codes. An int8 code's scale and offset never reach the inner loops: the scores use the pre-scaled
 * query (q·s)·k minus the per-head constant Σ q·s·off, the values Σ p·v is scaled and offset once in attention_merge.
 * The converted floats go through the f32 cache's arithmetic, so values every cache holds exactly give the f32 cache's
 * bits (attention-native.test.ts). */
static inline float ld1(const void *base, size_t idx, int dtype) {
  if (dtype == KV_F32) return ((const float *)base)[idx];
  if (dtype == KV_INT8) return (float)((const int8_t *)base)[idx];
  return half_to_float(((const uint16_t *)base)[idx]);
}

T512 static inline __m512 ld16(const void *base, size_t idx, int dtype) {
  if (dtype == KV_F32) return _mm512_loadu_ps((const float *)base + idx);
  if (dtype == KV_INT8) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)base + idx))));
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + idx)));
}

T256 static inline __m256 ld8(const void *base, size_t idx, int dtype) {
  if (dtype == KV_F32) return _mm256_loadu_ps((const float *)base + idx);
  if (dtype == KV_INT8) return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + idx))));
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + idx)));
}

/* int8 caches: qs = q·kScale for one head, returning the constant term Σ qs·kOffset of its scores (the same for every
 * key, so it leaves the softmax alone; subtracted so the scores and their max m are the true ones). The SIMD twins
 * sum it in lanes: one dependent chain per head cost more than a short decode item's dots. */
static inline float prescale_scalar(float *qs, const float *q, const float *ks, const float *ko, int hd) {
  float bias = 0;
  for (int d = 0; d < hd; d++) {
    qs[d] = q[d] * ks[d];
    bias += qs[d] * ko[d];
  }
  return bias;
}

T512 static inline float prescale_512(float *qs, const float *q, const float *ks, const float *ko, int hd) {
  __m512 bias = _mm512_setzero_ps();
  for (int d = 0; d < hd; d += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(q + d), _mm512_loadu_ps(ks + d));
    _mm512_storeu_ps(qs + d, v);
    bias = _mm512_fmadd_ps(v, _mm512_loadu_ps(ko + d), bias);
  }
  return _mm512_reduce_add_ps(bias);
}

T256 static inline float hsum_256(__m256 x) {
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  t = _mm_add_ss(t, _mm_movehdup_ps(t));
  return _mm_cvtss_f32(t);
}

T256 static inline float prescale_256(float *qs, const float *q, const float *ks, const float *ko, int hd) {
  __m256 bias = _mm256_setzero_ps();
  for (int d = 0; d < hd; d += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(ks + d));
    _mm256_storeu_ps(qs + d, v);
    bias = _mm256_fmadd_ps(v, _mm256_loadu_ps(ko + d), bias);
  }
  return hsum_256(bias);
}

/* The scalar twins convert SCALAR_CHUNK values at a time into a local block (f32 rows are read in place, whole), so each
 * value converts once for all the group's heads and the inner loops stay plain, vectorizable runs over d. */
#define SCALAR_CHUNK 16

/* out[h] = qs[h]·k for the group's heads, k = the cache row at base[idx ..] of dtype; each head sums over d in order */
static inline void dots_scalar(float *out, const float *qs, const void *base, size_t idx, int dtype, int hd, int G) {
  const int step = dtype == KV_F32 ? hd : SCALAR_CHUNK;
  for (int h = 0; h < G; h++) out[h] = 0;
  for (int d0 = 0; d0 < hd; d0 += step) {
    const int n = hd - d0 < step ? hd - d0 : step;
    float kc[SCALAR_CHUNK];
    const float *k = kc;
    if (dtype == KV_F32) k = (const float *)base + idx + d0;
    else
      for (int d = 0; d < n; d++) kc[d] = ld1(base, idx + (size_t)(d0 + d), dtype);
    for (int h = 0; h < G; h++) {
      float sum = out[h];
      for (int d = 0; d < n; d++) sum += qs[h * hd + d0 + d] * k[d];
      out[h] = sum;
    }
  }
}

T512 static inline void dots_512(float *out, const float *qs, const void *base, size_t idx, int dtype, int hd, int G) {
  for (int h0 = 0; h0 < G; h0 += 4) {
    const int n = G - h0 < 4 ? G - h0 : 4;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int d = 0; d < hd; d += 16) {
      __m512 kv = ld16(base, idx + (size_t)d, dtype);
      for (int h = 0; h < n; h++) acc[h] = _mm512_fmadd_ps(_mm512_loadu_ps(qs + (h0 + h) * hd + d), kv, acc[h]);
    }
    for (int h = 0; h < n; h++) out[h0 + h] = _mm512_reduce_add_ps(acc[h]);
  }
}

T256 static inline void dots_256(float *out, const float *qs, const void *base, size_t idx, int dtype, int hd, int G) {
  for (int h0 = 0; h0 < G; h0 += 4) {
    const int n = G - h0 < 4 ? G - h0 : 4;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int d = 0; d < hd; d += 8) {
      __m256 kv = ld8(base, idx + (size_t)d, dtype);
      for (int h = 0; h < n; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + (h0 + h) * hd + d), kv, acc[h]);
    }
    for (int h = 0; h < n; h++) out[h0 + h] = hsum_256(acc[h]);
  }
}

/* acc[h·stride ..] += p[h]·v for the group's heads, v = the cache row at base[idx ..] of dtype (raw codes for int8) */
static inline void axpys_scalar(float *acc, const float *p, const void *base, size_t idx, int dtype, int hd, int G, int stride) {
  const int step = dtype == KV_F32 ? hd : SCALAR_CHUNK;
  for (int d0 = 0; d0 < hd; d0 += step) {
    const int n = hd - d0 < step ? hd - d0 : step;
    float vc[SCALAR_CHUNK];
    const float *v = vc;
    if (dtype == KV_F32) v = (const float *)base + idx + d0;
    else
      for (int d = 0; d < n; d++) vc[d] = ld1(base, idx + (size_t)(d0 + d), dtype);
    for (int h = 0; h < G; h++)
      for (int d = 0; d < n; d++) acc[h * stride + d0 + d] += p[h] * v[d];
  }
}

T512 static inline void axpys_512(float *acc, const float *p, const void *base, size_t idx, int dtype, int hd, int G, int stride) {
  for (int d = 0; d < hd; d += 16) {
    __m512 vv = ld16(base, idx + (size_t)d, dtype);
    for (int h = 0; h < G; h++) {
      float *a = acc + h * stride + d;
      _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(p[h]), vv, _mm512_loadu_ps(a)));
    }
  }
}

T256 static inline void axpys_256(float *acc, const float *p, const void *base, size_t idx, int dtype, int hd, int G, int stride) {
  for (int d = 0; d < hd; d += 8) {
    __m256 vv = ld8(base, idx + (size_t)d, dtype);
    for (int h = 0; h < G; h++) {
      float *a = acc + h * stride + d;
      _mm256_storeu_ps(a, _mm256_fmadd_ps(_mm256_set1_ps(p[h]), vv, _mm256_loadu_ps(a)));
    }
  }
}

typedef struct {
  float (*prescale)(float *, const float *, const float *, const float *, int);
  void (*dots)(float *, const float *, const void *, size_t, int, int, int);
  void (*axpys)(float *, const float *, const void *, size_t, int, int, int, int);
} attn_ops;

/* One work item: query row r over cache positions [j0, j1), every head. Rows of the cache are read whole
 * (nKvHeads·headDim contiguous values per position, positions contiguous within a block), so the hardware
 * prefetchers stream them; reading per-KV-head slices instead (2 KiB apart) ran ~5x slower on DRAM latency.
 * Leaves the unnormalized partial (max m, sum z, Σ p·v) of each head for attention_merge. */
static inline __attribute__((always_inline)) void attn_item(const attn_job *jb, attn_scratch *sc, const attn_ops *ops, int dt, int item) {
  const int r = jb->item_row[item], j0 = jb->item_begin[item], j1 = jb->item_end[item];
  const int hd = jb->head_dim, nh = jb->n_heads, G = nh / jb->n_kv_heads, kv_dim = jb->n_kv_heads * hd;
  const int s = jb->row_seq[r], bs = jb->block_size, len = j1 - j0;
  const int32_t *bt = jb->block_tables + (size_t)s * jb->max_blocks;
  float *scores = sc->scores;
  float *part = jb->partials + (size_t)item * nh * (hd + 2); /* per head: m, z, acc[hd] */
  const float *q = jb->q + (size_t)r * nh * hd;
  /* the query rows in this thread's scratch: read in place (from the JS heap), f32 decode at 1024+ positions ran ~20%
   * slower on this host */
  const float *qs = sc->qs;
  if (dt == KV_INT8) { /* q·((k − off)·s) = (q·s)·k − Σ q·s·off */
    for (int h = 0; h < nh; h++) {
      const int co = (h / G) * hd;
      sc->bias[h] = ops->prescale(sc->qs + (size_t)h * hd, q + (size_t)h * hd, jb->k_scale + co, jb->k_offset + co, hd);
    }
  } else
    memcpy(sc->qs, q, sizeof(float) * (size_t)nh * hd);
  for (int h = 0; h < nh; h++) part[h * (hd + 2)] = -INFINITY;
  /* scores[j][h] */
  for (int j = j0; j < j1; j++) {
    const size_t row = ((size_t)bt[j / bs] * bs + (size_t)(j % bs)) * kv_dim;
    float *sj = scores + (size_t)(j - j0) * nh;
    for (int g = 0; g < jb->n_kv_heads; g++) {
      ops->dots(sj + g * G, qs + (size_t)g * G * hd, jb->k, row + (size_t)g * hd, dt, hd, G);
    }
    for (int h = 0; h < nh; h++) {
      float x = (dt == KV_INT8 ? sj[h] - sc->bias[h] : sj[h]) * jb->scale;
      sj[h] = x;
      if (x > part[h * (hd + 2)]) part[h * (hd + 2)] = x;
    }
  }
  for (int h = 0; h < nh; h++) {
    float *ph = part + h * (hd + 2);
    float z = 0;
    for (int j = 0; j < len; j++) z += scores[(size_t)j * nh + h] = expf(scores[(size_t)j * nh + h] - ph[0]);
    ph[1] = z;
    memset(ph + 2, 0, sizeof(float) * (size_t)hd);
  }
  for (int j = j0; j < j1; j++) {
    const size_t row = ((size_t)bt[j / bs] * bs + (size_t)(j % bs)) * kv_dim;
    const float *pj = scores + (size_t)(j - j0) * nh;
    for (int g = 0; g < jb->n_kv_heads; g++) {
      ops->axpys(part + (size_t)g * G * (hd + 2) + 2, pj + g * G, jb->v, row + (size_t)g * hd, dt, hd, G, hd + 2);
    }
  }
}

static const attn_ops OPS_SCALAR = {prescale_scalar, dots_scalar, axpys_scalar};
static const attn_ops OPS_256 = {prescale_256, dots_256, axpys_256};
static const attn_ops OPS_512 = {prescale_512, dots_512, axpys_512};

/* one entry per ISA and cache dtype so attn_item and its row ops inline with that ISA's code generation and the
 * dtype's loads (no per-row branch on the dtype) */
#define ITEM_BY_DTYPE(ops)                                 \
  switch (jb->dtype) {                                     \
    case KV_F32: attn_item(jb, sc, ops, KV_F32, i); break; \
    case KV_F16: attn_item(jb, sc, ops, KV_F16, i); break; \
    default: attn_item(jb, sc, ops, KV_INT8, i); break;    \
  }
T512 static void item_512(const attn_job *jb, attn_scratch *sc, int i) { ITEM_BY_DTYPE(&OPS_512) }
T256 static void item_256(const attn_job *jb, attn_scratch *sc, int i) { ITEM_BY_DTYPE(&OPS_256) }
static void item_scalar(const attn_job *jb, attn_scratch *sc, int i) { ITEM_BY_DTYPE(&OPS_SCALAR) }

void attention_item(const attn_job *jb, attn_scratch *sc, int item) {
  /* the SIMD rows need headDim to be a whole number of vectors */
  if (jb->isa == 2 && jb->head_dim % 16 == 0) item_512(jb, sc, item);
  else if (jb->isa >= 1 && jb->head_dim % 8 == 0) item_256(jb, sc, item);
  else item_scalar(jb, sc, item);
}

void attention_merge(const attn_job *jb) {
  const int hd = jb->head_dim, nh = jb->n_heads, G = nh / jb->n_kv_heads;
  for (int i = 0; i < jb->n_items;) {
    const int r = jb->item_row[i];
    int e = i;
    while (e < jb->n_items && jb->item_row[e] == r) e++;
    for (int h = 0; h < nh; h++) {
      float m = -INFINITY;
      for (int c = i; c < e; c++) {
        float mc = jb->partials[((size_t)c * nh + h) * (hd + 2)];
        if (mc > m) m = mc;
      }
      float *out = jb->out + ((size_t)r * nh + h) * hd;
      float z = 0;
      for (int d = 0; d < hd; d++) out[d] = 0;
      for (int c = i; c < e; c++) {
        const float *ph = jb->partials + ((size_t)c * nh + h) * (hd + 2);
        const float w = e - i == 1 ? 1.0f : expf(ph[0] - m);
        z += w * ph[1];
        for (int d = 0; d < hd; d++) out[d] += w * ph[2 + d];
      }
      const float inv = 1.0f / z;
      if (jb->dtype == KV_INT8) { /* Σ p·(v − off)·s = s·(Σ p·v − off·Σ p) */
        const float *vs = jb->v_scale + (h / G) * hd, *vo = jb->v_offset + (h / G) * hd;
        for (int d = 0; d < hd; d++) out[d] = vs[d] * (out[d] - vo[d] * z) * inv;
      } else
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
    i = e;
  }
}

int attn_scratch_reserve(attn_scratch *sc, int n_heads, int head_dim, int n_kv_heads, int max_len) {
  size_t need_scores = (size_t)n_heads * (size_t)max_len;
  size_t need_vec = (size_t)n_heads * (size_t)head_dim;
  if (need_scores > sc->scores_cap) {
    free(sc->scores);
    sc->scores = malloc(sizeof(float) * need_scores);
    sc->scores_cap = sc->scores ? need_scores : 0;
  }
  if (need_vec > sc->vec_cap) {
    free(sc->qs);
    free(sc->bias);
    sc->qs = malloc(sizeof(float) * need_vec);
    /* need_vec floats, not n_heads: vec_cap then covers the heads of any later call that fits (n_heads <= need_vec) */
    sc->bias = malloc(sizeof(float) * need_vec);
    sc->vec_cap = sc->qs && sc->bias ? need_vec : 0;
  }
  (void)n_kv_heads;
  return sc->scores && sc->qs && sc->bias && sc->vec_cap >= need_vec;
}
