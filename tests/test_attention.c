/* Attention-head and int8-row-conversion kernels against their scalar twins: attention
 * (floats, polynomial exp) within a tight tolerance, the int8 conversion bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu_features.h"
#include "kernels/f16.h"
#include "kernels/kernels.h"
#include "kernels/kernels_x86.h"
#include "model/ggml_types.h"
#include "tests/check.h"

static uint64_t rng = 99;
static float frand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

typedef void (*attn32_fn)(const float *, int, const float *, const float *, size_t, int, float,
                          float *, float *);
typedef void (*attn16_fn)(const float *, int, const uint16_t *, const uint16_t *, size_t, int,
                          float, float *, float *);

static void check_attention(const char *name, attn32_fn f32, attn16_fn f16)
{
    static const int dims[] = {32, 64, 100, 128};
    static const int lens[] = {1, 7, 16, 17, 300};
    static const float spreads[] = {1.0f, 8.0f, 40.0f}; /* 40: nearly one-hot softmax */
    float worst = 0.0f;
    for (size_t di = 0; di < 4; di++)
        for (size_t li = 0; li < 5; li++)
            for (size_t si = 0; si < 3; si++) {
                int d = dims[di], n = lens[li];
                size_t stride = (size_t)d + 24;
                float *q = malloc(sizeof(float) * d), *k = malloc(sizeof(float) * n * stride);
                float *v = malloc(sizeof(float) * n * stride);
                uint16_t *kh = malloc(2 * n * stride), *vh = malloc(2 * n * stride);
                float *scr = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * d);
                float *got = malloc(sizeof(float) * (d + 1));
                for (int i = 0; i < d; i++)
                    q[i] = frand(-1, 1) * spreads[si];
                for (size_t i = 0; i < (size_t)n * stride; i++) {
                    k[i] = frand(-1, 1), v[i] = frand(-2, 2);
                    kh[i] = f32_to_f16(k[i]), vh[i] = f32_to_f16(v[i]);
                }
                float scale = 1.0f / sqrtf((float)d);
                for (int kind = 0; kind < 2; kind++) {
                    got[d] = 12345.0f; /* guard: nothing past d is written */
                    if (kind == 0) {
                        kernels_scalar.attn_head_f32(q, d, k, v, stride, n, scale, scr, ref);
                        f32(q, d, k, v, stride, n, scale, scr, got);
                    } else {
                        kernels_scalar.attn_head_f16(q, d, kh, vh, stride, n, scale, scr, ref);
                        f16(q, d, kh, vh, stride, n, scale, scr, got);
                    }
                    float err = 0.0f;
                    for (int i = 0; i < d; i++)
                        err = fmaxf(err, fabsf(got[i] - ref[i]));
                    worst = fmaxf(worst, err);
                    CHECK(err < 2e-5f, "%s %s d=%d n=%d spread=%g: max error %g", name,
                          kind ? "f16" : "f32", d, n, spreads[si], err);
                    /* the F32 kernels promise the scalar twin's exact arithmetic */
                    if (kind == 0 && f32 != kernels_scalar.attn_head_f32)
                        CHECK(memcmp(got, ref, sizeof(float) * d) == 0,
                              "%s f32 d=%d n=%d not bit-identical to scalar", name, d, n);
                    CHECK(got[d] == 12345.0f, "%s wrote past the head", name);
                }
                free(q), free(k), free(v), free(kh), free(vh), free(scr), free(ref), free(got);
            }
    printf("%s attention: worst |diff| vs scalar %.2e\n", name, worst);
}

static void check_q8_rows(void)
{
    static const uint32_t types[] = {GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_BF16, GGML_TYPE_Q8_0};
    static const int colss[] = {32, 96, 2560};
    for (size_t ti = 0; ti < 4; ti++)
        for (size_t ci = 0; ci < 3; ci++) {
            int rows = 37, cols = colss[ci];
            struct dense_matrix m = {.type = types[ti], .rows = rows, .cols = cols};
            m.row_bytes = ggml_tensor_nbytes(types[ti], (uint64_t)cols, (uint64_t)cols);
            uint8_t *data = malloc(m.row_bytes * rows);
            for (size_t i = 0; i < m.row_bytes * rows; i++)
                data[i] = (uint8_t)(frand(0, 256));
            if (types[ti] == GGML_TYPE_F16 || types[ti] == GGML_TYPE_BF16) {
                /* finite values only: random bits include NaN and infinity */
                for (size_t i = 0; i < (size_t)rows * cols; i++) {
                    uint16_t h = types[ti] == GGML_TYPE_F16 ? f32_to_f16(frand(-3, 3))
                                                             : (uint16_t)(0x3f80 ^ (i & 0x807f));
                    data[2 * i] = (uint8_t)h, data[2 * i + 1] = (uint8_t)(h >> 8);
                }
            } else if (types[ti] == GGML_TYPE_F32) {
                for (size_t i = 0; i < (size_t)rows * cols; i++) {
                    float f = frand(-5, 5);
                    memcpy(data + 4 * i, &f, 4);
                }
            } else {
                for (size_t b = 0; b < (size_t)rows * cols / 32; b++) {
                    uint16_t d = f32_to_f16(frand(0.001f, 0.1f));
                    data[34 * b] = (uint8_t)d, data[34 * b + 1] = (uint8_t)(d >> 8);
                }
            }
            if (ci == 0)
                memset(data, 0, m.row_bytes); /* an all-zero row */
            m.data = data;
            int8_t *qa = calloc((size_t)rows, cols), *qb = calloc((size_t)rows, cols);
            float sa[37], sb[37];
            int32_t ra[37], rb[37];
            kernels_scalar.dense_rows_to_q8(&m, 0, rows, qa, sa, ra);
            memset(sb, 0, sizeof sb);
            memset(rb, 0, sizeof rb);
            dense_rows_to_q8_avx2(&m, 3, rows, qb, sb, rb);
            dense_rows_to_q8_avx2(&m, 0, 3, qb, sb, rb);
            CHECK(memcmp(qa, qb, (size_t)rows * cols) == 0 && memcmp(sa, sb, sizeof sa) == 0 &&
                      memcmp(ra, rb, sizeof ra) == 0,
                  "dense_rows_to_q8 avx2 differs from scalar (%s, cols %d)",
                  ggml_type_name(types[ti]), cols);
            int bad = 0;
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++) {
                    float row[2560];
                    if (c == 0)
                        dense_row_to_f32(&m, r, row);
                    bad += fabsf(qa[(size_t)r * cols + c] * sa[r] - row[c]) > sa[r] * 0.5001f;
                }
            CHECK(bad == 0, "q8 rows reproduce their source within half a step (%d off)", bad);
            free(data), free(qa), free(qb);
        }
}

int main(void)
{
    struct cpu_features f;
    cpu_features_detect(&f);
    check_attention("scalar", kernels_scalar.attn_head_f32, kernels_scalar.attn_head_f16);
    if (f.avx2 && f.fma && f.f16c) {
        check_attention("avx2", kernels_scalar.attn_head_f32, attn_head_f16_avx2);
        check_q8_rows();
    } else {
        printf("no AVX2/FMA/F16C on this CPU: avx2 kernels not run\n");
    }
    if (f.avx512f && f.avx512bw && f.avx512vl)
        check_attention("avx512", attn_head_f32_avx512, attn_head_f16_avx512);
    else
        printf("no AVX-512 on this CPU: avx512 kernels not run\n");
    return check_done("test_attention");
}
