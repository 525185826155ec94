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

/* One cache row (headDim values of one KV head) as floats; int8 stays as raw codes (scale folded by the caller).
 * Returns a pointer to the floats: the row itself for f32 caches, else `dst`. */
static const float *load_row_scalar(float *restrict dst, int dtype, const void *base, size_t idx, int hd) {
  if (dtype == KV_F32) return (const float *)base + idx;
  if (dtype == KV_INT8)
    for (int d = 0; d < hd; d++) dst[d] = (float)((const int8_t *)base)[idx + d];
  else
    for (int d = 0; d < hd; d++) dst[d] = half_to_float(((const uint16_t *)base)[idx + d]);
  return dst;
}

T512 static inline const float *load_row_512(float *restrict dst, int dtype, const void *base, size_t idx, int hd) {
  if (dtype == KV_F32) return (const float *)base + idx;
  for (int d = 0; d < hd; d += 16) {
    __m512 v = dtype == KV_INT8
                   ? _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)base + idx + d))))
                   : _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)base + idx + d)));
    _mm512_storeu_ps(dst + d, v);
  }
  return dst;
}

T256 static inline const float *load_row_256(float *restrict dst, int dtype, const void *base, size_t idx, int hd) {
  if (dtype == KV_F32) return (const float *)base + idx;
  for (int d = 0; d < hd; d += 8) {
    __m256 v = dtype == KV_INT8
                   ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)base + idx + d))))
                   : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + idx + d)));
    _mm256_storeu_ps(dst + d, v);
  }
  return dst;
}

/* out[h] = qs[h]·k for the group's heads */
static void dots_scalar(float *out, const float *qs, const float *k, int hd, int G) {
  for (int h = 0; h < G; h++) {
    float s = 0;
    for (int d = 0; d < hd; d++) s += qs[h * hd + d] * k[d];
    out[h] = s;
  }
}

T512 static inline void dots_512(float *out, const float *qs, const float *k, int hd, int G) {
  for (int h0 = 0; h0 < G; h0 += 4) {
    const int n = G - h0 < 4 ? G - h0 : 4;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int d = 0; d < hd; d += 16) {
      __m512 kv = _mm512_loadu_ps(k + d);
      for (int h = 0; h < n; h++) acc[h] = _mm512_fmadd_ps(_mm512_loadu_ps(qs + (h0 + h) * hd + d), kv, acc[h]);
    }
    for (int h = 0; h < n; h++) out[h0 + h] = _mm512_reduce_add_ps(acc[h]);
  }
}

T256 static inline void dots_256(float *out, const float *qs, const float *k, int hd, int G) {
  for (int h0 = 0; h0 < G; h0 += 4) {
    const int n = G - h0 < 4 ? G - h0 : 4;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int d = 0; d < hd; d += 8) {
      __m256 kv = _mm256_loadu_ps(k + d);
      for (int h = 0; h < n; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(qs + (h0 + h) * hd + d), kv, acc[h]);
    }
    for (int h = 0; h < n; h++) {
      __m128 t = _mm_add_ps(_mm256_castps256_ps128(acc[h]), _mm256_extractf128_ps(acc[h], 1));
      t = _mm_add_ps(t, _mm_movehl_ps(t, t));
      t = _mm_add_ss(t, _mm_movehdup_ps(t));
      out[h0 + h] = _mm_cvtss_f32(t);
    }
  }
}

/* acc[h·stride ..] += p[h]·v for the group's heads */
static void axpys_scalar(float *acc, const float *p, const float *v, int hd, int G, int stride) {
  for (int h = 0; h < G; h++)
    for (int d = 0; d < hd; d++) acc[h * stride + d] += p[h] * v[d];
}

T512 static inline void axpys_512(float *acc, const float *p, const float *v, int hd, int G, int stride) {
  for (int d = 0; d < hd; d += 16) {
    __m512 vv = _mm512_loadu_ps(v + d);
    for (int h = 0; h < G; h++) {
      float *a = acc + h * stride + d;
      _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(p[h]), vv, _mm512_loadu_ps(a)));
    }
  }
}

T256 static inline void axpys_256(float *acc, const float *p, const float *v, int hd, int G, int stride) {
  for (int d = 0; d < hd; d += 8) {
    __m256 vv = _mm256_loadu_ps(v + d);
    for (int h = 0; h < G; h++) {
      float *a = acc + h * stride + d;
      _mm256_storeu_ps(a, _mm256_fmadd_ps(_mm256_set1_ps(p[h]), vv, _mm256_loadu_ps(a)));
    }
  }
}

