/* The scalar twins of the activation kernels: the residual add, the FFN gate, RMSNorm,
 * per-token int8 quantization, and the matrix products' integer sums back to float. */
#include "kernels/activation.h"
#include "kernels/kernels.h"

#include <string.h>

void dequant_scalar(float *out, const int32_t *in, int n, float k)
{
    /* element by element, each read before it is written: out may be in */
    for (int i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, in + i, sizeof v);
        float f = (float)v * k;
        memcpy(out + i, &f, sizeof f);
    }
}

void add_rows_scalar(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i++)
        x[i] += y[i];
}

void relu2_mul_scalar(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i++) {
        float r = x[i] > 0.0f ? x[i] : 0.0f;
        x[i] = r * r * y[i];
    }
}

void rmsnorm_scalar(float *out, const float *x, const float *weight, int n, float eps)
{
    double lane[RMS_LANES] = {0};
    for (int i = 0; i < n; i++)
        lane[i % RMS_LANES] += (double)x[i] * x[i];
    float scale = rms_scale(lane, n, eps);
    for (int i = 0; i < n; i++)
        out[i] = x[i] * scale * weight[i];
}

float quantize_act_i8(const float *x, int n, int8_t *xq)
{
    float amax = 0.0f;
    /* a comparison rather than fmaxf: the same maximum (a NaN never becomes it) without
     * a libm call per element */
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float s = quant_scale(amax);
    for (int i = 0; i < n; i++)
        xq[i] = quant_one(x[i], s);
    return s;
}
