/* Attention and int8-row-conversion kernels against their scalar twins, bit for bit; the
 * scalar attention against float64, and its exp against libm; the int8 KV cache's
 * rounding, and its attention against float64 on the data before quantization. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/attn_exp.h"
#include "kernels/attn_q8.h"
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

typedef void (*attn_fn)(const struct attn_group *);

/* Softmax attention of g heads in float64 over keys k[p][d] and values v[p][d] by
 * position (no tiles). */
static void attn_f64_plain(const double *q, const double *k, const double *v, int g, int d,
                           int n, double scale, double *out)
{
    double *w = malloc(sizeof(double) * n);
    for (int h = 0; h < g; h++) {
        double max = -INFINITY, sum = 0.0;
        for (int p = 0; p < n; p++) {
            double dot = 0.0;
            for (int i = 0; i < d; i++)
                dot += q[h * d + i] * k[(size_t)p * d + i];
            w[p] = dot * scale;
            max = fmax(max, w[p]);
        }
        for (int p = 0; p < n; p++)
            sum += (w[p] = exp(w[p] - max));
        for (int i = 0; i < d; i++) {
            double o = 0.0;
            for (int p = 0; p < n; p++)
                o += w[p] / sum * v[(size_t)p * d + i];
            out[h * d + i] = o;
        }
    }
    free(w);
}

/* The contract of kernels.h in float64 (no int8 anywhere in attention), to show the
 * scalar twin computes what it claims: float data with keys in tiles, laid out by
 * kernels.h's formula rather than by any kernel's code. */
static void attn_f64(const float *q, const float *k, const float *v, int g, int d, int n,
                     float scale, double *out)
{
    double *q64 = malloc(sizeof(double) * g * d), *k64 = malloc(sizeof(double) * n * d);
    double *v64 = malloc(sizeof(double) * n * d);
    for (int i = 0; i < g * d; i++)
        q64[i] = q[i];
    for (int p = 0; p < n; p++)
        for (int i = 0; i < d; i++) {
            k64[(size_t)p * d + i] =
                k[(size_t)(p / ATTN_TILE) * d * ATTN_TILE + (size_t)i * ATTN_TILE + p % ATTN_TILE];
            v64[(size_t)p * d + i] = v[(size_t)p * d + i];
        }
    attn_f64_plain(q64, k64, v64, g, d, n, scale, out);
    free(q64), free(k64), free(v64);
}

/* The largest relative error of a kernel's max and sum (ms, [g][2]) against float64:
 * max = the largest score, sum = the sum of e^(s - max); keys laid out as in tiles. */
static double max_sum_error(const float *q, const float *k, int g, int d, int n, float scale,
                            const float *ms)
{
    double worst = 0.0, s[n];
    for (int h = 0; h < g; h++) {
        double max = -INFINITY, sum = 0.0;
        for (int p = 0; p < n; p++) {
            s[p] = 0.0;
            for (int i = 0; i < d; i++)
                s[p] += (double)q[h * d + i] *
                        k[(size_t)(p / ATTN_TILE) * d * ATTN_TILE + (size_t)i * ATTN_TILE + p % ATTN_TILE];
            s[p] *= scale;
            max = fmax(max, s[p]);
        }
        for (int p = 0; p < n; p++)
            sum += exp(s[p] - max);
        worst = fmax(worst, fabs(ms[2 * h] - max) / fmax(1.0, fabs(max)));
        worst = fmax(worst, fabs(ms[2 * h + 1] - sum) / sum);
    }
    return worst;
}

/* Every kernel against the scalar twin, bit for bit, with keys past n (the rest of the
 * last tile) set to NaN: a kernel that let them into the softmax would show it. */
