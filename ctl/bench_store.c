/* The benchmark history in SQLite. Every write is one IMMEDIATE transaction, so that a
 * writer takes the lock before it reads anything (no deadlock between two readers that
 * both want to upgrade) and a process killed mid-way leaves the whole receipt or none;
 * WAL lets `bench history` read while a bench writes, and busy_timeout makes concurrent
 * writers wait their turn instead of failing. */
#include "ctl/bench_store.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Long enough for any other writer's transaction (a receipt is a few hundred rows), short
 * enough that a wedged database is reported rather than waited on forever. */
#define BENCH_STORE_BUSY_MS 30000

int bench_store_default_path(char *out, size_t cap, struct errbuf *e)
{
    const char *state = getenv("XDG_STATE_HOME");
    int n;
    if (state && state[0] == '/') {
        n = snprintf(out, cap, "%s/bitnetd/bench.db", state);
    } else {
        const char *home = getenv("HOME");
        if (!home || !home[0])
            return err_set(e, "bench history: neither XDG_STATE_HOME nor HOME is set (give --db PATH)");
        n = snprintf(out, cap, "%s/.local/state/bitnetd/bench.db", home);
    }
    if (n < 0 || (size_t)n >= cap)
        return err_set(e, "bench history: the default database path is too long");
    return 0;
}

/* mkdir -p of the directories above path. */
static int make_parents(const char *path, struct errbuf *e)
{
    char dir[4096];
    if (strlen(path) >= sizeof dir)
        return err_set(e, "%s: path too long", path);
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
            return err_set(e, "%s: cannot create directory %s: %s", path, dir, strerror(errno));
        *p = saved;
        if (saved == '\0')
            break;
    }
    return 0;
}

static int db_error(struct bench_store *s, struct errbuf *e, const char *what)
{
    return err_set(e, "%s: %s: %s", s->path, what, s->db ? sqlite3_errmsg(s->db) : "no database");
}

static int exec_sql(struct bench_store *s, const char *sql, struct errbuf *e, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, "%s: %s: %s", s->path, what, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int bench_store_schema_version(struct bench_store *s, int *version, struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "reading the schema version");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_error(s, e, "reading the schema version");
}

/* Each migration takes the schema from version i to i + 1, in the transaction that
 * also sets user_version, so a database is always at exactly one version. */
static const char *const migrations[BENCH_STORE_SCHEMA_VERSION] = {
    /* 0 -> 1: runs and their figures */
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  created_unix REAL NOT NULL,"
    "  host TEXT NOT NULL,"
    "  model_id TEXT NOT NULL,"
    "  mode TEXT NOT NULL,"
    "  config TEXT NOT NULL,"
    "  kernel_set TEXT NOT NULL,"
    "  build_commit TEXT NOT NULL,"
    "  receipt TEXT NOT NULL);"
    "CREATE TABLE figures ("
    "  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  idx INTEGER NOT NULL,"
    "  value REAL NOT NULL,"
    "  PRIMARY KEY (run_id, name, idx));",
    /* 1 -> 2: sweeps (bench sweep tags its runs), and an index for history's filters */
    "CREATE TABLE sweeps ("
    "  id INTEGER PRIMARY KEY,"
    "  created_unix REAL NOT NULL,"
    "  settings TEXT NOT NULL);"
    "ALTER TABLE runs ADD COLUMN sweep_id INTEGER REFERENCES sweeps(id);"
    "CREATE INDEX runs_by_model_host ON runs(model_id, host, id);",
};

static int migrate(struct bench_store *s, int target, struct errbuf *e)
{
    if (exec_sql(s, "BEGIN IMMEDIATE", e, "starting the schema migration") < 0)
        return -1;
    /* read inside the transaction: another process may have migrated meanwhile */
    int version;
    if (bench_store_schema_version(s, &version, e) < 0)
        goto fail;
    if (version > BENCH_STORE_SCHEMA_VERSION) {
        err_set(e, "%s: written by a newer bitnetctl (schema %d; this one knows up to %d)",
                s->path, version, BENCH_STORE_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < target; v++) {
        char what[64], set[64];
        snprintf(what, sizeof what, "migrating the schema from %d to %d", v, v + 1);
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        if (exec_sql(s, migrations[v], e, what) < 0 || exec_sql(s, set, e, what) < 0)
            goto fail;
    }
    if (exec_sql(s, "COMMIT", e, "committing the schema migration") < 0)
        goto fail;
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* WAL mode is a property of the file, set once by whoever opens it first; switching needs
 * an exclusive lock, and SQLite reports a conflict there as SQLITE_BUSY without calling
 * the busy handler, so writers that race to create the file retry here. */
static int set_wal(struct bench_store *s, struct errbuf *e)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        const char *mode = NULL;
        if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
            mode = (const char *)sqlite3_column_text(st, 0);
        bool wal = mode && strcmp(mode, "wal") == 0;
        sqlite3_finalize(st);
        if (wal)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED && rc != SQLITE_ROW)
            return db_error(s, e, "setting WAL mode");
        if (rc == SQLITE_ROW)
            return err_set(e, "%s: setting WAL mode: the file stays in mode %s", s->path, mode ? mode : "?");
        if (waited_ms >= BENCH_STORE_BUSY_MS)
            return db_error(s, e, "setting WAL mode");
        sqlite3_sleep(10);
    }
}

