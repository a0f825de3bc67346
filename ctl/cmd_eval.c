/* bitnetctl eval | perplexity: teacher-forced passes over given tokens. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/args.h"
#include "ctl/commands.h"
#include "ctl/session.h"
#include "model/clock.h"
#include "model/output_file.h"

/* Rows whose logits are computed together: forward_output_rows reads the head's weights
 * once for all of them (656 MB for 2B-4T's F16 head) where a row at a time read them per
 * row, and gives each row the same logits bit for bit. */
#define LOGIT_ROWS 32

/* logits of the batch's rows [t0, t0 + n) (n <= LOGIT_ROWS) into out[i * n_vocab]. */
static void batch_logits(struct session *s, int t0, int n, float *out)
{
    int rows[LOGIT_ROWS];
    for (int i = 0; i < n; i++)
        rows[i] = t0 + i;
    forward_output_rows(&s->model, &s->st, rows, n, out);
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ids", required_argument, 0, 'i'},
        {"logits-out", required_argument, 0, 'o'}, {"run-dir", required_argument, 0, 'D'},
        SESSION_LONG_OPTS, {0, 0, 0, 0},
    };
    const char *model = NULL, *ids_arg = NULL, *out = NULL, *run_dir = NULL;
    struct session_opts so;
    session_opts_default(&so);
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if ((r = session_opts_parse(&so, c, optarg)) != 0) {
            if (r < 0)
                return 2;
            continue;
        }
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': ids_arg = optarg; break;
        case 'o': out = optarg; break;
        case 'D': run_dir = optarg; break;
        default: return 2;
        }
    }
    if (!ids_arg || !out || optind != argc) {
        fprintf(stderr, "usage: bitnetctl eval [--model FILE | --run-dir DIR] --ids 1,2,3 --logits-out OUT\n");
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (arg_ids("--ids", ids_arg, &ids, &n) < 0)
        return 2;
    /* the output path is checked before the model is read: a mistake there should cost
     * nothing */
    struct output_file of;
    struct errbuf e = {{0}};
    if (output_open(&of, out, 0666, 0, &e) < 0) {
        fprintf(stderr, "bitnetctl eval: --logits-out %s\n", e.msg);
        free(ids);
        return 1;
    }
    if (!model) {
        int rc = daemon_eval(run_dir, ids, n, out, &of);
        free(ids);
        return rc;
    }
    struct session s;
    if (session_open(&s, model, &so, (int)n) < 0) {
        output_abort(&of);
        free(ids);
        return 1;
    }
    int rc = 0;
    double t0 = clock_seconds();
    uint32_t vocab = s.model.hp.n_vocab;
    float *logits = malloc(sizeof(float) * LOGIT_ROWS * vocab);
    if (!logits) {
        fprintf(stderr, "bitnetctl eval: out of memory\n");
        rc = 1;
    }
    for (size_t done = 0; rc == 0 && done < n;) {
        int chunk = (int)(n - done < (size_t)s.st.n_batch ? n - done : (size_t)s.st.n_batch);
        if (forward_batch(&s.model, &s.st, ids + done, chunk, (int)done, &e) < 0) {
            fprintf(stderr, "bitnetctl eval: --ids: %s\n", e.msg);
            rc = 1;
        }
        for (int t = 0; rc == 0 && t < chunk; t += LOGIT_ROWS) {
            int g = chunk - t < LOGIT_ROWS ? chunk - t : LOGIT_ROWS;
            batch_logits(&s, t, g, logits);
            if (fwrite(logits, sizeof(float) * vocab, (size_t)g, of.fp) != (size_t)g) {
                fprintf(stderr, "bitnetctl eval: %s: write failed: %s\n", out, strerror(errno));
                rc = 1;
            }
        }
        done += (size_t)chunk;
    }
    free(logits);
    if (rc == 0 && output_commit(&of, &e) < 0) {
        fprintf(stderr, "bitnetctl eval: %s\n", e.msg);
        rc = 1;
    }
    output_abort(&of);
    if (rc == 0)
        fprintf(stderr, "eval: %zu positions x %u logits -> %s (%.2fs, kernel %s)\n", n, vocab, out,
                clock_seconds() - t0, kops.name);
    free(ids);
    session_close(&s);
    return rc;
}

/* -log softmax(logits)[target], in double so long texts do not drift. */
static double nll_of(const float *logits, uint32_t n, int32_t target)
{
    float max = logits[0];
    for (uint32_t i = 1; i < n; i++)
        max = logits[i] > max ? logits[i] : max;
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += exp((double)logits[i] - max);
    return log(sum) - ((double)logits[target] - max);
}