static void check_attention(const char *name, attn_fn f32, attn_fn f16)
{
    static const int dims[] = {32, 64, 100, 128};
    static const int lens[] = {1, 7, 16, 17, 300};
    static const int groups[] = {1, 3, 4, 9};
    static const float spreads[] = {1.0f, 8.0f, 40.0f}; /* 40: nearly one-hot softmax */
    int bad = 0, runs = 0;
    double worst64 = 0.0, worst_ms = 0.0;
    for (size_t di = 0; di < 4; di++)
        for (size_t li = 0; li < 5; li++)
            for (size_t gi = 0; gi < 4; gi++)
                for (size_t si = 0; si < 3; si++) {
                    int d = dims[di], n = lens[li], g = groups[gi], np = attn_tiles_len(n);
                    size_t kn = (size_t)np * d;
                    float *q = malloc(sizeof(float) * g * d), *k = malloc(sizeof(float) * kn);
                    float *v = malloc(sizeof(float) * kn);
                    uint16_t *kh = malloc(2 * kn), *vh = malloc(2 * kn);
                    float *scr = malloc(sizeof(float) * g * np);
                    float *ref = malloc(sizeof(float) * g * d), *got = malloc(sizeof(float) * (g * d + 1));
                    double *exact = malloc(sizeof(double) * g * d);
                    for (int i = 0; i < g * d; i++)
                        q[i] = frand(-1, 1) * spreads[si];
                    for (size_t i = 0; i < kn; i++) {
                        int pos = (int)(i / ATTN_TILE / d) * ATTN_TILE + (int)(i % ATTN_TILE);
                        k[i] = pos < n ? frand(-1, 1) : NAN, v[i] = frand(-2, 2);
                        kh[i] = f32_to_f16(k[i]), vh[i] = f32_to_f16(v[i]);
                    }
                    float scale = 1.0f / sqrtf((float)d);
                    for (int kind = 0; kind < 2; kind++) {
                        float ms_ref[2 * 9], ms_got[2 * 9];
                        struct attn_group a = {.q = q, .k = kind ? (const void *)kh : k,
                                               .v = kind ? (const void *)vh : v, .g = g, .d = d,
                                               .n = n, .scale = scale, .scratch = scr};
                        a.out = ref, a.max_sum = ms_ref;
                        (kind ? kernels_scalar.attn_f16 : kernels_scalar.attn_f32)(&a);
                        got[g * d] = 12345.0f; /* guard: nothing past the heads is written */
                        a.out = got, a.max_sum = ms_got;
                        (kind ? f16 : f32)(&a);
                        runs++;
                        if ((memcmp(got, ref, sizeof(float) * g * d) != 0 ||
                             memcmp(ms_got, ms_ref, sizeof(float) * 2 * g) != 0) && bad++ < 5)
                            CHECK(0, "%s %s d=%d n=%d g=%d spread=%g: output or max and sum not "
                                  "bit-identical to scalar", name, kind ? "f16" : "f32", d, n, g,
                                  spreads[si]);
                        CHECK(got[g * d] == 12345.0f, "%s wrote past the heads", name);
                        if (kind == 0 && f32 == kernels_scalar.attn_f32) {
                            attn_f64(q, k, v, g, d, n, scale, exact);
                            for (int i = 0; i < g * d; i++)
                                worst64 = fmax(worst64, fabs(ref[i] - exact[i]));
                            worst_ms = fmax(worst_ms, max_sum_error(q, k, g, d, n, scale, ms_ref));
                        }
                    }
                    free(q), free(k), free(v), free(kh), free(vh), free(scr), free(ref), free(got);
                    free(exact);
                }
    CHECK(bad == 0, "%s attention: %d of %d runs differ from the scalar twin", name, bad, runs);
    if (f32 == kernels_scalar.attn_f32) {
        CHECK(worst64 < 2e-5, "scalar attention vs float64: max |diff| %.3g", worst64);
        CHECK(worst_ms < 1e-5, "scalar attention's max and sum vs float64: relative %.3g",
              worst_ms);
        printf("scalar attention vs float64: max |diff| %.2e; max and sum within %.2e\n",
               worst64, worst_ms);
    }
    printf("%s attention: %d runs, %d not bit-identical to scalar\n", name, runs, bad);
}

/* The int8 rounding of kernels.h: half a step at most, the largest element exactly 127,
 * ties to even, a zero vector to scale 0. */
