/* The activation kernels (residual add, FFN gate, RMSNorm, int8 quantization, sums back to
 * float) of every set this CPU runs against their scalar twins, bit for bit, on lengths
 * that leave every kind of tail, on ties, zeros and NaN; and the scalar twins against the
 * spec's formulas. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/activation.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "tests/check.h"

typedef void (*rmsnorm_fn)(float *, const float *, const float *, int, float);
typedef float (*quantize_fn)(const float *, int, int8_t *);

#define MAX_N 7000
#define GUARD 8

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double uniform(void) /* in [0, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* Values spread over twelve binary orders of magnitude, either sign, so that sums of
 * squares round differently in different orders. */
static void fill(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = (float)((uniform() < 0.5 ? -1 : 1) * ldexp(1.0 + uniform(), (int)(uniform() * 12) - 6));
}

static const int lengths[] = {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 129, 2560, 2561, 6912};
#define N_LENGTHS (int)(sizeof lengths / sizeof *lengths)

static void check_rmsnorm(const char *set, rmsnorm_fn f)
{
    static float x[MAX_N], w[MAX_N], want[MAX_N + GUARD], got[MAX_N + GUARD];
    for (int k = 0; k < N_LENGTHS; k++) {
        int n = lengths[k];
        fill(x, n);
        fill(w, n);
        for (int i = 0; i < n + GUARD; i++)
            got[i] = want[i] = -7.0f;
        rmsnorm_scalar(want, x, w, n, 1e-5f);
        f(got, x, w, n, 1e-5f);
        CHECK(memcmp(want, got, sizeof(float) * (size_t)(n + GUARD)) == 0,
              "%s rmsnorm, n = %d: not bit-identical to scalar (or wrote past n)", set, n);
    }
}

static void check_quantize(const char *set, quantize_fn f)
{
    static float x[MAX_N];
    static int8_t want[MAX_N + GUARD], got[MAX_N + GUARD];
    for (int k = 0; k < N_LENGTHS; k++) {
        for (int variant = 0; variant < 4; variant++) {
            int n = lengths[k];
            fill(x, n);
            if (variant == 1) /* every product a tie or an integer: rounding decides */
                for (int i = 0; i < n; i++)
                    x[i] = (float)((int)(uniform() * 255) - 127) * 0.5f / 127.0f * 2.0f;
            if (variant == 2) /* all zero: the 1e-5 floor */
                memset(x, 0, sizeof(float) * (size_t)n);
            if (variant == 3) /* a NaN anywhere, the last element included */
                x[n - 1 - (int)(uniform() * n)] = NAN;
            memset(want, 0x5a, sizeof want);
            memset(got, 0x5a, sizeof got);
            float sw = quantize_act_i8(x, n, want), sg = f(x, n, got);
            CHECK(memcmp(&sw, &sg, sizeof sw) == 0, "%s quantize, n = %d, variant %d: scale %g, scalar %g",
                  set, n, variant, sg, sw);
            CHECK(memcmp(want, got, (size_t)(n + GUARD)) == 0,
                  "%s quantize, n = %d, variant %d: not bit-identical to scalar (or wrote past n)",
                  set, n, variant);
        }
    }
}

typedef void (*elementwise_fn)(float *, const float *, int);

/* x_i op= y_i for every length, with zeros of both signs and NaN among the inputs. */
static void check_elementwise(const char *set, const char *what, elementwise_fn scalar,
                              elementwise_fn f)
{
    static float x[MAX_N], y[MAX_N], want[MAX_N + GUARD], got[MAX_N + GUARD];
    for (int k = 0; k < N_LENGTHS; k++) {
        int n = lengths[k];
        fill(x, n);
        fill(y, n);
        x[0] = -0.0f;
        x[n / 2] = NAN;
        x[n - 1] = n > 2 ? 0.0f : x[n - 1];
        for (int i = 0; i < n + GUARD; i++)
            want[i] = got[i] = i < n ? x[i] : -7.0f;
        scalar(want, y, n);
        f(got, y, n);
        CHECK(memcmp(want, got, sizeof(float) * (size_t)(n + GUARD)) == 0,
              "%s %s, n = %d: not bit-identical to scalar (or wrote past n)", set, what, n);
    }
}

typedef void (*dequant_fn)(float *, const int32_t *, int, float);

/* Sums to floats, in place (as the forward pass does) and not, with sums large enough that
 * their conversion rounds (|v| > 2^24). */
