/* Picks the kernel set once at start-up. Optimized sets register here as they are
 * written; a CPU without their features never calls them. */
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kernel_ops kops = {0};

int kernels_init(void)
{
    kops = kernels_scalar;
    const char *want = getenv("BITNET_KERNEL");
    if (want && *want && strcmp(want, "auto") != 0 && strcmp(want, kernels_scalar.name) != 0) {
        fprintf(stderr, "BITNET_KERNEL=%s: no such kernel on this build/CPU (have: scalar)\n", want);
        return -1;
    }
    return 0;
}

const char *kernels_supported(void)
{
    return "scalar";
}
