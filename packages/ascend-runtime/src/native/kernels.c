/* Host linear kernels. W8A16 runs on integers: each activation row becomes x ≈ xs·(hi·2^15 + lo) with a
 * power-of-two step xs = amax/2^28..29, so Σ x·q is an exact integer sum of int16×int8 products
 * (vpdpwssd / vpmaddwd), and y = scale·xs·(Σ xi·q − offset·Σ xi) + bias in double. Every ISA gives the same bits.
 * Float weights (f32/f16/bf16) run as convert + f32 FMA. */
#include "kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* int32 accumulators must not overflow between flushes to int64: a lo code is at most 32767 and |q| <= 128,
 * so one vpdpwssd/vpmaddwd pair adds at most 2·32767·128 = 8.4e6 to a lane; 2^31 / 8.4e6 = 256 pairs.
 * AVX-512 lanes take one pair per 32 columns (4096 columns = 128 pairs), AVX2 lanes one pair per 16 (2048 = 128). */
#define KC512 4096
#define KC256 2048

#define ROWS 4 /* weight rows streamed together: reuses each activation load 4 times */
/* Software prefetch into L2, this many bytes ahead of each weight row's read position. The hardware streamers
 * lose track at every new tile of ROWS short rows (a DRAM latency per tile: 2 KiB rows ran at ~10 GB/s);
 * prefetching into the tile after next, at least 16 KiB ahead, brings them to ~20 GB/s on one core. */
#define PF_MIN 16384
#define PF_MAX 65536
static size_t pf_dist(size_t row_bytes) {
  size_t d = 2 * ROWS * row_bytes;
  return d < PF_MIN ? PF_MIN : d > PF_MAX ? PF_MAX : d;
}
#define TOKEN_BLOCK 16 /* tokens per pass over a row tile: their codes (16·k·4 bytes) stay in L2 */

int kernels_best_isa(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512dq"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return ISA_AVX2;
  return ISA_SCALAR;
}

size_t act_codes_kpad(int k) { return ((size_t)k + 31) & ~(size_t)31; }

/* ---- activation codes ---------------------------------------------------------------------------------- */

/* Step of a row's codes; 0 for an all-zero row; NaN when the row holds a NaN or an infinity, so that the
 * outputs become NaN as float arithmetic would make them (the codes themselves are then all zero). */
static double code_step(const float *x, int k) {
  float amax = 0;
  for (int j = 0; j < k; j++) {
    float a = fabsf(x[j]);
    if (a > amax) amax = a;
    else if (a != a) return NAN;
  }
  if (!isfinite(amax)) return NAN;
  if (amax == 0) return 0;
  int e;
  frexp(amax, &e); /* amax = m·2^e, m in [0.5, 1) */
  return ldexp(1.0, e - 29); /* amax / step in [2^28, 2^29) */
}

static void prepare_scalar(const float *x, int k, int kpad, int16_t *hi, int16_t *lo, double step, int64_t *sum) {
  int64_t s = 0;
  for (int j = 0; j < kpad; j++) {
    int32_t xi = j < k && step > 0 ? (int32_t)nearbyint(x[j] / step) : 0;
    hi[j] = (int16_t)(xi >> 15);
    lo[j] = (int16_t)(xi & 0x7fff);
    s += xi;
  }
  *sum = s;
}

T512 static void prepare_avx512(const float *x, int k, int kpad, int16_t *hi, int16_t *lo, float inv, int64_t *sum) {
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i low15 = _mm512_set1_epi32(0x7fff);
  __m512i s = _mm512_setzero_si512();
  for (int j = 0; j < kpad; j += 16) {
    __mmask16 m = k - j >= 16 ? 0xffff : k > j ? (__mmask16)((1u << (k - j)) - 1) : 0;
    __m512i xi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), vinv));
    _mm256_store_si256((__m256i *)(hi + j), _mm512_cvtepi32_epi16(_mm512_srai_epi32(xi, 15)));
    _mm256_store_si256((__m256i *)(lo + j), _mm512_cvtepi32_epi16(_mm512_and_si512(xi, low15)));
    s = _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(xi)));
    s = _mm512_add_epi64(s, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(xi, 1)));
  }
  *sum = _mm512_reduce_add_epi64(s);
}

