/* The rate at which one core issues vpdpbusd when nothing else limits it: twelve
 * independent accumulators, no memory operands. The prefill GEMM (bench_gemm) is compared
 * against it, since a ternary GEMM on vpdpbusd can go no faster. Needs AVX-512 VNNI at
 * run time only; pin it with taskset to name the core.
 *
 * usage: bench_vnni [repeats]   (default 5; prints each and the median) */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/timing.h"
#include "kernels/cpu_features.h"
#include "model/clock.h"

#define STEPS 100000000L

/* G instructions per second over STEPS steps of 12. */
__attribute__((target("avx512f,avx512vnni"))) static double vnni_rate(void)
{
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
    __m512i a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
    __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(5);
    double t0 = clock_seconds();
    for (long k = 0; k < STEPS; k++) {
/* written out: the intrinsic's tied accumulator costs GCC 12 register copies */
#define DP(acc) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
        DP(a0) DP(a1) DP(a2) DP(a3) DP(a4) DP(a5) DP(a6) DP(a7) DP(a8) DP(a9) DP(a10) DP(a11)
#undef DP
    }
    double t = clock_seconds() - t0;
    __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                   _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
    sum = _mm512_add_epi32(sum, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
    volatile int keep = _mm512_reduce_add_epi32(sum); /* the loop's results are used */
    (void)keep;
    return (double)STEPS * 12 / t / 1e9;
}

int main(int argc, char **argv)
{
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1 || repeats > 100) {
        fprintf(stderr, "usage: bench_vnni [repeats 1..100]\n");
        return 2;
    }
    struct cpu_features f;
    cpu_features_detect(&f);
    if (!f.avx512f || !f.avx512vnni) {
        printf("%s: no AVX-512 VNNI, nothing to measure\n", f.brand);
        return 0;
    }
    double r[100];
    for (int i = 0; i < repeats; i++) {
        r[i] = vnni_rate();
        printf("run %d: %.2f G vpdpbusd/s\n", i + 1, r[i]);
    }
    double med = bench_middle(r, repeats);
    printf("%s, one core: median %.2f G vpdpbusd/s (%.0f GOPS of int8 multiply-adds, 2 per MAC)\n",
           f.brand, med, med * 128);
    return 0;
}
