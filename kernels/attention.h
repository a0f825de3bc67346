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

#endif