static void check_q8_quantize(void)
{
    int bad = 0, total = 0;
    for (int trial = 0; trial < 2000; trial++) {
        int d = 4 * (1 + trial % 40);
        float x[160], spread = trial % 3 == 0 ? 1e-3f : trial % 3 == 1 ? 1.0f : 300.0f;
        int8_t q[160];
        for (int i = 0; i < d; i++)
            x[i] = frand(-1, 1) * spread;
        float s = attn_q8_quantize(x, d, q);
        int at_max = 0;
        for (int i = 0; i < d; i++, total++) {
            bad += !(fabsf(q[i] * s - x[i]) <= s * 0.5001f) || q[i] < -127;
            at_max += q[i] == 127 || q[i] == -127;
        }
        bad += at_max == 0;
    }
    CHECK(bad == 0, "q8 quantize: %d of %d elements beyond half a step (or no element at +-127)",
          bad, total);
    /* absmax 127 makes the multiplier exactly 1: the halves show the rounding */
    const float ties[8] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, -126.5f, 3.49f};
    const int8_t want[8] = {127, 0, 2, 2, 0, -2, -126, 3};
    int8_t q[8];
    float s = attn_q8_quantize(ties, 8, q);
    CHECK(s == 1.0f && memcmp(q, want, 8) == 0, "q8 quantize: ties not rounded half to even "
          "(scale %g, q %d %d %d %d %d %d %d %d)", s, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]);
    float zero[8] = {0};
    memset(q, 5, sizeof q);
    s = attn_q8_quantize(zero, 8, q);
    CHECK(s == 0.0f && memcmp(q, (int8_t[8]){0}, 8) == 0, "q8 quantize of zeros: scale %g", s);
    printf("q8 quantize: %d elements within half a step, ties to even\n", total);
}


/* One run of an int8 kernel against the scalar twin: true if they differ (outputs or
 * quantized queries). Key tiles are laid out here from the formula of kernels.h, not
 * from attn_q8_key_at, so a layout both sides got wrong would still show against
 * float64. Keys past n hold random bytes and their scales NaN; a zero key and value
 * (position 3) and a zero query head (head 2) take the scale-0 path. With worst_dq and
 * worst_raw, the scalar result's largest distance from float64 attention on the
 * dequantized data and on the data before quantization goes into them. */
