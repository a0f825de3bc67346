/* bitnetctl: the command-line front end. Commands given --model run in-process. */
#include <stdio.h>
#include <string.h>

#include "ctl/commands.h"

#define BITNETCTL_VERSION "bitnetctl 0.1.0"

/* Each command's usage, shown whole by --help and alone by "bitnetctl COMMAND --help". */
struct usage_entry {
    const char *name;   /* as typed: "model synth", "status" */
    const char *text;   /* its lines, without the leading "bitnetctl " */
};

static const struct usage_entry in_process_usage[] = {
    {"model synth", "model synth --out FILE [--shape tiny|2b4t] [--embd N --layers N --heads N\n"
                    "            --kv-heads N --ffn N --ctx N] [--seed N] [--tokenizer tokenizer.json]\n"
                    "            [--weight-type i2_s|tq2_0|tq1_0] [--embd-type f16|f32|bf16|q8_0] [--untied]\n"},
    {"model inspect", "model inspect FILE [--json]\n"},
    {"tokenize", "tokenize --model FILE (--text S | --text-file F) [--bos] [--no-special]\n"},
    {"detokenize", "detokenize --model FILE --ids \"1 2 3\"\n"},
    {"eval", "eval --model FILE --ids 1,2,3 --logits-out OUT\n"
             "eval --ids 1,2,3 --logits-out OUT [--run-dir DIR]   (through bitnetd)\n"},
    {"perplexity", "perplexity --model FILE --text-file F --ctx N [--chunks K]\n"},
    {"generate", "generate --model FILE (--prompt S | --chat S) [-n N (0: to the context's end)]\n"
                 "         [--temp T] [--seed S]\n"
                 "         [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--ids] [--ctx N]\n"
                 "generate (--prompt S | --chat S) [...] [--run-dir DIR]   (through bitnetd)\n"},
    {"bench", "bench --model FILE [--prompt-tokens 512] [--gen-tokens 128] [--repeat R]\n"
              "      [--depth D] [--json] [--db PATH | --no-record]\n"
              "bench [--streams S] [--prompt-tokens N] [--gen-tokens N] [--repeat R] [--json]\n"
              "      [--run-dir DIR]   (through bitnetd)\n"},
};

/* Benchmark history: every bench run is recorded (docs/bench-history.md); all take
 * --db PATH (default $XDG_STATE_HOME/bitnetd/bench.db) and --json. */
static const struct usage_entry history_usage[] = {
    {"bench history", "bench history [--model ID] [--host H] [--last N] [--sweep ID]\n"},
    {"bench show", "bench show RUN\n"},
    {"bench compare", "bench compare RUN_A RUN_B\n"},
    {"bench check", "bench check --baseline RUN|best|previous --max-regression 5% [RUN]   exit 1 on a regression\n"},
    {"bench plot", "bench plot --metric generated_tps [--model ID] [--host H] --out FILE.svg\n"},
    {"bench sweep", "bench sweep --model FILE --threads 1,2 [--workers 1,2 [--streams 1,8]] [--out FILE.svg]\n"},
    {"bench import", "bench import FILE.json   receipts as bench show --json prints them (one or an array)\n"},
};

static const struct usage_entry daemon_usage[] = {
    {"status", "status [--run-dir DIR] [--json]   exit 3 when degraded (a stage is down)\n"},
    {"workers", "workers [--run-dir DIR] [--json] [--timing]\n"},
    {"placement", "placement [--run-dir DIR] [--json]\n"
                  "placement --model FILE [--topology SRC] [bitnetd flags] [--json]   (no daemon)\n"},
    {"cancel", "cancel ID [--run-dir DIR]\n"},
    {"drain", "drain [--run-dir DIR]   no new jobs; answers when the running ones ended\n"},
    {"resume", "resume [--run-dir DIR]   ends a drain: new jobs are taken again\n"},
    {"shutdown", "shutdown [--run-dir DIR]\n"},
};

static const struct usage_entry keygen_usage[] = {
    {"keygen", "keygen --out PREFIX [--force]   writes PREFIX.key (mode 0600) and PREFIX.pub\n"},
};

#define N_OF(a) (sizeof (a) / sizeof (a)[0])

static void print_entries(FILE *out, const struct usage_entry *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* every line of an entry is indented; only the first names the program */
        const char *t = u[i].text;
        while (*t) {
            const char *nl = strchr(t, '\n');
            size_t len = nl ? (size_t)(nl - t) : strlen(t);
            fprintf(out, "  %.*s\n", (int)len, t);
            t += len + (nl != NULL);
        }
    }
}

