/* The third-party cross-check (../shared/data/xval): `bitnetctl eval` on tiny.gguf must
 * give every logit within 0.02 of the reference, and the same top-1 token wherever the
 * reference's top-1 leads its top-2 by more than 0.05. Runs with each kernel set the
 * CPU supports, forced through BITNET_KERNEL. With --kv-type q8 the same data measures
 * what the int8 KV cache costs, against bounds a broken cache would break. */
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

/* How far one run's logits are from the reference. */
struct xval_diff {
    int positions;
    float worst;        /* max |diff| over every logit */
    float worst_pos0;   /* the same at position 0 */
    double mean_rms;    /* per-position rms |diff|, averaged over positions */
    int off;            /* logits off by more than TOL */
    int top_checked, top_bad;
};

static void diff_logits(const float *ref, const float *out, size_t n_floats, struct xval_diff *d)
{
    memset(d, 0, sizeof *d);
    d->positions = (int)(n_floats / VOCAB);
    for (int p = 0; p < d->positions; p++) {
        const float *r = ref + (size_t)p * VOCAB, *o = out + (size_t)p * VOCAB;
        double ss = 0.0;
        for (int v = 0; v < VOCAB; v++) {
            float x = fabsf(r[v] - o[v]);
            if (!(x <= TOL))
                d->off++;
            if (x > d->worst || x != x)
                d->worst = x;
            if (p == 0 && (x > d->worst_pos0 || x != x))
                d->worst_pos0 = x;
            ss += (double)x * x;
        }
        d->mean_rms += sqrt(ss / VOCAB) / d->positions;
        int rb, ob;
        float rlead, olead;
        top2(r, VOCAB, &rb, &rlead);
        top2(o, VOCAB, &ob, &olead);
        if (rlead > MARGIN) {
            d->top_checked++;
            d->top_bad += rb != ob;
        }
    }
}

/* Runs `bitnetctl eval` on one sequence with args (the path: prompt-style batches, GEMM
 * kernels, or one position per call, decode kernels; threads 1 or all; the KV cache
 * type) and compares with the reference. -1 (a check failed) if there is nothing to
 * compare. */
static int run_sequence(const char *kernel, const char *seq, const char *variant,
                        const char *args, struct xval_diff *d)
{
    char ids_path[256], ref_path[256], out_path[256], cmd[8192];
    snprintf(ids_path, sizeof ids_path, SHARED_DATA("xval/%s.ids"), seq);
    snprintf(ref_path, sizeof ref_path, SHARED_DATA("xval/%s.logits.f32"), seq);
    snprintf(out_path, sizeof out_path, "build/test-tmp/xval-%s-%s-%s.f32", kernel, seq, variant);
    size_t ids_len, ref_len, out_len;
    char *ids = slurp(ids_path, &ids_len);
    float *ref = (float *)slurp(ref_path, &ref_len), *out = NULL;
    int rc = -1;
    CHECK(ids && ref, "cannot read %s / %s", ids_path, ref_path);
    if (ids && ref) {
        ids[strcspn(ids, "\r\n")] = 0;
        snprintf(cmd, sizeof cmd,
                 "BITNET_KERNEL=%s build/bitnetctl eval --model " SHARED_DATA("xval/tiny.gguf")
                 " --ids %s --logits-out %s %s",
                 kernel, ids, out_path, args);
        CHECK(system(cmd) == 0, "%s failed", cmd);
        out = (float *)slurp(out_path, &out_len);
        CHECK(out && out_len == ref_len, "%s: %zu bytes of logits, reference has %zu", out_path,
              out ? out_len : 0, ref_len);
        if (out && out_len == ref_len) {
            diff_logits(ref, out, ref_len / sizeof(float), d);
            CHECK(d->positions > 1, "%s: only %d positions", seq, d->positions);
            rc = 0;
        }
    }
    free(ids);
    free(ref);
    free(out);
    return rc;
}

static void check_sequence(const char *kernel, const char *seq, const char *variant,
                           const char *batch_args)
{
    struct xval_diff d;
    if (run_sequence(kernel, seq, variant, batch_args, &d) < 0)
        return;
    CHECK(d.off == 0, "[%s] %s: %d logits off by more than %.2f (worst %.4f)", kernel, seq, d.off,
          TOL, d.worst);
    CHECK(d.top_bad == 0, "[%s] %s: top-1 differs at %d of %d decisive positions", kernel, seq,
          d.top_bad, d.top_checked);
    printf("[%s/%s] %s: %d positions, max |diff| %.5f, top-1 agrees at %d/%d decisive positions\n",
           kernel, variant, seq, d.positions, d.worst, d.top_checked - d.top_bad, d.top_checked);
}

