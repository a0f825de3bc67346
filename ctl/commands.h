/* One function per bitnetctl subcommand; each parses its own options and returns the
 * process exit status. */
#ifndef BITNET_CTL_COMMANDS_H
#define BITNET_CTL_COMMANDS_H

int cmd_model_synth(int argc, char **argv);
int cmd_model_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
