/* What a matrix product's input goes through first: the residual add or the FFN gate,
 * RMSNorm, then int8 quantization; and its integer sums after, back to float (the
 * contracts are kernels.h's, at struct kernel_ops add_rows, relu2_mul, rmsnorm,
 * quantize_act and dequant). The SIMD versions are only called after kernels_init() has
 * checked the CPU. */
#ifndef BITNET_KERNELS_ACTIVATION_H
#define BITNET_KERNELS_ACTIVATION_H

#include <math.h>
#include <stdint.h>

#define RMS_LANES 16 /* partial sums of squares; the order every set keeps */

void rmsnorm_scalar(float *out, const float *x, const float *weight, int n, float eps);
void rmsnorm_avx2(float *out, const float *x, const float *weight, int n, float eps);
void rmsnorm_avx512(float *out, const float *x, const float *weight, int n, float eps);
float quantize_act_avx2(const float *x, int n, int8_t *xq);
float quantize_act_avx512(const float *x, int n, int8_t *xq);
void add_rows_scalar(float *x, const float *y, int n);
void add_rows_avx2(float *x, const float *y, int n);
void add_rows_avx512(float *x, const float *y, int n);
void relu2_mul_scalar(float *x, const float *y, int n);
void relu2_mul_avx2(float *x, const float *y, int n);
void relu2_mul_avx512(float *x, const float *y, int n);
void dequant_scalar(float *out, const int32_t *in, int n, float k);
void dequant_avx2(float *out, const int32_t *in, int n, float k);
void dequant_avx512(float *out, const int32_t *in, int n, float k);

/* The lanes folded by halves (lane j + 8 into j, then j + 4, j + 2, j + 1), and the
 * scale the norm multiplies by: shared so that every set rounds the same way. */
static inline float rms_scale(double lane[RMS_LANES], int n, float eps)
{
    for (int half = RMS_LANES / 2; half >= 1; half /= 2)
        for (int j = 0; j < half; j++)
            lane[j] += lane[j + half];
    return (float)(1.0 / sqrt(lane[0] / n + eps));
}

/* 127 / max|x|, the maximum floored at 1e-5. */
static inline float quant_scale(float amax)
{
    if (amax < 1e-5f)
        amax = 1e-5f;
    return 127.0f / amax;
}

/* One element: round half to even (rintf in the default rounding mode), clamped; NaN
 * becomes 0 (as the SIMD kernels make it, rather than the undefined cast). */
static inline int8_t quant_one(float x, float s)
{
    float v = rintf(x * s);
    if (v != v)
        return 0;
    return (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : v);
}

#endif
