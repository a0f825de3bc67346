/* The optimized kernel sets for x86-64. Each is compiled with its own -m flags (see the
 * Makefile) and is only called after kernels_init() has checked the CPU. A set may leave
 * entries NULL: dispatch fills those from the next set down. */
#ifndef BITNET_KERNELS_X86_H
#define BITNET_KERNELS_X86_H

#include "kernels/kernels.h"

extern const struct kernel_ops kernels_avx2;   /* AVX2 + FMA + F16C */
extern const struct kernel_ops kernels_avx512; /* AVX-512 F/BW/VL + VNNI */

/* Prefill GEMMs: AVX2, AVX2 with AVX-VNNI, AVX-512 VNNI, and AMX-INT8 (needs
 * amx_request() granted first). */
void i2s_gemm_avx2(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                   int r0, int r1, int32_t *out, size_t ldo);
void i2s_gemm_avxvnni(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                      int r0, int r1, int32_t *out, size_t ldo);
void i2s_gemm_avx512(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                     int r0, int r1, int32_t *out, size_t ldo);
void i2s_gemm_amx(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_tok,
                  int r0, int r1, int32_t *out, size_t ldo);

/* F16/F32/BF16/Q8_0 rows to int8 rows. */
void dense_rows_to_q8_avx2(const struct dense_matrix *m, int r0, int r1, int8_t *q, float *scale,
                           int32_t *row_sum);

#endif
