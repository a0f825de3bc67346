/* bitnetctl tokenize | detokenize */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/args.h"
#include "ctl/commands.h"
#include "ctl/session.h"

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
        {"text-file", required_argument, 0, 'f'}, {"bos", no_argument, 0, 'b'},
        {"no-special", no_argument, 0, 'n'},  {0, 0, 0, 0},
    };
    const char *model = NULL, *text = NULL, *file = NULL;
    bool bos = false, special = true;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 'b': bos = true; break;
        case 'n': special = false; break;
        default: return 2;
        }
    }
    if (!model || !!text == !!file || optind != argc) {
        fprintf(stderr, "usage: bitnetctl tokenize --model FILE (--text S | --text-file F) [--bos]\n");
        return 2;
    }
    size_t len = text ? strlen(text) : 0;
    char *owned = NULL;
    if (file && !(owned = read_text_file(file, &len)))
        return 1;
    struct session s;
    struct session_opts so;
    session_opts_default(&so);
    so.threads = 1;
    if (session_open(&s, model, &so, 0) < 0) {
        free(owned);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    struct errbuf e = {{0}};
    int rc = 0;
    if (tokenizer_encode(s.tok, owned ? owned : text, len, bos, special, &ids, &n, &e) < 0) {
        fprintf(stderr, "bitnetctl tokenize: %s: %s\n", file ? file : "--text", e.msg);
        rc = 1;
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    free(ids);
    free(owned);
    session_close(&s);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ids", required_argument, 0, 'i'}, {0, 0, 0, 0},
    };
    const char *model = NULL, *ids_arg = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': ids_arg = optarg; break;
        default: return 2;
        }
    }
    if (!model || !ids_arg || optind != argc) {
        fprintf(stderr, "usage: bitnetctl detokenize --model FILE --ids \"1 2 3\"\n");
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (arg_ids("--ids", ids_arg, &ids, &n) < 0)
        return 2;
    struct session s;
    struct session_opts so;
    session_opts_default(&so);
    so.threads = 1;
    if (session_open(&s, model, &so, 0) < 0) {
        free(ids);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if ((uint32_t)ids[i] >= tokenizer_n_vocab(s.tok)) {
            fprintf(stderr, "bitnetctl detokenize: token id %d is outside the vocabulary (0..%u)\n",
                    ids[i], tokenizer_n_vocab(s.tok) - 1);
            rc = 1;
        }
    if (rc == 0) {
        char *text = tokenizer_decode(s.tok, ids, n, true);
        if (text) {
            fputs(text, stdout);
            free(text);
        } else {
            rc = 1;
        }
    }
    free(ids);
    session_close(&s);
    return rc;
}