static bool q8_case(const char *name, void (*fn)(const struct attn_group_q8 *), int d, int n,
                    int g, float spread, double *worst_dq, double *worst_raw)
{
    int np = attn_tiles_len(n);
    size_t kn = (size_t)np * d;
    float *q = malloc(sizeof(float) * g * d), *x = malloc(sizeof(float) * d);
    int8_t *k = malloc(kn), *v = malloc(kn), *row = malloc(d);
    float *ks = malloc(sizeof(float) * np), *vs = malloc(sizeof(float) * n);
    int8_t *q8a = malloc((size_t)g * d), *q8b = malloc((size_t)g * d);
    float *scr = malloc(sizeof(float) * g * np);
    float *ref = malloc(sizeof(float) * g * d), *got = malloc(sizeof(float) * (g * d + 1));
    double *raw_q = malloc(sizeof(double) * g * d), *dq_q = malloc(sizeof(double) * g * d);
    double *raw_k = malloc(sizeof(double) * n * d), *dq_k = malloc(sizeof(double) * n * d);
    double *raw_v = malloc(sizeof(double) * n * d), *dq_v = malloc(sizeof(double) * n * d);
    double *exact = malloc(sizeof(double) * g * d);
    for (int i = 0; i < g * d; i++)
        q[i] = g > 2 && i / d == 2 ? 0.0f : frand(-1, 1) * spread;
    for (size_t i = 0; i < kn; i++) {
        k[i] = (int8_t)(frand(0, 256) - 128);
        v[i] = (int8_t)(frand(0, 256) - 128); /* the half of an odd last pair stays so */
    }
    for (int p = 0; p < np; p++)
        ks[p] = NAN;
    for (int p = 0; p < n; p++) {
        for (int w = 0; w < 2; w++) {
            for (int i = 0; i < d; i++) {
                x[i] = p == 3 ? 0.0f : w ? frand(-2, 2) : frand(-1, 1);
                (w ? raw_v : raw_k)[(size_t)p * d + i] = x[i];
            }
            float s = attn_q8_quantize(x, d, row);
            for (int i = 0; i < d; i++) {
                (w ? dq_v : dq_k)[(size_t)p * d + i] = (double)row[i] * s;
                if (w)
                    v[(size_t)(p / 2) * 2 * d + (size_t)i * 2 + p % 2] = row[i];
                else
                    k[(size_t)(p / ATTN_TILE) * d * ATTN_TILE + (size_t)(i / 4) * 4 * ATTN_TILE +
                      (size_t)(p % ATTN_TILE) * 4 + i % 4] = row[i];
            }
            (w ? vs : ks)[p] = s;
        }
    }
    float scale = 1.0f / sqrtf((float)d);
    float ms_ref[2 * 9], ms_got[2 * 9];
    struct attn_group_q8 a = {.q = q, .k = k, .v = v, .k_scale = ks, .v_scale = vs,
                              .g = g, .d = d, .n = n, .scale = scale, .scratch = scr};
    a.out = ref, a.q8 = q8a, a.max_sum = ms_ref;
    kernels_scalar.attn_q8(&a);
    got[g * d] = 12345.0f;
    a.out = got, a.q8 = q8b, a.max_sum = ms_got;
    fn(&a);
    bool differs = memcmp(got, ref, sizeof(float) * g * d) != 0 ||
                   memcmp(q8a, q8b, (size_t)g * d) != 0 ||
                   memcmp(ms_got, ms_ref, sizeof(float) * 2 * g) != 0;
    /* the sum counts e^0 = 1 for the maximum and nothing above 1 per position */
    for (int h = 0; h < g; h++)
        CHECK(ms_ref[2 * h + 1] >= 1.0f && ms_ref[2 * h + 1] <= (float)n,
              "%s q8 sum %g of head %d outside [1, n = %d]", name, ms_ref[2 * h + 1], h, n);
    CHECK(got[g * d] == 12345.0f, "%s q8 wrote past the heads", name);
    if (worst_dq) {
        for (int h = 0; h < g; h++) {
            float qs = attn_q8_quantize(q + h * d, d, row);
            for (int i = 0; i < d; i++) {
                raw_q[h * d + i] = q[h * d + i];
                dq_q[h * d + i] = (double)row[i] * qs;
            }
        }
        attn_f64_plain(dq_q, dq_k, dq_v, g, d, n, scale, exact);
        for (int i = 0; i < g * d; i++)
            *worst_dq = fmax(*worst_dq, fabs(ref[i] - exact[i]));
        attn_f64_plain(raw_q, raw_k, raw_v, g, d, n, scale, exact);
        for (int i = 0; i < g * d; i++)
            *worst_raw = fmax(*worst_raw, fabs(ref[i] - exact[i]));
    }
    free(q), free(x), free(k), free(v), free(row), free(ks), free(vs), free(q8a);
    free(q8b), free(scr), free(ref), free(got), free(raw_q), free(dq_q), free(raw_k);
    free(dq_k), free(raw_v), free(dq_v), free(exact);
    return differs;
}

/* The int8 kernels against the scalar twin, bit for bit, over head sizes with and
 * without a partial SIMD chunk, lengths around a tile, GQA groups around the kernels'
 * head blocks, and score spreads up to a nearly one-hot softmax; then the 2B-4T head
 * (d = 128, 4 heads, or 2 when threads split a group) at long context, where the
 * kernels' prefetching and blocking run for thousands of positions. */
#define Q8_DQ_BOUND 5e-4

/* The SIMD kernels quantize their queries themselves: the bytes must be attn_q8_quantize's
 * for queries holding NaN, infinities, values that round to the clamp, and a length with
 * a partial vector (d = 36, 100). The outputs are not compared: they are NaN. */
