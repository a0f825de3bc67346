/* The attention kernels of every set (the contract is struct attn_group's, kernels.h).
 * The SIMD ones are only called after kernels_init() has checked the CPU. */
#ifndef BITNET_KERNELS_ATTENTION_H
#define BITNET_KERNELS_ATTENTION_H

#include "kernels/kernels.h"

void attn_f32_scalar(const struct attn_group *a);
void attn_f16_scalar(const struct attn_group *a);
void attn_f32_avx2(const struct attn_group *a);
void attn_f16_avx2(const struct attn_group *a);
void attn_f32_avx512(const struct attn_group *a);
void attn_f16_avx512(const struct attn_group *a);
void attn_q8_scalar(const struct attn_group_q8 *a);
void attn_q8_avx2(const struct attn_group_q8 *a);
void attn_q8_avx512(const struct attn_group_q8 *a);

/* A head's scores in w[0..n) become its softmax weights as kernels.h states it; w has
 * room for attn_tiles_len(n) floats, and those past n come back 0. The max and the sum
 * go to max_sum[0] and [1] when it is set. */
void attn_softmax_avx2(float *w, int n, float *max_sum);
void attn_softmax_avx512(float *w, int n, float *max_sum);

#endif