int bench_store_open_at(struct bench_store *s, const char *path, int version, struct errbuf *e)
{
    memset(s, 0, sizeof *s);
    if (strlen(path) >= sizeof s->path)
        return err_set(e, "%s: path too long", path);
    strcpy(s->path, path);
    if (version < 1 || version > BENCH_STORE_SCHEMA_VERSION)
        return err_set(e, "%s: no schema version %d", path, version);
    if (make_parents(path, e) < 0)
        return -1;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        db_error(s, e, "cannot open");
        bench_store_close(s);
        return -1;
    }
    sqlite3_busy_timeout(s->db, BENCH_STORE_BUSY_MS);
    sqlite3_extended_result_codes(s->db, 1);
    /* FULL: a committed receipt survives a power cut too, which a history is for */
    if (set_wal(s, e) < 0 ||
        exec_sql(s, "PRAGMA synchronous = FULL", e, "setting synchronous") < 0 ||
        exec_sql(s, "PRAGMA foreign_keys = ON", e, "enabling foreign keys") < 0 ||
        migrate(s, version, e) < 0) {
        bench_store_close(s);
        return -1;
    }
    return 0;
}

int bench_store_open(struct bench_store *s, const char *path, struct errbuf *e)
{
    return bench_store_open_at(s, path, BENCH_STORE_SCHEMA_VERSION, e);
}

void bench_store_close(struct bench_store *s)
{
    if (s->db)
        sqlite3_close(s->db);
    s->db = NULL;
}

static const char *json_str(json_object *o, const char *key, const char *fallback)
{
    json_object *v;
    if (o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return fallback;
}

int bench_store_new_sweep(struct bench_store *s, const char *settings, int64_t *sweep_id,
                          struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO sweeps(created_unix, settings) "
                                  "VALUES ((julianday('now') - 2440587.5) * 86400.0, ?1)", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "preparing a sweep");
    sqlite3_bind_text(st, 1, settings, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(s, e, "recording a sweep");
    *sweep_id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

static int insert_figures(struct bench_store *s, int64_t run_id, json_object *figures,
                          struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "INSERT INTO figures(run_id, name, idx, value) VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "preparing figures");
    int rc = 0;
    json_object_object_foreach(figures, name, values) {
        if (!json_object_is_type(values, json_type_array)) {
            rc = err_set(e, "%s: receipt figure %s is not an array of repeats", s->path, name);
            break;
        }
        size_t n = json_object_array_length(values);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            json_object *v = json_object_array_get_idx(values, i);
            if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int)) {
                rc = err_set(e, "%s: receipt figure %s[%zu] is not a number", s->path, name, i);
                break;
            }
            sqlite3_reset(st);
            sqlite3_bind_int64(st, 1, run_id);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(st, 3, (sqlite3_int64)i);
            sqlite3_bind_double(st, 4, json_object_get_double(v));
            if (sqlite3_step(st) != SQLITE_DONE)
                rc = db_error(s, e, "storing a figure");
        }
        if (rc)
            break;
    }
    sqlite3_finalize(st);
    return rc;
}