T256 static void prepare_avx2(const float *x, int k, int kpad, int16_t *hi, int16_t *lo, float inv, int64_t *sum) {
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256i low15 = _mm256_set1_epi32(0x7fff);
  int64_t s = 0;
  float tail[16];
  for (int j = 0; j < kpad; j += 16) {
    const float *src = x + j;
    if (k - j < 16) {
      memset(tail, 0, sizeof tail);
      if (k > j) memcpy(tail, x + j, sizeof(float) * (size_t)(k - j));
      src = tail;
    }
    __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src), vinv));
    __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + 8), vinv));
    __m256i h = _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_srai_epi32(a, 15), _mm256_srai_epi32(b, 15)), 0xd8);
    __m256i l = _mm256_permute4x64_epi64(_mm256_packs_epi32(_mm256_and_si256(a, low15), _mm256_and_si256(b, low15)), 0xd8);
    _mm256_store_si256((__m256i *)(hi + j), h);
    _mm256_store_si256((__m256i *)(lo + j), l);
    int32_t t[16];
    _mm256_storeu_si256((__m256i *)t, a);
    _mm256_storeu_si256((__m256i *)(t + 8), b);
    for (int i = 0; i < 16; i++) s += t[i];
  }
  *sum = s;
}

void prepare_act_codes(int isa, const float *x, int k, int kpad, int16_t *hi, int16_t *lo, double *xs, int64_t *sum) {
  double step = code_step(x, k);
  *xs = step;
  /* the SIMD paths multiply by 1/step in f32: exact (a power of two) while it is a normal float */
  float inv = step > 0 ? (float)(1.0 / step) : 0.0f;
  int simd_ok = step > 0 && isfinite(inv) && inv >= 1.17549435e-38f;
  if (isa == ISA_AVX512 && simd_ok) prepare_avx512(x, k, kpad, hi, lo, inv, sum);
  else if (isa == ISA_AVX2 && simd_ok) prepare_avx2(x, k, kpad, hi, lo, inv, sum);
  else prepare_scalar(x, k, kpad, hi, lo, step, sum);
}

/* ---- W8A16 -------------------------------------------------------------------------------------------- */

INLINE void w8_store(const w8a16_job *jb, int i, int t, int64_t dot) {
  double acc = (double)dot - (double)jb->offset[i] * (double)jb->xsum[t];
  double y = acc * jb->xs[t] * (double)jb->scale[i];
  if (jb->bias) y += jb->bias[i];
  jb->out[(size_t)t * jb->n + i] = (float)y;
}

T512 INLINE int64_t hsum_epi32_512(__m512i v) {
  __m512i w = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)),
                               _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  return _mm512_reduce_add_epi64(w);
}

/* R weight rows × C tokens; R, C are constants at every call site so the accumulators live in registers. */
T512 INLINE void w8_tile_avx512(const w8a16_job *jb, int r, int t, const int R, const int C) {
  const int k = jb->k, kpad = jb->kpad;
  const size_t pf = pf_dist((size_t)k);
  int64_t S[ROWS][2] = {{0}};
  for (int kc = 0; kc < k; kc += KC512) {
    const int kend = kc + KC512 < k ? kc + KC512 : k;
    __m512i ah[ROWS][2], al[ROWS][2];
    for (int a = 0; a < R; a++)
      for (int c = 0; c < C; c++) ah[a][c] = al[a][c] = _mm512_setzero_si512();
    int j = kc;
    for (; j + 32 <= kend; j += 32) {
      __m512i xh[2], xl[2];
      for (int c = 0; c < C; c++) {
        xh[c] = _mm512_load_si512(jb->xhi + (size_t)(t + c) * kpad + j);
        xl[c] = _mm512_load_si512(jb->xlo + (size_t)(t + c) * kpad + j);
      }
      for (int a = 0; a < R; a++) {
        const int8_t *src = jb->q + (size_t)(r + a) * k + j;
        _mm_prefetch((const char *)src + pf, _MM_HINT_T1);
        __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)src));
        for (int c = 0; c < C; c++) {
          ah[a][c] = _mm512_dpwssd_epi32(ah[a][c], w, xh[c]);
          al[a][c] = _mm512_dpwssd_epi32(al[a][c], w, xl[c]);
        }
      }
    }
    if (j < kend) { /* the last < 32 columns: masked loads never touch bytes past the row */
      const __mmask32 m = (__mmask32)((1u << (kend - j)) - 1);
      __m512i xh[2], xl[2];
      for (int c = 0; c < C; c++) {
        xh[c] = _mm512_load_si512(jb->xhi + (size_t)(t + c) * kpad + j);
        xl[c] = _mm512_load_si512(jb->xlo + (size_t)(t + c) * kpad + j);
      }
      for (int a = 0; a < R; a++) {
        __m512i w = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, jb->q + (size_t)(r + a) * k + j));
        for (int c = 0; c < C; c++) {
          ah[a][c] = _mm512_dpwssd_epi32(ah[a][c], w, xh[c]);
          al[a][c] = _mm512_dpwssd_epi32(al[a][c], w, xl[c]);
        }
      }
    }
    for (int a = 0; a < R; a++)
      for (int c = 0; c < C; c++) S[a][c] += hsum_epi32_512(ah[a][c]) * 32768 + hsum_epi32_512(al[a][c]);
  }
  for (int a = 0; a < R; a++)
    for (int c = 0; c < C; c++) w8_store(jb, r + a, t + c, S[a][c]);
}