typedef struct {
  const float *(*load_row)(float *restrict, int, const void *, size_t, int);
  void (*dots)(float *, const float *, const float *, int, int);
  void (*axpys)(float *, const float *, const float *, int, int, int);
} attn_ops;

/* One work item: query row r over cache positions [j0, j1), every head. Rows of the cache are read whole
 * (nKvHeads·headDim contiguous values per position, positions contiguous within a block), so the hardware
 * prefetchers stream them; reading per-KV-head slices instead (2 KiB apart) ran ~5x slower on DRAM latency.
 * Leaves the unnormalized partial (max m, sum z, Σ p·v) of each head for attention_merge. */
static inline __attribute__((always_inline)) void attn_item(const attn_job *jb, attn_scratch *sc, const attn_ops *ops, int item) {
  const int r = jb->item_row[item], j0 = jb->item_begin[item], j1 = jb->item_end[item];
  const int hd = jb->head_dim, nh = jb->n_heads, G = nh / jb->n_kv_heads, kv_dim = jb->n_kv_heads * hd;
  const int s = jb->row_seq[r], bs = jb->block_size, len = j1 - j0;
  const int32_t *bt = jb->block_tables + (size_t)s * jb->max_blocks;
  float *qs = sc->qs, *tmp = sc->row, *scores = sc->scores;
  float *part = jb->partials + (size_t)item * nh * (hd + 2); /* per head: m, z, acc[hd] */
  const float *q = jb->q + (size_t)r * nh * hd;
  for (int h = 0; h < nh; h++) {
    const int co = (h / G) * hd;
    float bias = 0;
    for (int d = 0; d < hd; d++) {
      float v = q[h * hd + d];
      if (jb->dtype == KV_INT8) { /* q·((k − off)·s) = (q·s)·k − Σ q·s·off */
        v *= jb->k_scale[co + d];
        bias += v * jb->k_offset[co + d];
      }
      qs[h * hd + d] = v;
    }
    sc->bias[h] = bias;
    part[h * (hd + 2)] = -INFINITY;
  }
  /* scores[j][h] */
  for (int j = j0; j < j1; j++) {
    const size_t row = ((size_t)bt[j / bs] * bs + (size_t)(j % bs)) * kv_dim;
    float *sj = scores + (size_t)(j - j0) * nh;
    for (int g = 0; g < jb->n_kv_heads; g++) {
      const float *k = ops->load_row(tmp, jb->dtype, jb->k, row + (size_t)g * hd, hd);
      ops->dots(sj + g * G, qs + (size_t)g * G * hd, k, hd, G);
    }
    for (int h = 0; h < nh; h++) {
      float x = (sj[h] - sc->bias[h]) * jb->scale;
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
      const float *v = ops->load_row(tmp, jb->dtype, jb->v, row + (size_t)g * hd, hd);
      ops->axpys(part + (size_t)g * G * (hd + 2) + 2, pj + g * G, v, hd, G, hd + 2);
    }
  }
}

static const attn_ops OPS_SCALAR = {load_row_scalar, dots_scalar, axpys_scalar};
static const attn_ops OPS_256 = {load_row_256, dots_256, axpys_256};
static const attn_ops OPS_512 = {load_row_512, dots_512, axpys_512};

/* one entry per ISA so attn_item and its row ops inline with that ISA's code generation */
T512 static void item_512(const attn_job *jb, attn_scratch *sc, int i) { attn_item(jb, sc, &OPS_512, i); }
T256 static void item_256(const attn_job *jb, attn_scratch *sc, int i) { attn_item(jb, sc, &OPS_256, i); }
static void item_scalar(const attn_job *jb, attn_scratch *sc, int i) { attn_item(jb, sc, &OPS_SCALAR, i); }

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
      const int co = (h / G) * hd;
      for (int d = 0; d < hd; d++)
        out[d] = jb->dtype == KV_INT8 ? jb->v_scale[co + d] * (out[d] - jb->v_offset[co + d] * z) * inv : out[d] * inv;
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
    free(sc->row);
    free(sc->bias);
    sc->qs = malloc(sizeof(float) * need_vec);
    sc->row = malloc(sizeof(float) * need_vec);
    sc->bias = malloc(sizeof(float) * (size_t)n_heads);
    sc->vec_cap = sc->qs && sc->row && sc->bias ? need_vec : 0;
  }
  (void)n_kv_heads;
  return sc->scores && sc->qs && sc->row && sc->bias && sc->vec_cap >= need_vec;
}
