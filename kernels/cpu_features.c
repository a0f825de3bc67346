#include "kernels/cpu_features.h"

#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

void cpu_features_detect(struct cpu_features *f)
{
    memset(f, 0, sizeof *f);
    unsigned a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d))
        f->amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163; /* "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    bool osxsave = c & (1u << 27);
    bool fma = c & (1u << 12), f16c = c & (1u << 29), avx = c & (1u << 28);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    /* the OS must save the registers: YMM state for AVX, opmask+ZMM for AVX-512 */
    bool os_avx = (xcr0 & 0x6) == 0x6;
    bool os_avx512 = (xcr0 & 0xe6) == 0xe6;
    bool os_amx = (xcr0 & 0x60000) == 0x60000;
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        f->avx2 = os_avx && avx && (b & (1u << 5));
        f->fma = os_avx && fma;
        f->f16c = os_avx && f16c;
        f->avx512f = os_avx512 && (b & (1u << 16));
        f->avx512bw = os_avx512 && (b & (1u << 30));
        f->avx512vl = os_avx512 && (b & (1u << 31));
        f->avx512vnni = os_avx512 && (c & (1u << 11));
        f->amx_tile = os_amx && (d & (1u << 24));
        f->amx_int8 = os_amx && (d & (1u << 25));
        __cpuid_count(7, 1, a, b, c, d);
        f->avxvnni = os_avx && (a & (1u << 4));
        f->avx512_bf16 = os_avx512 && (a & (1u << 5));
    }
    unsigned ext = __get_cpuid_max(0x80000000, NULL);
    if (ext >= 0x80000004) {
        unsigned *w = (unsigned *)f->brand;
        for (unsigned i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &w[4 * i], &w[4 * i + 1], &w[4 * i + 2], &w[4 * i + 3]);
        f->brand[48] = 0;
        /* brand strings are padded with leading spaces on some CPUs */
        char *s = f->brand;
        while (*s == ' ')
            s++;
        memmove(f->brand, s, strlen(s) + 1);
    }
}

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

bool amx_request(void)
{
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

#else

void cpu_features_detect(struct cpu_features *f)
{
    memset(f, 0, sizeof *f);
}

bool amx_request(void)
{
    return false;
}

#endif