T256 INLINE int64_t hsum_epi32_256(__m256i v) {
  __m256i w = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)),
                               _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1)));
  __m128i h = _mm_add_epi64(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  return _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
}

T256 INLINE void w8_tile_avx2(const w8a16_job *jb, int r, int t, const int R) {
  const int k = jb->k, kpad = jb->kpad;
  const int16_t *xh = jb->xhi + (size_t)t * kpad, *xl = jb->xlo + (size_t)t * kpad;
  const size_t pf = pf_dist((size_t)k);
  int64_t S[ROWS] = {0};
  for (int kc = 0; kc < k; kc += KC256) {
    const int kend = kc + KC256 < k ? kc + KC256 : k;
    __m256i ah[ROWS], al[ROWS];
    for (int a = 0; a < R; a++) ah[a] = al[a] = _mm256_setzero_si256();
    for (int j = kc; j < kend; j += 16) {
      __m256i vh = _mm256_load_si256((const __m256i *)(xh + j));
      __m256i vl = _mm256_load_si256((const __m256i *)(xl + j));
      for (int a = 0; a < R; a++) {
        const int8_t *src = jb->q + (size_t)(r + a) * k + j;
        __m128i b;
        if (kend - j >= 16) {
          if ((j & 63) == 0) _mm_prefetch((const char *)src + pf, _MM_HINT_T1);
          b = _mm_loadu_si128((const __m128i *)src);
        } else {
          int8_t tmp[16] = {0};
          memcpy(tmp, src, (size_t)(kend - j));
          b = _mm_loadu_si128((const __m128i *)tmp);
        }
        __m256i w = _mm256_cvtepi8_epi16(b);
        ah[a] = _mm256_add_epi32(ah[a], _mm256_madd_epi16(w, vh));
        al[a] = _mm256_add_epi32(al[a], _mm256_madd_epi16(w, vl));
      }
    }
    for (int a = 0; a < R; a++) S[a] += hsum_epi32_256(ah[a]) * 32768 + hsum_epi32_256(al[a]);
  }
  for (int a = 0; a < R; a++) w8_store(jb, r + a, t, S[a]);
}

static void w8_row_scalar(const w8a16_job *jb, int i, int t) {
  const int8_t *q = jb->q + (size_t)i * jb->k;
  const int16_t *xh = jb->xhi + (size_t)t * jb->kpad, *xl = jb->xlo + (size_t)t * jb->kpad;
  int64_t s = 0;
  for (int j = 0; j < jb->k; j++) s += (int64_t)q[j] * ((int64_t)xh[j] * 32768 + xl[j]);
  w8_store(jb, i, t, s);
}

T512 static void w8_rows_avx512(const w8a16_job *jb, int r0, int r1) {
  for (int tb = 0; tb < jb->T; tb += TOKEN_BLOCK) {
    const int te = tb + TOKEN_BLOCK < jb->T ? tb + TOKEN_BLOCK : jb->T;
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS) {
      int t = tb;
      for (; t + 2 <= te; t += 2) w8_tile_avx512(jb, r, t, ROWS, 2);
      if (t < te) w8_tile_avx512(jb, r, t, ROWS, 1);
    }
    for (; r < r1; r++) {
      int t = tb;
      for (; t + 2 <= te; t += 2) w8_tile_avx512(jb, r, t, 1, 2);
      if (t < te) w8_tile_avx512(jb, r, t, 1, 1);
    }
  }
}

T256 static void w8_rows_avx2(const w8a16_job *jb, int r0, int r1) {
  for (int tb = 0; tb < jb->T; tb += TOKEN_BLOCK) {
    const int te = tb + TOKEN_BLOCK < jb->T ? tb + TOKEN_BLOCK : jb->T;
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS)
      for (int t = tb; t < te; t++) w8_tile_avx2(jb, r, t, ROWS);
    for (; r < r1; r++)
      for (int t = tb; t < te; t++) w8_tile_avx2(jb, r, t, 1);
  }
}

