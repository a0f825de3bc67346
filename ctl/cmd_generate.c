/* bitnetctl generate --model FILE: in-process generation streamed to stdout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ctl/args.h"
#include "ctl/commands.h"
#include "ctl/session.h"
#include "model/generation.h"
#include "model/clock.h"
#include "model/sample.h"

struct generate_opts {
    const char *model, *prompt, *chat, *system, *run_dir;
    long n_predict, n_ctx;
    bool ids_out, seed_given;
    struct sampler_params sp;
    struct session_opts so;
};

static int parse_generate(int argc, char **argv, struct generate_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},   {"prompt", required_argument, 0, 'p'},
        {"chat", required_argument, 0, 'c'},    {"system", required_argument, 0, 'y'},
        {"n-predict", required_argument, 0, 'n'}, {"temp", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},    {"top-k", required_argument, 0, 'k'},
        {"top-p", required_argument, 0, 'P'},   {"min-p", required_argument, 0, 'M'},
        {"repeat-penalty", required_argument, 0, 'r'}, {"repeat-last-n", required_argument, 0, 'R'},
        {"ids", no_argument, 0, 'i'},           {"ctx", required_argument, 0, 'C'},
        {"run-dir", required_argument, 0, 'D'}, SESSION_LONG_OPTS, {0, 0, 0, 0},
    };
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    sampler_params_default(&o->sp);
    session_opts_default(&o->so);
    long v;
    int c, r;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
        if ((r = session_opts_parse(&o->so, c, optarg)) != 0) {
            if (r < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'c': o->chat = optarg; break;
        case 'y': o->system = optarg; break;
        case 'n': if (arg_int("-n", optarg, 0, 1 << 20, &o->n_predict) < 0) return -1; break;
        case 'C': if (arg_int("--ctx", optarg, 1, 1 << 20, &o->n_ctx) < 0) return -1; break;
        case 't': if (arg_float("--temp", optarg, 0, 100, &o->sp.temp) < 0) return -1; break;
        case 's': if (arg_u64("--seed", optarg, &o->sp.seed) < 0) return -1; o->seed_given = true; break;
        case 'k': if (arg_int("--top-k", optarg, 0, 1 << 24, &v) < 0) return -1; o->sp.top_k = (int)v; break;
        case 'P': if (arg_float("--top-p", optarg, 0, 1, &o->sp.top_p) < 0) return -1; break;
        case 'M': if (arg_float("--min-p", optarg, 0, 1, &o->sp.min_p) < 0) return -1; break;
        case 'r': if (arg_float("--repeat-penalty", optarg, 0.01f, 100, &o->sp.repeat_penalty) < 0) return -1; break;
        case 'R': if (arg_int("--repeat-last-n", optarg, 0, 1 << 16, &v) < 0) return -1; o->sp.repeat_last_n = (int)v; break;
        case 'i': o->ids_out = true; break;
        case 'D': o->run_dir = optarg; break;
        default: return -1;
        }
    }
    if (!!o->prompt == !!o->chat || optind != argc) {
        fprintf(stderr, "usage: bitnetctl generate [--model FILE | --run-dir DIR] (--prompt S | --chat S) [-n N] "
                        "[--temp T] [--seed S] [--top-k K] [--top-p P] [--min-p P] "
                        "[--repeat-penalty R] [--ids] [--ctx N]\n");
        return -1;
    }
    if (!o->seed_given && getrandom(&o->sp.seed, sizeof o->sp.seed, 0) != sizeof o->sp.seed)
        o->sp.seed = (uint64_t)(clock_seconds() * 1e9);
    return 0;
}

/* The request's text, as bitnetd's jobs encode it (model/generation.h). */
static int encode_prompt(const struct session *s, const struct generate_opts *o, int32_t **ids,
                         size_t *n)
{
    struct errbuf e = {{0}};
    struct gen_input in = o->chat ? (struct gen_input){GEN_INPUT_CHAT, o->chat, o->system}
                                  : (struct gen_input){GEN_INPUT_PROMPT, o->prompt, NULL};
    if (gen_encode(s->tok, &in, ids, n, &e) < 0) {
        fprintf(stderr, "bitnetctl generate: %s\n", e.msg);
        return -1;
    }
    return 0;
}

