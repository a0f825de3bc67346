/* The third-party cross-check (../shared/data/xval): `bitnetctl eval` on tiny.gguf must
 * give every logit within 0.02 of the reference, and the same top-1 token wherever the
 * reference's top-1 leads its top-2 by more than 0.05. Runs with each kernel set the
 * CPU supports, forced through BITNET_KERNEL. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tests/util.h"

#define VOCAB 128256
#define TOL 0.02f
#define MARGIN 0.05f

static void top2(const float *x, int n, int *best, float *lead)
{
    int b = 0, s = -1;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[b]) {
            s = b;
            b = i;
        } else if (s < 0 || x[i] > x[s]) {
            s = i;
        }
    }
    *best = b;
    *lead = x[b] - x[s];
}

/* batch_args selects the path: prompt-style batches (GEMM kernels) or one position per
 * call (decode kernels); threads 1 or all. */
static void check_sequence(const char *kernel, const char *seq, const char *variant,
                           const char *batch_args)
{
    char ids_path[256], ref_path[256], out_path[256], cmd[8192];
    snprintf(ids_path, sizeof ids_path, SHARED_DATA("xval/%s.ids"), seq);
    snprintf(ref_path, sizeof ref_path, SHARED_DATA("xval/%s.logits.f32"), seq);
    snprintf(out_path, sizeof out_path, "build/test-tmp/xval-%s-%s-%s.f32", kernel, seq, variant);
    size_t ids_len, ref_len, out_len;
    char *ids = slurp(ids_path, &ids_len);
    float *ref = (float *)slurp(ref_path, &ref_len);
    CHECK(ids && ref, "cannot read %s / %s", ids_path, ref_path);
    if (!ids || !ref) {
        free(ids);
        free(ref);
        return;
    }
    ids[strcspn(ids, "\r\n")] = 0;
    snprintf(cmd, sizeof cmd,
             "BITNET_KERNEL=%s build/bitnetctl eval --model " SHARED_DATA("xval/tiny.gguf")
             " --ids %s --logits-out %s %s",
             kernel, ids, out_path, batch_args);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    float *out = (float *)slurp(out_path, &out_len);
    CHECK(out && out_len == ref_len, "%s: %zu bytes of logits, reference has %zu", out_path,
          out ? out_len : 0, ref_len);
    if (out && out_len == ref_len) {
        int positions = (int)(ref_len / sizeof(float) / VOCAB);
        float worst = 0.0f;
        int bad = 0, top_checked = 0, top_bad = 0;
        for (int p = 0; p < positions; p++) {
            const float *r = ref + (size_t)p * VOCAB, *o = out + (size_t)p * VOCAB;
            for (int v = 0; v < VOCAB; v++) {
                float d = fabsf(r[v] - o[v]);
                if (!(d <= TOL))
                    bad++;
                if (d > worst || d != d)
                    worst = d;
            }
            int rb, ob;
            float rlead, olead;
            top2(r, VOCAB, &rb, &rlead);
            top2(o, VOCAB, &ob, &olead);
            if (rlead > MARGIN) {
                top_checked++;
                top_bad += rb != ob;
            }
        }
        CHECK(positions > 1, "%s: only %d positions", seq, positions);
        CHECK(bad == 0, "[%s] %s: %d logits off by more than %.2f (worst %.4f)", kernel, seq, bad,
              TOL, worst);
        CHECK(top_bad == 0, "[%s] %s: top-1 differs at %d of %d decisive positions", kernel, seq,
              top_bad, top_checked);
        printf("[%s/%s] %s: %d positions, max |diff| %.5f, top-1 agrees at %d/%d decisive positions\n",
               kernel, variant, seq, positions, worst, top_checked - top_bad, top_checked);
    }
    free(ids);
    free(ref);
    free(out);
}

int main(void)
{
    CHECK(system("mkdir -p build/test-tmp") == 0, "mkdir");
    char kernels[256];
    supported_kernels(kernels, sizeof kernels);
    for (char *k = strtok(kernels, " "); k; k = strtok(NULL, " ")) {
        const char *seqs[] = {"tiny-seq1", "tiny-seq2"};
        for (int i = 0; i < 2; i++) {
            check_sequence(k, seqs[i], "batch", "");
            check_sequence(k, seqs[i], "decode", "--batch 1 --threads 1");
            check_sequence(k, seqs[i], "chunks", "--batch 5 --threads 2");
            /* integer products are exact and every float operation happens in the same
             * order whatever the batching and threading: the logits must be identical */
            CHECK(run_cmd("cmp -s build/test-tmp/xval-%s-%s-batch.f32 "
                          "build/test-tmp/xval-%s-%s-decode.f32", k, seqs[i], k, seqs[i]) == 0,
                  "[%s] %s: batched and one-by-one logits differ", k, seqs[i]);
            CHECK(run_cmd("cmp -s build/test-tmp/xval-%s-%s-batch.f32 "
                          "build/test-tmp/xval-%s-%s-chunks.f32", k, seqs[i], k, seqs[i]) == 0,
                  "[%s] %s: logits depend on batch size or thread count", k, seqs[i]);
        }
    }
    return check_done("test_xval");
}
