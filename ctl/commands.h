/* One function per bitnetctl subcommand; each parses its own options and returns the
 * process exit status. */
#ifndef BITNET_CTL_COMMANDS_H
#define BITNET_CTL_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/output_file.h"
#include "model/sample.h"

int cmd_model_synth(int argc, char **argv);
int cmd_model_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* bench history | show | compare | check | plot | import | sweep (argv[0] is the
 * subcommand; cmd_bench_history.c, cmd_bench_sweep.c) */
int cmd_bench_history(int argc, char **argv);
int cmd_bench_sweep(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
/* bitnetctl placement --model FILE ...: the plan without a daemon (cmd_placement.c) */
int cmd_placement_offline(int argc, char **argv);

/* Talking to a running bitnetd (ctl/cmd_daemon.c). */
int cmd_status(int argc, char **argv);
int cmd_workers(int argc, char **argv);
int cmd_placement(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_drain(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_shutdown(int argc, char **argv);

struct daemon_generate_args {
    const char *run_dir;
    const char *prompt, *chat, *system;
    int n_predict;
    struct sampler_params sp;
    bool ids_out;
    int timeout_ms;   /* give up after this long without output */
};
int daemon_generate(const struct daemon_generate_args *a);
/* Writes the logits to out (opened by the caller, committed or removed here). */
int daemon_eval(const char *run_dir, const int32_t *ids, size_t n, const char *out_name,
                struct output_file *out);

#endif