void w8a16_rows(const w8a16_job *jb, int r0, int r1) {
  if (jb->isa == ISA_AVX512) w8_rows_avx512(jb, r0, r1);
  else if (jb->isa == ISA_AVX2) w8_rows_avx2(jb, r0, r1);
  else
    for (int t = 0; t < jb->T; t++)
      for (int i = r0; i < r1; i++) w8_row_scalar(jb, i, t);
}

/* ---- float weights ------------------------------------------------------------------------------------ */

static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0) {
    float v = (float)m * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31) bits = sign | 0x7f800000u | (m << 13);
  else bits = sign | ((e + 112) << 23) | (m << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float bf16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

INLINE float weight_scalar(const float_linear_job *jb, size_t idx) {
  if (jb->wtype == WT_F32) return ((const float *)jb->w)[idx];
  if (jb->wtype == WT_F16) return half_to_float(((const uint16_t *)jb->w)[idx]);
  return bf16_to_float(((const uint16_t *)jb->w)[idx]);
}

INLINE void fl_store(const float_linear_job *jb, int i, int t, float acc) {
  jb->out[(size_t)t * jb->n + i] = acc + (jb->bias ? jb->bias[i] : 0.0f);
}

T512 INLINE __m512 load_w16_avx512(const void *w, int wtype, size_t idx, __mmask16 m) {
  if (wtype == WT_F32) return _mm512_maskz_loadu_ps(m, (const float *)w + idx);
  __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + idx);
  if (wtype == WT_F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

T512 INLINE void fl_tile_avx512(const float_linear_job *jb, int r, int t, const int R, const int C, const int wtype) {
  const int k = jb->k;
  const size_t bpe = wtype == WT_F32 ? 4 : 2, pf = pf_dist((size_t)k * bpe);
  __m512 acc[ROWS][2];
  for (int a = 0; a < R; a++)
    for (int c = 0; c < C; c++) acc[a][c] = _mm512_setzero_ps();
  for (int j = 0; j < k; j += 16) {
    __mmask16 m = k - j >= 16 ? 0xffff : (__mmask16)((1u << (k - j)) - 1);
    __m512 x[2];
    for (int c = 0; c < C; c++) x[c] = _mm512_maskz_loadu_ps(m, jb->x + (size_t)(t + c) * k + j);
    for (int a = 0; a < R; a++) {
      _mm_prefetch((const char *)jb->w + ((size_t)(r + a) * k + j) * bpe + pf, _MM_HINT_T1);
      __m512 w = load_w16_avx512(jb->w, wtype, (size_t)(r + a) * k + j, m);
      for (int c = 0; c < C; c++) acc[a][c] = _mm512_fmadd_ps(w, x[c], acc[a][c]);
    }
  }
  for (int a = 0; a < R; a++)
    for (int c = 0; c < C; c++) fl_store(jb, r + a, t + c, _mm512_reduce_add_ps(acc[a][c]));
}

T512 INLINE void fl_rows_avx512_t(const float_linear_job *jb, int r0, int r1, const int wtype) {
  for (int tb = 0; tb < jb->T; tb += TOKEN_BLOCK) {
    const int te = tb + TOKEN_BLOCK < jb->T ? tb + TOKEN_BLOCK : jb->T;
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS) {
      int t = tb;
      for (; t + 2 <= te; t += 2) fl_tile_avx512(jb, r, t, ROWS, 2, wtype);
      if (t < te) fl_tile_avx512(jb, r, t, ROWS, 1, wtype);
    }
    for (; r < r1; r++)
      for (int t = tb; t < te; t++) fl_tile_avx512(jb, r, t, 1, 1, wtype);
  }
}

T512 static void fl_rows_avx512(const float_linear_job *jb, int r0, int r1) {
  if (jb->wtype == WT_F16) fl_rows_avx512_t(jb, r0, r1, WT_F16);
  else if (jb->wtype == WT_BF16) fl_rows_avx512_t(jb, r0, r1, WT_BF16);
  else fl_rows_avx512_t(jb, r0, r1, WT_F32);
}

T256 INLINE __m256 load_w8_avx2(const void *w, int wtype, size_t idx) {
  if (wtype == WT_F32) return _mm256_loadu_ps((const float *)w + idx);
  __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + idx));
  if (wtype == WT_F16) return _mm256_cvtph_ps(h);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

T256 INLINE float hsum_ps_256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