static void check_q8_query_specials(const char *name, void (*fn)(const struct attn_group_q8 *))
{
    static const int dims[] = {36, 100, 128};
    int bad = 0;
    for (int di = 0; di < 3; di++)
        for (int kind = 0; kind < 3; kind++) {
            int d = dims[di], g = 2, n = 5, np = attn_tiles_len(n);
            float q[2 * 128], ks[16], vs[16], scr[2 * 16], out[2 * 128];
            int8_t k[16 * 128], v[16 * 128], got[2 * 128], want[2 * 128];
            for (int i = 0; i < g * d; i++)
                q[i] = frand(-1, 1);
            if (kind == 0)
                q[3] = NAN, q[d + d - 1] = NAN;
            else if (kind == 1)
                q[5] = INFINITY, q[d + 2] = -INFINITY;
            else
                q[7] = 1e30f, q[d + 1] = -FLT_MIN;
            memset(k, 1, sizeof k), memset(v, 1, sizeof v);
            for (int p = 0; p < np; p++)
                ks[p] = vs[p] = 0.01f;
            struct attn_group_q8 a = {.q = q, .k = k, .v = v, .k_scale = ks, .v_scale = vs,
                                      .g = g, .d = d, .n = n, .scale = 0.1f, .scratch = scr,
                                      .out = out, .q8 = got};
            fn(&a);
            for (int h = 0; h < g; h++)
                attn_q8_quantize(q + h * d, d, want + h * d);
            bad += memcmp(got, want, (size_t)g * d) != 0;
        }
    CHECK(bad == 0, "%s q8: %d of 9 queries with NaN/inf/huge values quantized unlike "
          "attn_q8_quantize", name, bad);
}

static void check_attention_q8(const char *name, void (*fn)(const struct attn_group_q8 *))
{
    static const int dims[] = {32, 64, 100, 128};
    static const int lens[] = {1, 7, 16, 17, 300};
    static const int groups[] = {1, 3, 4, 9};
    static const float spreads[] = {1.0f, 8.0f, 40.0f};
    bool scalar = fn == kernels_scalar.attn_q8;
    int bad = 0, runs = 0;
    double worst_dq[3] = {0}, worst_raw[3] = {0};
    for (size_t di = 0; di < 4; di++)
        for (size_t li = 0; li < 5; li++)
            for (size_t gi = 0; gi < 4; gi++)
                for (size_t si = 0; si < 3; si++) {
                    int d = dims[di], n = lens[li], g = groups[gi];
                    runs++;
                    if (q8_case(name, fn, d, n, g, spreads[si], scalar ? &worst_dq[si] : NULL,
                                scalar ? &worst_raw[si] : NULL) && bad++ < 5)
                        CHECK(0, "%s q8 d=%d n=%d g=%d spread=%g: not bit-identical to scalar",
                              name, d, n, g, spreads[si]);
                }
    static const int long_lens[] = {1000, 4097};
    double long_dq = 0.0, long_raw = 0.0;
    for (int li = 0; li < 2; li++)
        for (int g = 2; g <= 4; g += 2) {
            runs++;
            if (q8_case(name, fn, 128, long_lens[li], g, 8.0f, scalar ? &long_dq : NULL,
                        scalar ? &long_raw : NULL) && bad++ < 5)
                CHECK(0, "%s q8 d=128 n=%d g=%d: not bit-identical to scalar", name,
                      long_lens[li], g);
        }
    CHECK(bad == 0, "%s q8 attention: %d of %d runs differ from the scalar twin", name, bad, runs);
    if (scalar) {
        /* Against float64 on the dequantized data the errors are float rounding (the
         * integer dots are exact) and the weights' rounding to 15 bits of their block's
         * largest: 1.7e-4 at most measured (float rounding alone stayed under 2e-5), and
         * the bound is 3x that. Against the data before quantization, the int8 rounding itself:
         * values (within +-2) move by up to half a step (2/254) and every weight by what
         * about 0.6% rms noise on q and k does to its score (a score's spread grows with
         * the queries': 1, 8, 40). The bounds are those measured (printed) with about
         * 2x margin; a wrong scale or layout gives errors of order 1. */
        static const double raw_bound[3] = {0.016, 0.07, 0.35};
        for (int si = 0; si < 3; si++) {
            CHECK(worst_dq[si] < Q8_DQ_BOUND, "scalar q8 attention vs float64 (dequantized, spread %g): "
                  "max |diff| %.3g", spreads[si], worst_dq[si]);
            CHECK(worst_raw[si] < raw_bound[si], "scalar q8 attention vs float64 (unquantized, "
                  "spread %g): max |diff| %.3g, bound %g", spreads[si], worst_raw[si],
                  raw_bound[si]);
            printf("scalar q8 attention vs float64, spread %g: dequantized data %.2e, "
                   "unquantized data %.2e (values in +-2)\n", spreads[si], worst_dq[si],
                   worst_raw[si]);
        }
        /* thousands of positions add up more roundings: the same bounds hold */
        CHECK(long_dq < Q8_DQ_BOUND && long_raw < raw_bound[1], "scalar q8 attention vs float64 at "
              "long context: dequantized %.3g, unquantized %.3g", long_dq, long_raw);
        printf("scalar q8 attention vs float64, n = 1000 and 4097, spread 8: dequantized data "
               "%.2e, unquantized data %.2e\n", long_dq, long_raw);
    }
    printf("%s q8 attention: %d runs, %d not bit-identical to scalar\n", name, runs, bad);
    check_q8_query_specials(name, fn);
}