int cmd_generate(int argc, char **argv)
{
    struct generate_opts o;
    if (parse_generate(argc, argv, &o) < 0)
        return 2;
    if (!o.model) {
        struct daemon_generate_args a = {.run_dir = o.run_dir, .prompt = o.prompt, .chat = o.chat,
                                         .system = o.system, .n_predict = (int)o.n_predict,
                                         .sp = o.sp, .ids_out = o.ids_out, .timeout_ms = 60000};
        return daemon_generate(&a);
    }
    struct session s;
    if (session_open(&s, o.model, &o.so, 0) < 0)
        return 1;
    double load_s = s.load_seconds;
    int32_t *prompt;
    size_t n_prompt;
    if (encode_prompt(&s, &o, &prompt, &n_prompt) < 0) {
        session_close(&s);
        return 1;
    }
    /* by default just enough for this prompt and reply (-n 0: to the end of the context),
     * capped at the trained context */
    long n_ctx = o.n_ctx;
    if (n_ctx == 0) {
        n_ctx = o.n_predict > 0 ? (long)n_prompt + o.n_predict : (long)s.model.hp.n_ctx_train;
        if (n_ctx > (long)s.model.hp.n_ctx_train)
            n_ctx = s.model.hp.n_ctx_train;
    }
    struct errbuf fit = {{0}};
    if (gen_check_context(n_prompt, (int)n_ctx, &fit) < 0) {
        fprintf(stderr, "bitnetctl generate: %s\n", fit.msg);
        free(prompt);
        session_close(&s);
        return 1;
    }
    if (session_set_context(&s, (int)n_ctx) < 0) {
        free(prompt);
        session_close(&s);
        return 1;
    }
    struct sampler smp;
    struct errbuf e = {{0}};
    if (sampler_init(&smp, &o.sp, s.model.hp.n_vocab, &e) < 0) {
        fprintf(stderr, "bitnetctl generate: %s\n", e.msg);
        free(prompt);
        session_close(&s);
        return 1;
    }
    for (size_t i = 0; i < n_prompt; i++)
        sampler_accept(&smp, prompt[i]);

    double t0 = clock_seconds();
    const float *logits = session_feed(&s, prompt, n_prompt, 0);
    double t_prompt = clock_seconds() - t0;
    int rc = logits ? 0 : 1;
    long n_gen = 0;
    struct tok_stream ts = {{0}, 0};
    char buf[512];
    int pos = (int)n_prompt;
    t0 = clock_seconds();
    while (rc == 0) {
        int32_t id = sampler_sample(&smp, logits);
        /* the rules bitnetd's jobs follow too (model/generation.h) */
        enum gen_end end = gen_after_token(s.tok, id, (size_t)n_gen + 1, o.n_predict,
                                           n_prompt + (size_t)n_gen + 1, (int)n_ctx);
        if (end == GEN_END_EOG)
            break;
        sampler_accept(&smp, id);
        n_gen++;
        if (o.ids_out) {
            printf(n_gen > 1 ? " %d" : "%d", id);
        } else {
            size_t nb = tok_stream_push(s.tok, &ts, id, buf, sizeof buf);
            fwrite(buf, 1, nb, stdout);
        }
        fflush(stdout);
        if (end != GEN_GOES_ON)
            break;
        logits = session_feed(&s, &id, 1, pos++);
        if (!logits)
            rc = 1;
    }
    if (!o.ids_out)
        fwrite(buf, 1, tok_stream_flush(&ts, buf, sizeof buf), stdout);
    putchar('\n');
    double t_gen = clock_seconds() - t0;
    fprintf(stderr,
            "prompt: %zu tokens in %.2fs (%.2f tok/s) | generated: %ld tokens in %.2fs (%.2f tok/s)"
            " | load %.2fs | kernel %s | seed %llu\n",
            n_prompt, t_prompt, n_prompt / (t_prompt > 0 ? t_prompt : 1e-9), n_gen, t_gen,
            n_gen / (t_gen > 0 ? t_gen : 1e-9), load_s, kops.name,
            (unsigned long long)o.sp.seed);
    sampler_free(&smp);
    free(prompt);
    session_close(&s);
    return rc;
}