int bench_store_insert(struct bench_store *s, json_object *receipt, int64_t *run_id,
                       struct errbuf *e)
{
    json_object *figures, *model = NULL, *host = NULL, *build = NULL, *t, *sweep = NULL;
    if (!json_object_object_get_ex(receipt, "figures", &figures) ||
        !json_object_is_type(figures, json_type_object))
        return err_set(e, "%s: receipt without figures", s->path);
    if (!json_object_object_get_ex(receipt, "time_unix", &t))
        return err_set(e, "%s: receipt without time_unix", s->path);
    json_object_object_get_ex(receipt, "model", &model);
    json_object_object_get_ex(receipt, "host", &host);
    json_object_object_get_ex(receipt, "build", &build);
    json_object_object_get_ex(receipt, "sweep", &sweep);
    json_object *sweep_id = NULL;
    if (sweep)
        json_object_object_get_ex(sweep, "id", &sweep_id);
    /* the stored text must not carry a run id: the row's own id is the truth */
    json_object_object_del(receipt, "run_id");
    const char *text = json_object_to_json_string_ext(receipt, JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE);
    if (exec_sql(s, "BEGIN IMMEDIATE", e, "starting a receipt") < 0)
        return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO runs(created_unix, host, model_id, mode, config, kernel_set, "
                           "build_commit, receipt, sweep_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_error(s, e, "preparing a receipt");
        goto fail;
    }
    sqlite3_bind_double(st, 1, json_object_get_double(t));
    sqlite3_bind_text(st, 2, json_str(host, "name", "unknown"), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, json_str(model, "id", "unknown"), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, json_str(receipt, "mode", "unknown"), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, json_str(receipt, "config", ""), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, json_str(receipt, "kernel_set", "unknown"), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, json_str(build, "commit", "unknown"), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, text, -1, SQLITE_TRANSIENT);
    if (sweep_id)
        sqlite3_bind_int64(st, 9, json_object_get_int64(sweep_id));
    else
        sqlite3_bind_null(st, 9);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        db_error(s, e, "storing a receipt");
        goto fail;
    }
    int64_t id = sqlite3_last_insert_rowid(s->db);
    if (insert_figures(s, id, figures, e) < 0)
        goto fail;
    if (exec_sql(s, "COMMIT", e, "committing a receipt") < 0)
        goto fail;
    *run_id = id;
    json_object_object_add(receipt, "run_id", json_object_new_int64(id));
    return 0;
fail:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* The receipt in a row, with the run id of the row itself. */
static int receipt_of_row(struct bench_store *s, sqlite3_stmt *st, json_object **out,
                          struct errbuf *e)
{
    int64_t id = sqlite3_column_int64(st, 0);
    const char *text = (const char *)sqlite3_column_text(st, 1);
    json_object *r = text ? json_tokener_parse(text) : NULL;
    if (!r || !json_object_is_type(r, json_type_object)) {
        json_object_put(r);
        return err_set(e, "%s: run %lld: its receipt is not a JSON object", s->path, (long long)id);
    }
    json_object_object_add(r, "run_id", json_object_new_int64(id));
    *out = r;
    return 0;
}

int bench_store_get(struct bench_store *s, int64_t id, json_object **receipt, struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT id, receipt FROM runs WHERE id = ?1", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "reading a run");
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st), ret;
    if (rc == SQLITE_ROW)
        ret = receipt_of_row(s, st, receipt, e);
    else if (rc == SQLITE_DONE)
        ret = 1;
    else
        ret = db_error(s, e, "reading a run");
    sqlite3_finalize(st);
    return ret;
}

int bench_store_list(struct bench_store *s, const struct bench_query *q, json_object **runs,
                     struct errbuf *e)
{
    /* newest `last` first in the inner query, oldest first in what is returned */
    const char *sql =
        "SELECT id, receipt FROM (SELECT id, receipt FROM runs"
        " WHERE (?1 IS NULL OR substr(model_id, 1, length(?1)) = ?1)"
        " AND (?2 IS NULL OR host = ?2) AND (?3 IS NULL OR config = ?3)"
        " AND (?4 = 0 OR sweep_id = ?4) AND (?5 = 0 OR id < ?5)"
        " ORDER BY id DESC LIMIT ?6) ORDER BY id";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "listing runs");
    if (q->model)
        sqlite3_bind_text(st, 1, q->model, -1, SQLITE_TRANSIENT);
    if (q->host)
        sqlite3_bind_text(st, 2, q->host, -1, SQLITE_TRANSIENT);
    if (q->config)
        sqlite3_bind_text(st, 3, q->config, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, q->sweep_id);
    sqlite3_bind_int64(st, 5, q->before_id);
    sqlite3_bind_int64(st, 6, q->last > 0 ? q->last : -1);
    json_object *arr = json_object_new_array();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_object *r;
        if (receipt_of_row(s, st, &r, e) < 0) {
            sqlite3_finalize(st);
            json_object_put(arr);
            return -1;
        }
        json_object_array_add(arr, r);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        json_object_put(arr);
        return db_error(s, e, "listing runs");
    }
    *runs = arr;
    return 0;
}

int bench_store_latest(struct bench_store *s, int64_t *id, struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(id), 0) FROM runs", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "finding the latest run");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_error(s, e, "finding the latest run");
}

int bench_store_integrity(struct bench_store *s, struct errbuf *e)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
        return db_error(s, e, "integrity check");
    int rc = sqlite3_step(st), ret = 0;
    const char *first = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!first)
        ret = db_error(s, e, "integrity check");
    else if (strcmp(first, "ok") != 0)
        ret = err_set(e, "%s: integrity check: %s", s->path, first);
    sqlite3_finalize(st);
    return ret;
}