static void usage(FILE *out)
{
    fputs("usage: bitnetctl COMMAND [options]      (bitnetctl COMMAND --help: that command's)\n"
          "\n"
          "In-process commands (given --model FILE):\n", out);
    print_entries(out, in_process_usage, N_OF(in_process_usage));
    fputs("\n"
          "Commands for a running bitnetd (all take --run-dir DIR; status, workers and\n"
          "placement take --json):\n", out);
    print_entries(out, daemon_usage, N_OF(daemon_usage));
    fputs("\n"
          "Benchmark history (every bench run is recorded; docs/bench-history.md; all take\n"
          "--db PATH, default $XDG_STATE_HOME/bitnetd/bench.db, and --json):\n", out);
    print_entries(out, history_usage, N_OF(history_usage));
    fputs("\n"
          "Keys for remote workers (bitnetd --listen, bitnet-worker on tcp):\n", out);
    print_entries(out, keygen_usage, N_OF(keygen_usage));
    fputs("\n"
          "Every in-process command also takes --threads N, --batch N (positions per forward\n"
          "call), --lm-head f16|q8 (int8 copy of the output projection, made at load) and\n"
          "--kv-type f32|f16|q8 (KV cache element; f32 by default, q8: int8 with a scale\n"
          "per position and KV head).\n"
          "\n"
          "Environment: BITNET_KERNEL=scalar|avx2|avx512|amx|auto chooses the compute kernels.\n",
          out);
}

/* "bitnetctl NAME --help": that command's lines; 0 when name is no command. */
static int command_usage(const char *name)
{
    const struct usage_entry *tables[] = {in_process_usage, daemon_usage, history_usage,
                                          keygen_usage};
    const size_t sizes[] = {N_OF(in_process_usage), N_OF(daemon_usage), N_OF(history_usage),
                            N_OF(keygen_usage)};
    for (size_t t = 0; t < N_OF(tables); t++)
        for (size_t i = 0; i < sizes[t]; i++)
            if (strcmp(tables[t][i].name, name) == 0) {
                fputs("usage: bitnetctl ", stdout);
                /* continuation lines keep their own indentation */
                const char *text = tables[t][i].text, *nl = strchr(text, '\n');
                fwrite(text, 1, nl ? (size_t)(nl - text + 1) : strlen(text), stdout);
                if (nl && nl[1])
                    for (const char *l = nl + 1; *l;) {
                        const char *e = strchr(l, '\n');
                        size_t len = e ? (size_t)(e - l) : strlen(l);
                        /* a continuation (indented) lines up under the first line's
                         * words; another form of the command names the program again */
                        printf("%s%.*s\n", *l == ' ' ? "                 " : "       bitnetctl ",
                               (int)len, l);
                        l += len + (e != NULL);
                    }
                return 1;
            }
    return 0;
}

static int is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        puts(BITNETCTL_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "model") == 0) {
        const char *sub = argc >= 3 ? argv[2] : "";
        char name[32];
        snprintf(name, sizeof name, "model %.16s", sub);
        if (argc >= 4 && is_help(argv[3]) && command_usage(name))
            return 0;
        if (strcmp(sub, "synth") == 0)
            return cmd_model_synth(argc - 2, argv + 2);
        if (strcmp(sub, "inspect") == 0)
            return cmd_model_inspect(argc - 2, argv + 2);
        if (is_help(sub)) {
            command_usage("model synth");
            command_usage("model inspect");
            return 0;
        }
        fprintf(stderr, "bitnetctl: model: expected 'synth' or 'inspect'\n");
        return 2;
    }
    if (argc >= 3 && is_help(argv[2]) && command_usage(cmd))
        return 0;
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "perplexity") == 0)
        return cmd_perplexity(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) {
        /* bench SUBCOMMAND reads (or sweeps) the history; bench --options runs one bench */
        if (argc >= 3 && argv[2][0] != '-') {
            char name[32];
            snprintf(name, sizeof name, "bench %.16s", argv[2]);
            if (argc >= 4 && is_help(argv[3]) && command_usage(name))
                return 0;
            return cmd_bench_history(argc - 2, argv + 2);
        }
        return cmd_bench(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "keygen") == 0)
        return cmd_keygen(argc - 1, argv + 1);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } daemon_cmds[] = {
        {"status", cmd_status}, {"workers", cmd_workers}, {"placement", cmd_placement},
        {"cancel", cmd_cancel}, {"drain", cmd_drain},     {"resume", cmd_resume},
        {"shutdown", cmd_shutdown},
    };
    for (size_t i = 0; i < N_OF(daemon_cmds); i++)
        if (strcmp(cmd, daemon_cmds[i].name) == 0)
            return daemon_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "bitnetctl: unknown command '%s' (try bitnetctl --help)\n", cmd);
    return 2;
}
