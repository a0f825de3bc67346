/* bitnetctl: the command-line front end. Commands given --model run in-process. */
#include <stdio.h>
#include <string.h>

#include "ctl/commands.h"

static void usage(FILE *out)
{
    fputs("usage: bitnetctl COMMAND [options]\n"
          "\n"
          "In-process commands (given --model FILE):\n"
          "  model synth --out FILE [--shape tiny|2b4t] [--embd N --layers N --heads N\n"
          "              --kv-heads N --ffn N --ctx N] [--seed N] [--tokenizer tokenizer.json]\n"
          "              [--weight-type i2_s|tq2_0|tq1_0] [--embd-type f16|f32|bf16|q8_0] [--untied]\n"
          "  model inspect FILE [--json]\n"
          "  tokenize --model FILE (--text S | --text-file F) [--bos] [--no-special]\n"
          "  detokenize --model FILE --ids \"1 2 3\"\n"
          "  eval --model FILE --ids 1,2,3 --logits-out OUT\n"
          "  perplexity --model FILE --text-file F --ctx N [--chunks K]\n"
          "  generate --model FILE (--prompt S | --chat S) [-n N] [--temp T] [--seed S]\n"
          "           [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R] [--ids] [--ctx N]\n"
          "  bench --model FILE [--prompt-tokens 512] [--gen-tokens 128] [--repeat R]\n"
          "        [--depth D] [--json] [--db PATH | --no-record]\n"
          "\n"
          "Commands for a running bitnetd (all take --run-dir DIR; status, workers and\n"
          "placement take --json):\n"
          "  status | workers | placement | cancel ID | drain | shutdown\n"
          "  generate (--prompt S | --chat S) [...]   as above, without --model\n"
          "  eval --ids 1,2,3 --logits-out OUT         as above, without --model\n"
          "  bench [--streams S] [--prompt-tokens N] [--gen-tokens N] [--repeat R] [--json]\n"
          "                                            as above, without --model\n"
          "\n"
          "Benchmark history (every bench run is recorded; docs/bench-history.md; all take\n"
          "--db PATH, default $XDG_STATE_HOME/bitnetd/bench.db, and --json):\n"
          "  bench history [--model ID] [--host H] [--last N] [--sweep ID]\n"
          "  bench show RUN | bench compare RUN_A RUN_B\n"
          "  bench check --baseline RUN|best|previous --max-regression 5% [RUN]   exit 1 on a regression\n"
          "  bench plot --metric generated_tps [--model ID] [--host H] --out FILE.svg\n"
          "  bench sweep --model FILE --threads 1,2 [--workers 1,2 [--streams 1,8]] [--out FILE.svg]\n"
          "  bench import FILE.json   receipts as bench show --json prints them (one or an array)\n"
          "\n"
          "Keys for remote workers (bitnetd --listen, bitnet-worker on tcp):\n"
          "  keygen --out PREFIX [--force]   writes PREFIX.key (mode 0600) and PREFIX.pub\n"
          "\n"
          "Every in-process command also takes --threads N, --batch N (positions per forward\n"
          "call), --lm-head f16|q8 (int8 copy of the output projection, made at load) and\n"
          "--kv-type f32|f16|q8 (KV cache element; f32 by default, q8: int8 with a scale\n"
          "per position and KV head).\n"
          "\n"
          "Environment: BITNET_KERNEL=scalar|avx2|avx512|amx|auto chooses the compute kernels.\n",
          out);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "model") == 0) {
        if (argc >= 3 && strcmp(argv[2], "synth") == 0)
            return cmd_model_synth(argc - 2, argv + 2);
        if (argc >= 3 && strcmp(argv[2], "inspect") == 0)
            return cmd_model_inspect(argc - 2, argv + 2);
        fprintf(stderr, "bitnetctl: model: expected 'synth' or 'inspect'\n");
        return 2;
    }
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
        if (argc >= 3 && argv[2][0] != '-')
            return cmd_bench_history(argc - 2, argv + 2);
        return cmd_bench(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "keygen") == 0)
        return cmd_keygen(argc - 1, argv + 1);
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } daemon_cmds[] = {
        {"status", cmd_status}, {"workers", cmd_workers}, {"placement", cmd_placement},
        {"cancel", cmd_cancel}, {"drain", cmd_drain},     {"shutdown", cmd_shutdown},
    };
    for (size_t i = 0; i < sizeof daemon_cmds / sizeof daemon_cmds[0]; i++)
        if (strcmp(cmd, daemon_cmds[i].name) == 0)
            return daemon_cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "bitnetctl: unknown command '%s' (try bitnetctl --help)\n", cmd);
    return 2;
}
