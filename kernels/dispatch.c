/* Picks the kernel set once at start-up: the best the CPU supports, or the one named by
 * BITNET_KERNEL. Entries a set leaves NULL come from the set below it. */
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels_x86.h"

struct kernel_ops kops = {0};


enum level { LEVEL_SCALAR, LEVEL_AVX2, LEVEL_AVX512, LEVEL_AMX, LEVEL_COUNT };
static const char *const level_names[LEVEL_COUNT] = {"scalar", "avx2", "avx512", "amx"};

static void overlay(struct kernel_ops *ops, const struct kernel_ops *set)
{
    if (!set)
        return;
    ops->name = set->name;
    if (set->i2s_dot_rows) ops->i2s_dot_rows = set->i2s_dot_rows;
    if (set->i2s_dot_rows_multi) ops->i2s_dot_rows_multi = set->i2s_dot_rows_multi;
    if (set->q8_dot_rows_multi) ops->q8_dot_rows_multi = set->q8_dot_rows_multi;
    if (set->tq_dot_rows) ops->tq_dot_rows = set->tq_dot_rows;
    if (set->dense_dot_rows) ops->dense_dot_rows = set->dense_dot_rows;
    if (set->dense_dot_rows_multi) ops->dense_dot_rows_multi = set->dense_dot_rows_multi;
    if (set->q8_dot_rows) ops->q8_dot_rows = set->q8_dot_rows;
    if (set->i2s_gemm) ops->i2s_gemm = set->i2s_gemm;
    if (set->attn_f32) ops->attn_f32 = set->attn_f32;
    if (set->attn_f16) ops->attn_f16 = set->attn_f16;
    if (set->attn_q8) ops->attn_q8 = set->attn_q8;
    if (set->dense_rows_to_q8) ops->dense_rows_to_q8 = set->dense_rows_to_q8;
}

void i2s_dot_rows_each(const struct ternary_matrix *w, const int8_t *xq, size_t ldx, int n_x,
                       int r0, int r1, int32_t *out, size_t ldo)
{
    for (int t = 0; t < n_x; t++)
        kops.i2s_dot_rows(w, xq + (size_t)t * ldx, r0, r1, out + (size_t)t * ldo);
}

void dense_dot_rows_each(const struct dense_matrix *m, const float *xs, size_t ldx, int n_x,
                         int r0, int r1, float *out, size_t ldo)
{
    for (int t = 0; t < n_x; t++)
        kops.dense_dot_rows(m, xs + (size_t)t * ldx, r0, r1, out + (size_t)t * ldo);
}

void q8_dot_rows_each(const struct q8_matrix *m, const int8_t *xq, size_t ldx, int n_x, int r0,
                      int r1, int32_t *out, size_t ldo)
{
    for (int t = 0; t < n_x; t++)
        kops.q8_dot_rows(m, xq + (size_t)t * ldx, r0, r1, out + (size_t)t * ldo);
}

static bool level_available(enum level l, const struct cpu_features *f)
{
    switch (l) {
    case LEVEL_SCALAR:
        return true;
    case LEVEL_AVX2:
        return f->avx2 && f->fma && f->f16c;
    case LEVEL_AVX512:
        return level_available(LEVEL_AVX2, f) && f->avx512f && f->avx512bw &&
               f->avx512vl && f->avx512vnni;
    case LEVEL_AMX:
        return level_available(LEVEL_AVX512, f) && f->amx_tile && f->amx_int8 &&
               amx_request();
    default:
        return false;
    }
}

/* Measured with `bench_kernels walk` (whole token, the walks alternated round by round):
 * Sapphire Rapids read I2_S fastest with 8 runs, each row prefetching the next in its
 * run; on Zen 5 (AMD EPYC, family 26) 8 runs took 12-15% longer a token than 4, at 1
 * thread and at 2, and the prefetches made a token ~10% slower at 1 thread. */
static int row_streams_for(const struct cpu_features *f)
{
    return f->amd ? 4 : 8;
}

static bool row_prefetch_for(const struct cpu_features *f)
{
    return !f->amd;
}

static void build(struct kernel_ops *ops, enum level l, const struct cpu_features *f)
{
    *ops = kernels_scalar;
    ops->row_streams = row_streams_for(f);
    ops->row_prefetch = row_prefetch_for(f);
    ops->i2s_dot_rows_multi = i2s_dot_rows_each;
    ops->q8_dot_rows_multi = q8_dot_rows_each;
    ops->dense_dot_rows_multi = dense_dot_rows_each;
    if (l >= LEVEL_AVX2) {
        overlay(ops, &kernels_avx2);
        ops->attn_f32 = attn_f32_avx2;
        ops->attn_f16 = attn_f16_avx2;
        ops->attn_q8 = attn_q8_avx2;
        ops->i2s_gemm = f->avxvnni ? i2s_gemm_avxvnni : i2s_gemm_avx2;
        ops->dense_rows_to_q8 = dense_rows_to_q8_avx2;
        ops->dequant = dequant_avx2;
        ops->add_rows = add_rows_avx2;
        ops->relu2_mul = relu2_mul_avx2;
        ops->rmsnorm = rmsnorm_avx2;
        ops->quantize_act = quantize_act_avx2;
    }
    if (l >= LEVEL_AVX512) {
        overlay(ops, &kernels_avx512);
        ops->attn_f32 = attn_f32_avx512;
        ops->attn_f16 = attn_f16_avx512;
        ops->attn_q8 = attn_q8_avx512;
        ops->i2s_gemm = i2s_gemm_avx512;
        ops->dequant = dequant_avx512;
        ops->add_rows = add_rows_avx512;
        ops->relu2_mul = relu2_mul_avx512;
        ops->rmsnorm = rmsnorm_avx512;
        ops->quantize_act = quantize_act_avx512;
    }
    if (l >= LEVEL_AMX) {
        ops->i2s_gemm = i2s_gemm_amx;
        ops->name = level_names[LEVEL_AMX];
    }
}

int kernels_init(void)
{
    struct cpu_features f;
    cpu_features_detect(&f);
    const char *want = getenv("BITNET_KERNEL");
    if (want && *want && strcmp(want, "auto") != 0) {
        for (int l = 0; l < LEVEL_COUNT; l++) {
            if (strcmp(want, level_names[l]) != 0)
                continue;
            if (!level_available((enum level)l, &f))
                break;
            build(&kops, (enum level)l, &f);
            return 0;
        }
        build(&kops, LEVEL_SCALAR, &f);
        fprintf(stderr, "BITNET_KERNEL=%s: not available on this CPU or build (available: %s)\n",
                want, kernels_supported());
        return -1;
    }
    enum level best = LEVEL_SCALAR;
    for (int l = LEVEL_COUNT - 1; l > 0; l--)
        if (level_available((enum level)l, &f)) {
            best = (enum level)l;
            break;
        }
    build(&kops, best, &f);
    return 0;
}

const char *kernels_supported(void)
{
    static char list[64];
    struct cpu_features f;
    cpu_features_detect(&f);
    list[0] = 0;
    for (int l = 0; l < LEVEL_COUNT; l++)
        if (level_available((enum level)l, &f))
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", l ? " " : "",
                     level_names[l]);
    return list;
}