/* --kv-type q8 cannot meet the F32 tolerance on this data: the random-weight model
 * amplifies any change to attention (its int8 activations turn a small change into
 * whole steps), so that even --kv-type f16 moves logits by up to 4 (per-position rms
 * 0.24-0.31, of logits whose spread is 1.6). Measured with q8: mean rms 0.42 / 0.62,
 * position 0 (where attention returns the value itself) 0.44, top-1 kept at 8/17 and
 * 9/24 decisive positions. Broken caches tried while writing this (keys read in another
 * tile order, key or value scales of the wrong position, one key scale for all) gave
 * mean rms 0.96-2.1 and top-1 at 1-5 of 17 and 2 of 24; uniform attention gives rms
 * 2.1. The bounds sit between the two. A wrong score scale (x2, x0.5) cannot be seen
 * here, as this model's attention is nearly one-hot; test_attention checks that against
 * float64. */
#define Q8_MEAN_RMS 0.8
#define Q8_POS0 1.0f
#define Q8_TOP1_FRACTION 0.25

static void check_sequence_q8(const char *kernel, const char *seq, const char *variant,
                              const char *batch_args)
{
    char args[256];
    snprintf(args, sizeof args, "--kv-type q8 %s", batch_args);
    struct xval_diff d;
    if (run_sequence(kernel, seq, variant, args, &d) < 0)
        return;
    CHECK(d.mean_rms <= Q8_MEAN_RMS, "[%s] %s q8: mean rms |diff| %.3f over %.2f", kernel, seq,
          d.mean_rms, Q8_MEAN_RMS);
    CHECK(d.worst_pos0 <= Q8_POS0, "[%s] %s q8: position 0 max |diff| %.3f over %.2f", kernel,
          seq, d.worst_pos0, Q8_POS0);
    CHECK(d.top_checked - d.top_bad >= Q8_TOP1_FRACTION * d.top_checked,
          "[%s] %s q8: top-1 agrees at only %d of %d decisive positions", kernel, seq,
          d.top_checked - d.top_bad, d.top_checked);
    printf("[%s/%s] %s: %d positions, max |diff| %.3f (position 0: %.3f), mean rms %.3f, "
           "top-1 agrees at %d/%d decisive positions\n", kernel, variant, seq, d.positions,
           d.worst, d.worst_pos0, d.mean_rms, d.top_checked - d.top_bad, d.top_checked);
}

/* Integer products are exact and every float operation happens in the same order
 * whatever the batching and threading: the logits must be identical. */
static void check_same_logits(const char *k, const char *seq, const char *a, const char *b)
{
    CHECK(run_cmd("cmp -s build/test-tmp/xval-%s-%s-%s.f32 build/test-tmp/xval-%s-%s-%s.f32", k,
                  seq, a, k, seq, b) == 0,
          "[%s] %s: logits of runs %s and %s differ (batch size or thread count)", k, seq, a, b);
}

int main(void)
{
    char kernels[256];
    supported_kernels(kernels, sizeof kernels);
    const char *seqs[] = {"tiny-seq1", "tiny-seq2"};
    if (shared_data_missing()) {
        for (int i = 0; i < 2; i++) {
            char what[512], file[64];
            snprintf(what, sizeof what, "the logits cross-check of %s (bitnetctl eval on "
                     "tiny.gguf; kernels %s; F32 and int8 KV cache)", seqs[i], kernels);
            snprintf(file, sizeof file, "xval/%s.logits.f32", seqs[i]);
            check_not_run(what, file);
        }
        return check_done("test_xval");
    }
    CHECK(system("mkdir -p build/test-tmp") == 0, "mkdir");
    for (char *k = strtok(kernels, " "); k; k = strtok(NULL, " ")) {
        for (int i = 0; i < 2; i++) {
            check_sequence(k, seqs[i], "batch", "");
            check_sequence(k, seqs[i], "decode", "--batch 1 --threads 1");
            check_sequence(k, seqs[i], "chunks", "--batch 5 --threads 2");
            check_same_logits(k, seqs[i], "batch", "decode");
            check_same_logits(k, seqs[i], "batch", "chunks");
            check_sequence_q8(k, seqs[i], "q8-batch", "");
            check_sequence_q8(k, seqs[i], "q8-decode", "--batch 1 --threads 1");
            check_sequence_q8(k, seqs[i], "q8-chunks", "--batch 5 --threads 2");
            check_same_logits(k, seqs[i], "q8-batch", "q8-decode");
            check_same_logits(k, seqs[i], "q8-batch", "q8-chunks");
            /* the int8 cache was really used */
            CHECK(run_cmd("cmp -s build/test-tmp/xval-%s-%s-batch.f32 "
                          "build/test-tmp/xval-%s-%s-q8-batch.f32", k, seqs[i], k, seqs[i]) != 0,
                  "[%s] %s: q8 logits equal the f32 ones", k, seqs[i]);
        }
    }
    return check_done("test_xval");
}
