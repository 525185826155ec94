/* Host linear kernels (W8A16 and float weights) with AVX-512 / AVX2 / scalar variants chosen at run time.
 * Plain C, no allocation in the hot loops; scratch for the activation codes is owned by the caller. */
#ifndef ASCEND_HOST_KERNELS_H
#define ASCEND_HOST_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
enum { WT_F32 = 0, WT_F16 = 1, WT_BF16 = 2 };

/* Best ISA this CPU and OS support (AVX-512 here means F+BW+VL+VNNI; AVX2 means AVX2+FMA+F16C). */
int kernels_best_isa(void);

/* Activation codes of one token row for the W8A16 integer kernels: x ≈ xs · (hi·2^15 + lo). */
typedef struct {
  int16_t *hi; /* [kpad], zero beyond k */
  int16_t *lo; /* [kpad], 0..32767, zero beyond k */
  double xs;   /* power-of-two step */
  int64_t sum; /* Σ (hi·2^15 + lo), for the offset term */
} act_codes;

/* Bytes of scratch prepare_act_codes needs for T rows of k (codes only, 64-byte aligned rows). */
size_t act_codes_kpad(int k);
void prepare_act_codes(int isa, const float *x, int k, int kpad, int16_t *hi, int16_t *lo, double *xs, int64_t *sum);

typedef struct {
  float *out;            /* [T, n] */
  const float *x;        /* [T, k] */
  int T, n, k, kpad;
  const int8_t *q;       /* [n, k] */
  const float *scale;    /* [n] */
  const float *offset;   /* [n] */
  const float *bias;     /* [n] or NULL */
  const int16_t *xhi;    /* [T, kpad] */
  const int16_t *xlo;    /* [T, kpad] */
  const double *xs;      /* [T] */
  const int64_t *xsum;   /* [T] */
  int isa;
} w8a16_job;

/* Rows [r0, r1) of every token. */
void w8a16_rows(const w8a16_job *job, int r0, int r1);

typedef struct {
  float *out;            /* [T, n] */
  const float *x;        /* [T, k] */
  int T, n, k;
  const void *w;         /* [n, k] f32 / f16 bits / bf16 bits */
  int wtype;
  const float *bias;     /* [n] or NULL */
  int isa;
} float_linear_job;

void float_linear_rows(const float_linear_job *job, int r0, int r1);

/* Sum of the buffer as 64-bit integers (a read-bandwidth probe); bytes must be a multiple of 64. */
uint64_t read_sum(int isa, const uint8_t *p, size_t bytes);

#endif