static void check_dequant(const char *set, dequant_fn f)
{
    static int32_t in[MAX_N];
    static float want[MAX_N + GUARD], got[MAX_N + GUARD], inplace[MAX_N + GUARD];
    for (int k = 0; k < N_LENGTHS; k++) {
        int n = lengths[k];
        for (int i = 0; i < n; i++)
            in[i] = (int32_t)((uniform() - 0.5) * (i % 3 ? 2e3 : 4e9));
        float scale = (float)(uniform() * 1e-3 + 1e-6);
        for (int i = 0; i < n + GUARD; i++)
            want[i] = got[i] = -7.0f;
        dequant_scalar(want, in, n, scale);
        f(got, in, n, scale);
        memcpy(inplace, in, sizeof(int32_t) * (size_t)n);
        for (int i = n; i < n + GUARD; i++)
            inplace[i] = -7.0f;
        f(inplace, (const int32_t *)(const void *)inplace, n, scale);
        CHECK(memcmp(want, got, sizeof(float) * (size_t)(n + GUARD)) == 0 &&
                  memcmp(want, inplace, sizeof(float) * (size_t)(n + GUARD)) == 0,
              "%s dequant, n = %d: not bit-identical to scalar (or wrote past n)", set, n);
    }
}

/* The scalar twins say what the spec says. */
static void check_scalar_formulas(void)
{
    static float x[MAX_N], w[MAX_N], out[MAX_N];
    int n = 2560;
    fill(x, n);
    fill(w, n);
    rmsnorm_scalar(out, x, w, n, 1e-5f);
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / n + 1e-5), worst = 0;
    for (int i = 0; i < n; i++) {
        double want = x[i] * scale * w[i], err = fabs(out[i] - want) / fabs(want);
        worst = err > worst ? err : worst;
    }
    CHECK(worst < 2.5e-7, "rmsnorm: relative error %g against the formula", worst);

    float g[4] = {-2.0f, 0.0f, 3.0f, NAN}, u[4] = {5.0f, 5.0f, 0.5f, 1.0f};
    relu2_mul_scalar(g, u, 4);
    CHECK(g[0] == 0.0f && g[1] == 0.0f && g[2] == 4.5f && g[3] == 0.0f,
          "relu(x)^2 * y: %g %g %g %g", g[0], g[1], g[2], g[3]);

    int32_t big[3] = {16777217, -3, 0};
    float f3[3];
    dequant_scalar(f3, big, 3, 0.5f);
    CHECK(f3[0] == 8388608.0f && f3[1] == -1.5f && f3[2] == 0.0f,
          "(float)v * k: %g %g %g", f3[0], f3[1], f3[2]);

    float q[6] = {0.5f, -0.25f, 1.5f / 127.0f, 2.5f / 127.0f, -3.5f / 127.0f, NAN};
    int8_t xq[6];
    float s = quantize_act_i8(q, 6, xq);
    CHECK(s == 254.0f, "scale 127 / max|x|, NaN ignored (got %g)", s);
    CHECK(xq[0] == 127 && xq[1] == -64, "extremes and -63.5 (got %d %d)", xq[0], xq[1]);
    CHECK(xq[2] == 3 && xq[3] == 5 && xq[4] == -7 && xq[5] == 0,
          "x * s = 3, 5, -7 and NaN -> 0 (got %d %d %d %d)", xq[2], xq[3], xq[4], xq[5]);
}

int main(void)
{
    kernels_init();
    check_scalar_formulas();
    struct cpu_features f;
    cpu_features_detect(&f);
    const struct {
        const char *name;
        bool runs;
        elementwise_fn add_rows, relu2_mul;
        dequant_fn dequant;
        rmsnorm_fn rmsnorm;
        quantize_fn quantize;
    } sets[] = {
        {"avx2", f.avx2 && f.fma && f.f16c, add_rows_avx2, relu2_mul_avx2, dequant_avx2,
         rmsnorm_avx2, quantize_act_avx2},
        {"avx512", f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni, add_rows_avx512,
         relu2_mul_avx512, dequant_avx512, rmsnorm_avx512, quantize_act_avx512},
    };
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++) {
        if (!sets[i].runs) {
            printf("this CPU cannot run the %s set: not checked\n", sets[i].name);
            continue;
        }
        check_elementwise(sets[i].name, "add_rows", add_rows_scalar, sets[i].add_rows);
        check_elementwise(sets[i].name, "relu2_mul", relu2_mul_scalar, sets[i].relu2_mul);
        check_dequant(sets[i].name, sets[i].dequant);
        check_rmsnorm(sets[i].name, sets[i].rmsnorm);
        check_quantize(sets[i].name, sets[i].quantize);
    }
    CHECK(kops.dequant && kops.add_rows && kops.relu2_mul && kops.rmsnorm && kops.quantize_act,
          "dispatch fills every activation entry");
    return check_done("test_activation");
}
