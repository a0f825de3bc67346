/* What the CPU and the OS together let this process use. */
#ifndef BITNET_CPU_FEATURES_H
#define BITNET_CPU_FEATURES_H

#include <stdbool.h>

struct cpu_features {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512vnni, avx512_bf16;
    bool avxvnni;
    bool amx_tile, amx_int8; /* as cpuid reports; using them also needs amx_request() */
    bool amd;                /* vendor AuthenticAMD: picks decode tuning, not kernels */
    char brand[64];
};

void cpu_features_detect(struct cpu_features *f);

/* Asks the kernel for permission to use AMX tile data (Linux arch_prctl); true when
 * granted. Idempotent. */
bool amx_request(void);

#endif
