/* The benchmark history: one SQLite database of receipts, each a whole bench run (the
 * JSON receipt of bench_receipt.h) with every repeat of every figure in rows of its own.
 * Schema and JSON: docs/bench-history.md. */
#ifndef BITNET_CTL_BENCH_STORE_H
#define BITNET_CTL_BENCH_STORE_H

#include <json-c/json.h>
#include <stdint.h>

#include "model/errbuf.h"

/* The schema this build writes; older databases are migrated up to it when opened. */
#define BENCH_STORE_SCHEMA_VERSION 2

struct sqlite3;

struct bench_store {
    struct sqlite3 *db;
    char path[4096];
};

/* $XDG_STATE_HOME/bitnetd/bench.db, else ~/.local/state/bitnetd/bench.db. */
int bench_store_default_path(char *out, size_t cap, struct errbuf *e);

/* Opens (creating it and its directories if needed) the database at path and migrates
 * it to BENCH_STORE_SCHEMA_VERSION. A database of a newer schema is refused. */
int bench_store_open(struct bench_store *s, const char *path, struct errbuf *e);
/* As bench_store_open, but stops migrating at schema `version` (tests write old files). */
int bench_store_open_at(struct bench_store *s, const char *path, int version, struct errbuf *e);
void bench_store_close(struct bench_store *s);
/* PRAGMA user_version of the open database. */
int bench_store_schema_version(struct bench_store *s, int *version, struct errbuf *e);

/* Stores receipt (bench_receipt.h) in one transaction: its row and every figure's every
 * repeat, or nothing. *run_id gets the new run's id; the receipt's "run_id" is set. */
int bench_store_insert(struct bench_store *s, json_object *receipt, int64_t *run_id,
                       struct errbuf *e);

/* A new sweep's id, for bench sweep to tag its runs with (receipt "sweep"). */
int bench_store_new_sweep(struct bench_store *s, const char *settings, int64_t *sweep_id,
                          struct errbuf *e);

/* The receipt of run id (a new reference; put it), with "run_id" set; 1 when no such run. */
int bench_store_get(struct bench_store *s, int64_t id, json_object **receipt, struct errbuf *e);

struct bench_query {
    const char *model;   /* a model id or a prefix of one; NULL: any */
    const char *host;    /* NULL: any */
    const char *config;  /* the run's configuration key (bench_receipt_config); NULL: any */
    int64_t sweep_id;    /* 0: any */
    int64_t before_id;   /* only runs with a smaller id; 0: no limit */
    int last;            /* only the newest `last`; 0: all */
};
/* The receipts matching q, oldest first, as a JSON array (a new reference). */
int bench_store_list(struct bench_store *s, const struct bench_query *q, json_object **runs,
                     struct errbuf *e);
/* The newest run's id (0 when the history is empty). */
int bench_store_latest(struct bench_store *s, int64_t *id, struct errbuf *e);
/* PRAGMA integrity_check: 0 when it says ok, else -1 with its first complaint. */
int bench_store_integrity(struct bench_store *s, struct errbuf *e);

#endif
