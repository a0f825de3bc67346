/* The engine (`bitnetctl eval`) against the independent float64 pass of
 * ref_forward64.c on synthesized models that vary what xval holds fixed: GQA ratios
 * 3:1, 1:1 and 8:1, head sizes, every ternary packing, every embedding type, and a
 * separate output.weight. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tests/ref_forward64.h"
#include "tests/util.h"

static const int32_t ids[] = {128000, 791, 6864, 315, 9822, 374, 12366, 13, 578};
#define N_IDS ((int)(sizeof ids / sizeof ids[0]))

struct shape {
    const char *name;
    const char *synth_args;
};

static void check_shape(const struct shape *s, const char *kernel)
{
    char model[256], out[256], idlist[256] = "";
    snprintf(model, sizeof model, "build/test-tmp/ref-%s.gguf", s->name);
    snprintf(out, sizeof out, "build/test-tmp/ref-%s-%s.f32", s->name, kernel);
    for (int i = 0; i < N_IDS; i++)
        snprintf(idlist + strlen(idlist), sizeof idlist - strlen(idlist), "%s%d", i ? "," : "",
                 ids[i]);
    CHECK(run_cmd("build/bitnetctl model synth --out %s %s >/dev/null 2>&1", model,
                      s->synth_args) == 0,
              "synth %s", s->name);
    CHECK(run_cmd("BITNET_KERNEL=%s build/bitnetctl eval --model %s --ids %s --logits-out %s "
                  "2>/dev/null",
                  kernel, model, idlist, out) == 0,
          "eval %s", s->name);
    int vocab = 0;
    double *ref = ref64_logits(model, ids, N_IDS, &vocab);
    size_t len = 0;
    float *got = (float *)slurp(out, &len);
    CHECK(ref && got && len == (size_t)N_IDS * vocab * sizeof(float), "%s: logits size", s->name);
    if (ref && got && len == (size_t)N_IDS * vocab * sizeof(float)) {
        double worst = 0;
        int top_bad = 0;
        for (int p = 0; p < N_IDS; p++) {
            int rb = 0, gb = 0;
            for (int v = 0; v < vocab; v++) {
                size_t i = (size_t)p * vocab + v;
                worst = fmax(worst, fabs(ref[i] - got[i]));
                if (ref[i] > ref[(size_t)p * vocab + rb]) rb = v;
                if (got[i] > got[(size_t)p * vocab + gb]) gb = v;
            }
            top_bad += rb != gb;
        }
        CHECK(worst < 0.02, "[%s] %s: max |logit diff| %.5f", kernel, s->name, worst);
        printf("[%s] %-10s max |diff| vs float64 reference %.6f, top-1 differs at %d/%d\n", kernel,
               s->name, worst, top_bad, N_IDS);
    }
    free(ref);
    free(got);
}

int main(void)
{
    static const struct shape shapes[] = {
        {"gqa3", "--embd 384 --layers 2 --heads 6 --kv-heads 2 --ffn 768 --seed 11"},
        {"mha-tq2", "--embd 256 --layers 2 --heads 4 --kv-heads 4 --ffn 512 --seed 12 "
                    "--weight-type tq2_0 --embd-type bf16 --untied"},
        {"gqa8-tq1", "--embd 256 --layers 2 --heads 8 --kv-heads 1 --ffn 512 --seed 13 "
                     "--weight-type tq1_0 --embd-type q8_0"},
        {"gqa2-f32", "--embd 256 --layers 3 --heads 4 --kv-heads 2 --ffn 768 --seed 14 "
                     "--embd-type f32"},
    };
    CHECK(system("mkdir -p build/test-tmp") == 0, "mkdir");
    char kernels[256];
    supported_kernels(kernels, sizeof kernels);
    for (char *k = strtok(kernels, " "); k; k = strtok(NULL, " "))
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            check_shape(&shapes[i], k);
    return check_done("test_reference");
}