T256 INLINE void fl_tile_avx2(const float_linear_job *jb, int r, int t, const int R, const int wtype) {
  const int k = jb->k, kv = k & ~7;
  const float *x = jb->x + (size_t)t * k;
  const size_t bpe = wtype == WT_F32 ? 4 : 2, pf = pf_dist((size_t)k * bpe);
  __m256 acc[ROWS];
  for (int a = 0; a < R; a++) acc[a] = _mm256_setzero_ps();
  for (int j = 0; j < kv; j += 8) {
    __m256 vx = _mm256_loadu_ps(x + j);
    for (int a = 0; a < R; a++) {
      if ((j & 31) == 0) _mm_prefetch((const char *)jb->w + ((size_t)(r + a) * k + j) * bpe + pf, _MM_HINT_T1);
      acc[a] = _mm256_fmadd_ps(load_w8_avx2(jb->w, wtype, (size_t)(r + a) * k + j), vx, acc[a]);
    }
  }
  for (int a = 0; a < R; a++) {
    float s = hsum_ps_256(acc[a]);
    for (int j = kv; j < k; j++) s += x[j] * weight_scalar(jb, (size_t)(r + a) * k + j);
    fl_store(jb, r + a, t, s);
  }
}

T256 INLINE void fl_rows_avx2_t(const float_linear_job *jb, int r0, int r1, const int wtype) {
  for (int tb = 0; tb < jb->T; tb += TOKEN_BLOCK) {
    const int te = tb + TOKEN_BLOCK < jb->T ? tb + TOKEN_BLOCK : jb->T;
    int r = r0;
    for (; r + ROWS <= r1; r += ROWS)
      for (int t = tb; t < te; t++) fl_tile_avx2(jb, r, t, ROWS, wtype);
    for (; r < r1; r++)
      for (int t = tb; t < te; t++) fl_tile_avx2(jb, r, t, 1, wtype);
  }
}

T256 static void fl_rows_avx2(const float_linear_job *jb, int r0, int r1) {
  if (jb->wtype == WT_F16) fl_rows_avx2_t(jb, r0, r1, WT_F16);
  else if (jb->wtype == WT_BF16) fl_rows_avx2_t(jb, r0, r1, WT_BF16);
  else fl_rows_avx2_t(jb, r0, r1, WT_F32);
}

void float_linear_rows(const float_linear_job *jb, int r0, int r1) {
  if (jb->isa == ISA_AVX512) fl_rows_avx512(jb, r0, r1);
  else if (jb->isa == ISA_AVX2) fl_rows_avx2(jb, r0, r1);
  else
    for (int t = 0; t < jb->T; t++)
      for (int i = r0; i < r1; i++) {
        float s = 0;
        for (int j = 0; j < jb->k; j++) s += jb->x[(size_t)t * jb->k + j] * weight_scalar(jb, (size_t)i * jb->k + j);
        fl_store(jb, i, t, s);
      }
}

/* ---- read bandwidth probe ----------------------------------------------------------------------------- */

/* Four streams in lockstep (the quarters of the buffer), like the GEMV kernels' four rows, each with the same
 * L2 prefetch: a single stream leaves DRAM bandwidth unused on this kind of machine. */
T512 static uint64_t read_sum_avx512(const uint8_t *p, size_t bytes) {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
  const size_t q = (bytes / 4) & ~(size_t)63;
  const uint8_t *a = p, *b = p + q, *c = p + 2 * q, *d = p + 3 * q;
  for (size_t i = 0; i < q; i += 64) {
    _mm_prefetch((const char *)a + i + PF_MIN, _MM_HINT_T1);
    _mm_prefetch((const char *)b + i + PF_MIN, _MM_HINT_T1);
    _mm_prefetch((const char *)c + i + PF_MIN, _MM_HINT_T1);
    _mm_prefetch((const char *)d + i + PF_MIN, _MM_HINT_T1);
    s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(a + i));
    s1 = _mm512_add_epi64(s1, _mm512_loadu_si512(b + i));
    s2 = _mm512_add_epi64(s2, _mm512_loadu_si512(c + i));
    s3 = _mm512_add_epi64(s3, _mm512_loadu_si512(d + i));
  }
  for (size_t i = 4 * q; i + 64 <= bytes; i += 64) s0 = _mm512_add_epi64(s0, _mm512_loadu_si512(p + i));
  return (uint64_t)_mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
}

T256 static uint64_t read_sum_avx2(const uint8_t *p, size_t bytes) {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0;
  for (size_t i = 0; i < bytes; i += 64) {
    s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
    s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
  }
  uint64_t t[4];
  _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(s0, s1));
  return t[0] + t[1] + t[2] + t[3];
}

uint64_t read_sum(int isa, const uint8_t *p, size_t bytes) {
  if (isa == ISA_AVX512) return read_sum_avx512(p, bytes);
  if (isa == ISA_AVX2) return read_sum_avx2(p, bytes);
  uint64_t s = 0;
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    s += v;
  }
  return s;
}
