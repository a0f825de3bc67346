/* bitnetd's settings: command-line flags over an optional INI file ([daemon] section,
 * the flag names with '_' for '-'), over built-in defaults. */
#ifndef BITNET_DAEMON_CONFIG_H
#define BITNET_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "model/errbuf.h"
#include "model/forward.h"

struct daemon_config {
    char *model;              /* GGUF path (required) */
    char *config_file;        /* INI file it was read from, or NULL */
    int workers;              /* 0: auto, one per usable NUMA node */
    char *layer_map;          /* NULL, or "0-14,15-29" */
    int threads_per_worker;   /* 0: every CPU of the worker's share */
    bool split_cpus;          /* workers on one node split its CPUs (default: share them) */
    char *run_dir;            /* NULL: proto/endpoints.h's default */
    int max_sequences;        /* KV slots, i.e. jobs running at once */
    int max_jobs_per_client;  /* running + queued jobs of one client connection */
    int tensor_parallel;      /* ranks per stage (1: none); --workers counts ranks */
    int pipeline_depth;       /* steps in flight at most; 0: one per stage when the
                               * stages have CPUs of their own, else 1 */
    int ctx;                  /* KV positions per sequence, capped at the model's */
    enum kv_type kv_type;     /* KV cache element */
    bool lm_head_q8;          /* the last stage multiplies through an int8 head */
    int act_type;             /* Bitnet__ElemType of hidden states between stages */
    int prefill_chunk;        /* prompt rows per step */
    char *worker_bin;         /* NULL: bitnet-worker beside this executable */
    char *topology;           /* NULL: this machine; "synthetic:..." or "xml:..." */
    int heartbeat_timeout_ms; /* a READY worker silent this long is dead */
    /* remote workers (docs/runtime.md, Remote workers) */
    char *listen;             /* tcp://ADDR:PORT: worker control there, results on PORT+1 */
    char *advertise;          /* host named in the results endpoint told to remote workers */
    char *curve_key;          /* the daemon's key pair file (bitnetctl keygen's PREFIX.key) */
    char *allow_keys;         /* worker public keys admitted: a file, or a directory of .pub */
    char *remote_workers;     /* "w1,w2": stages started by hand elsewhere, not by bitnetd */
    int worker_timeout_s;     /* a remote worker gone this long fails the jobs */
    int drain_timeout_s;      /* SIGTERM waits this long for running jobs; 0: none */
    bool foreground;          /* accepted for systemd-style unit files; always true */
    /* the OpenAI-compatible HTTP API (docs/http-api.md) */
    char *http;               /* NULL: off; "PORT" (loopback) or "ADDR:PORT" */
    char *api_keys;           /* NULL: open; else a file of bearer tokens, one a line */
    int http_max_body;        /* bytes of a request body at most */
    int http_queue;           /* HTTP generations that may wait beyond --max-sequences */
};

/* Fills cfg from argv (and the file named by --config). Returns 0, 1 when --help was
 * asked (usage printed to stdout), 2 when --version was (the caller prints it), or -1 with e filled ("--ctx: ..." or
 * "file:line: key: ..."). cfg must be released with config_free in every case. Settings
 * that only make sense together (--listen with its keys, --remote-workers with --listen)
 * are checked here; the stage ids of --remote-workers once the plan is known. */
int config_load(struct daemon_config *cfg, int argc, char **argv, struct errbuf *e);
void config_free(struct daemon_config *cfg);

void config_usage(FILE *f);

/* The names of the settings ("max-jobs-per-client") whose values differ between a and b,
 * at most cap of them; returns how many differ. */
size_t config_changed(const struct daemon_config *a, const struct daemon_config *b,
                      const char **names, size_t cap);

#endif