/* attn_exp is libm's expf in practice: never more than one ulp away, and equal almost
 * always (it is evaluated in double and rounded once). */
static void check_attn_exp(void)
{
    int equal = 0, total = 0, far = 0;
    for (float x = -110.0f; x <= 0.0f; x += 0.000731f, total++) {
        float a = attn_exp(x), b = expf(x);
        equal += a == b;
        far += fabsf(a - b) > fabsf(nextafterf(b, INFINITY) - b);
    }
    CHECK(far == 0, "attn_exp: %d of %d values more than one ulp from expf", far, total);
    CHECK(equal >= total - total / 1000, "attn_exp: only %d of %d equal to expf", equal, total);
    CHECK(attn_exp(0.0f) == 1.0f && attn_exp(-200.0f) == 0.0f && attn_exp(-1.0f) == expf(-1.0f),
          "attn_exp at 0, -200, -1");
    printf("attn_exp: %d of %d equal to expf, none further than one ulp\n", equal, total);
}

/* attn_q8_exp: within one ulp of expf and 1e-7 of e^x over the range it serves, exact
 * at 0, and 0 below its cut and for NaN. */
static void check_attn_q8_exp(void)
{
    int total = 0, far = 0, equal = 0;
    double worst = 0.0;
    for (float x = ATTN_Q8_EXP_MIN; x <= 0.0f; x += 0.000731f, total++) {
        float a = attn_q8_exp(x), b = expf(x);
        equal += a == b;
        far += fabsf(a - b) > fabsf(nextafterf(b, INFINITY) - b);
        worst = fmax(worst, fabs(a - exp((double)x)) / exp((double)x));
    }
    CHECK(far == 0, "attn_q8_exp: %d of %d values more than one ulp from expf", far, total);
    CHECK(worst < 1e-7, "attn_q8_exp: relative error %.3g", worst);
    CHECK(attn_q8_exp(0.0f) == 1.0f && attn_q8_exp(-0.0f) == 1.0f &&
              attn_q8_exp(nextafterf(ATTN_Q8_EXP_MIN, -INFINITY)) == 0.0f &&
              attn_q8_exp(-INFINITY) == 0.0f && attn_q8_exp(NAN) == 0.0f &&
              attn_q8_exp(ATTN_Q8_EXP_MIN) > 0.0f,
          "attn_q8_exp at 0, -0, its cut, -inf, NaN");
    printf("attn_q8_exp: %d values, %d equal to expf, none further than one ulp, relative "
           "error %.2e\n", total, equal, worst);
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
    check_attn_exp();
    check_attn_q8_exp();
    check_q8_quantize();
    check_attention("scalar", kernels_scalar.attn_f32, kernels_scalar.attn_f16);
    check_attention_q8("scalar", kernels_scalar.attn_q8);
    if (f.avx2 && f.fma && f.f16c) {
        check_attention("avx2", attn_f32_avx2, attn_f16_avx2);
        check_attention_q8("avx2", attn_q8_avx2);
        check_q8_rows();
    } else {
        printf("no AVX2/FMA/F16C on this CPU: avx2 kernels not run\n");
    }
    if (f.avx512f && f.avx512bw && f.avx512vl) {
        check_attention("avx512", attn_f32_avx512, attn_f16_avx512);
        if (f.avx512vnni)
            check_attention_q8("avx512", attn_q8_avx512);
    } else
        printf("no AVX-512 on this CPU: avx512 kernels not run\n");
    return check_done("test_attention");
}