int cmd_perplexity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"text-file", required_argument, 0, 'f'},
        {"ctx", required_argument, 0, 'c'},   {"chunks", required_argument, 0, 'k'},
        SESSION_LONG_OPTS, {0, 0, 0, 0},
    };
    const char *model = NULL, *file = NULL;
    long n_ctx = 0, max_chunks = -1;
    struct session_opts so;
    session_opts_default(&so);
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if ((r = session_opts_parse(&so, c, optarg)) != 0) {
            if (r < 0)
                return 2;
            continue;
        }
        switch (c) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'c': if (arg_int("--ctx", optarg, 4, 1 << 20, &n_ctx) < 0) return 2; break;
        case 'k': if (arg_int("--chunks", optarg, 1, 1 << 30, &max_chunks) < 0) return 2; break;
        default: return 2;
        }
    }
    if (!model || !file || !n_ctx || optind != argc) {
        fprintf(stderr, "usage: bitnetctl perplexity --model FILE --text-file F --ctx N [--chunks K]\n");
        return 2;
    }
    size_t len;
    char *text = read_text_file(file, &len);
    if (!text)
        return 1;
    struct session s;
    if (session_open(&s, model, &so, (int)n_ctx) < 0) {
        free(text);
        return 1;
    }
    int32_t *tok = NULL;
    float *logits = NULL;
    size_t n_tok = 0;
    struct errbuf e = {{0}};
    int rc = 1;
    if (tokenizer_encode(s.tok, text, len, tokenizer_add_bos(s.tok), false, &tok, &n_tok, &e) < 0) {
        fprintf(stderr, "bitnetctl perplexity: %s: %s\n", file, e.msg);
        goto out;
    }
    /* As llama-perplexity: whole chunks of n_ctx tokens, each starting with BOS, the
     * second half of each chunk scored so every scored token has context behind it. */
    long n_chunks = (long)(n_tok / (size_t)n_ctx);
    if (max_chunks > 0 && max_chunks < n_chunks)
        n_chunks = max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "bitnetctl perplexity: %s: %zu tokens, need at least --ctx %ld\n", file,
                n_tok, n_ctx);
        goto out;
    }
    int first = (int)n_ctx / 2;
    double nll = 0.0;
    long count = 0;
    logits = malloc(sizeof(float) * LOGIT_ROWS * s.model.hp.n_vocab);
    if (!logits) {
        fprintf(stderr, "bitnetctl perplexity: out of memory\n");
        goto out;
    }
    double t0 = clock_seconds();
    fprintf(stderr, "perplexity: %zu tokens, %ld chunks of %ld\n", n_tok, n_chunks, n_ctx);
    for (long ch = 0; ch < n_chunks; ch++) {
        int32_t *chunk = tok + ch * n_ctx;
        int32_t saved = chunk[0];
        if (tokenizer_bos(s.tok) >= 0)
            chunk[0] = tokenizer_bos(s.tok);
        for (int j0 = 0; j0 < n_ctx - 1;) {
            int nb = n_ctx - 1 - j0 < s.st.n_batch ? n_ctx - 1 - j0 : s.st.n_batch;
            if (forward_batch(&s.model, &s.st, chunk + j0, nb, j0, &e) < 0) {
                fprintf(stderr, "bitnetctl perplexity: %s\n", e.msg);
                goto out;
            }
            /* the batch's rows at positions first.. are scored */
            for (int t = first > j0 ? first - j0 : 0; t < nb; t += LOGIT_ROWS) {
                int g = nb - t < LOGIT_ROWS ? nb - t : LOGIT_ROWS;
                batch_logits(&s, t, g, logits);
                for (int i = 0; i < g; i++) {
                    nll += nll_of(logits + (size_t)i * s.model.hp.n_vocab, s.model.hp.n_vocab,
                                  chunk[j0 + t + i + 1]);
                    count++;
                }
            }
            j0 += nb;
        }
        chunk[0] = saved;
        fprintf(stderr, "[%ld/%ld] PPL so far %.4f (%.1fs)\n", ch + 1, n_chunks, exp(nll / count),
                clock_seconds() - t0);
    }
    printf("PPL = %.4f\n", exp(nll / count));
    rc = 0;
out:
    free(logits);
    free(tok);
    free(text);
    session_close(&s);
    return rc;
}
