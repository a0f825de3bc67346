/* The benchmark history's store: schema creation and migration from a v1 file, receipts
 * written whole or not at all (also by a process SIGKILLed mid-write), concurrent writers
 * losing nothing, and the comparisons bench check judges by. Real SQLite files under
 * build/test-tmp. */
#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl/bench_compare.h"
#include "ctl/bench_plot.h"
#include "ctl/bench_receipt.h"
#include "ctl/bench_store.h"
#include "tests/check.h"

#define DIR "build/test-tmp/bench_store"

/* A receipt with generated_tps repeats v[0..n) and `extra` more repeats of a second figure
 * (a big receipt takes long to write, so a kill lands inside its transaction). */
static json_object *make_receipt(const char *host, const double *v, int n, int extra)
{
    json_object *r = json_object_new_object();
    json_object_object_add(r, "time_unix", json_object_new_double((double)time(NULL)));
    json_object_object_add(r, "time", json_object_new_string("2026-01-01T00:00:00Z"));
    json_object_object_add(r, "mode", json_object_new_string("in-process"));
    json_object_object_add(r, "config", json_object_new_string("mode=in-process threads=1"));
    json_object_object_add(r, "kernel_set", json_object_new_string("scalar"));
    json_object *h = json_object_new_object();
    json_object_object_add(h, "name", json_object_new_string(host));
    json_object_object_add(r, "host", h);
    json_object *m = json_object_new_object();
    json_object_object_add(m, "id", json_object_new_string("ab12"));
    json_object_object_add(r, "model", m);
    json_object_object_add(r, "figures", json_object_new_object());
    bench_receipt_add_figure(r, "generated_tps", v, n);
    if (extra > 0) {
        double *x = malloc((size_t)extra * sizeof *x);
        for (int i = 0; x && i < extra; i++)
            x[i] = i;
        bench_receipt_add_figure(r, "read_gbps", x, x ? extra : 0);
        free(x);
    }
    return r;
}

static long long count_rows(const char *path, const char *sql)
{
    sqlite3 *db;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

static void remove_db(const char *path)
{
    char p[512];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static void test_schema(void)
{
    const char *path = DIR "/fresh/sub/bench.db";   /* directories made on open */
    remove_db(path);
    struct bench_store st;
    struct errbuf e = {{0}};
    CHECK(bench_store_open(&st, path, &e) == 0, "open: %s", e.msg);
    int v = -1;
    CHECK(bench_store_schema_version(&st, &v, &e) == 0 && v == BENCH_STORE_SCHEMA_VERSION, "version %d", v);
    bench_store_close(&st);
    CHECK(count_rows(path, "SELECT count(*) FROM sqlite_master WHERE name IN ('runs','figures','sweeps')") == 3,
          "tables");
    CHECK(count_rows(path, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'sweep_id'") == 1,
          "sweep_id column");
    sqlite3 *db;
    char mode[16] = "";
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
            snprintf(mode, sizeof mode, "%s", sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
    CHECK(strcmp(mode, "wal") == 0, "journal mode %s", mode);
    /* reopening an up-to-date file changes nothing */
    CHECK(bench_store_open(&st, path, &e) == 0, "reopen: %s", e.msg);
    bench_store_close(&st);

    /* a file from a newer bitnetctl is refused, not damaged */
    const char *newer = DIR "/newer.db";
    remove_db(newer);
    if (sqlite3_open(newer, &db) == SQLITE_OK)
        sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(bench_store_open(&st, newer, &e) < 0 && strstr(e.msg, "newer"), "newer schema: %s", e.msg);
    bench_store_close(&st);
    CHECK(count_rows(newer, "PRAGMA user_version") == 99, "newer file left as it was");

    /* an unusable path names itself */
    CHECK(bench_store_open(&st, "/proc/nope/bench.db", &e) < 0 && strstr(e.msg, "/proc/nope"), "bad path: %s", e.msg);
    bench_store_close(&st);
}

/* A database written by schema 1 (its rows written as a v1 bitnetctl wrote them, without
 * this build's code) opens in this build with its runs intact, and takes new ones. */
static void test_migration(void)
{
    const char *path = DIR "/v1.db";
    remove_db(path);
    struct bench_store st;
    struct errbuf e = {{0}};
    CHECK(bench_store_open_at(&st, path, 1, &e) == 0, "open at v1: %s", e.msg);
    int v = -1;
    CHECK(bench_store_schema_version(&st, &v, &e) == 0 && v == 1, "v1 version %d", v);
    bench_store_close(&st);
    CHECK(count_rows(path, "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'sweep_id'") == 0,
          "v1 has no sweep_id");
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "sqlite open");
    const char *v1_rows =
        "INSERT INTO runs(id, created_unix, host, model_id, mode, config, kernel_set, build_commit, receipt) "
        "VALUES (1, 1.5e9, 'old-host', 'ab12', 'in-process', 'c', 'avx2', 'abc', "
        "'{\"time_unix\":1.5e9,\"host\":{\"name\":\"old-host\"},\"figures\":{\"generated_tps\":[10,11,12]}}');"
        "INSERT INTO figures VALUES (1, 'generated_tps', 0, 10), (1, 'generated_tps', 1, 11), "
        "(1, 'generated_tps', 2, 12);";
    char *msg = NULL;
    CHECK(sqlite3_exec(db, v1_rows, NULL, NULL, &msg) == SQLITE_OK, "v1 rows: %s", msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(db);

    CHECK(bench_store_open(&st, path, &e) == 0, "migrate: %s", e.msg);
    CHECK(bench_store_schema_version(&st, &v, &e) == 0 && v == 2, "migrated version %d", v);
    json_object *r = NULL;
    CHECK(bench_store_get(&st, 1, &r, &e) == 0, "old run after migration: %s", e.msg);
    struct figure_stats s = {0};
    CHECK(r && bench_figure_stats(r, "generated_tps", &s) == 0 && s.median == 11 && s.n == 3, "old figures");
    json_object_put(r);
    int64_t sweep = 0, id = 0;
    CHECK(bench_store_new_sweep(&st, "threads=1,2", &sweep, &e) == 0 && sweep > 0, "sweep: %s", e.msg);
    double tps[] = {1, 2};
    json_object *nr = make_receipt("h", tps, 2, 0);
    json_object *sw = json_object_new_object();
    json_object_object_add(sw, "id", json_object_new_int64(sweep));
    json_object_object_add(nr, "sweep", sw);
    CHECK(bench_store_insert(&st, nr, &id, &e) == 0 && id == 2, "insert after migration: %s", e.msg);
    json_object_put(nr);
    json_object *runs = NULL;
    struct bench_query q = {.sweep_id = sweep};
    CHECK(bench_store_list(&st, &q, &runs, &e) == 0 && json_object_array_length(runs) == 1, "by sweep");
    json_object_put(runs);
    struct bench_query qh = {.host = "old-host"};
    CHECK(bench_store_list(&st, &qh, &runs, &e) == 0 && json_object_array_length(runs) == 1, "by host");
    json_object_put(runs);
    CHECK(bench_store_integrity(&st, &e) == 0, "integrity: %s", e.msg);
    bench_store_close(&st);
    CHECK(count_rows(path, "SELECT count(*) FROM runs WHERE sweep_id IS NULL") == 1, "old run has no sweep");
}

/* A receipt that cannot be stored entirely leaves no trace: a figure that is not a
 * number fails the insert after the run's row was written. */
static void test_all_or_nothing(void)
{
    const char *path = DIR "/atomic.db";
    remove_db(path);
    struct bench_store st;
    struct errbuf e = {{0}};
    CHECK(bench_store_open(&st, path, &e) == 0, "open: %s", e.msg);
    double tps[] = {5, 6, 7};
    json_object *r = make_receipt("h", tps, 3, 0);
    json_object *bad = json_object_new_array();
    json_object_array_add(bad, json_object_new_string("fast"));
    json_object_object_add(bench_json_at(r, "figures"), "prompt_tps", bad);
    int64_t id = 0;
    CHECK(bench_store_insert(&st, r, &id, &e) < 0 && strstr(e.msg, "prompt_tps"), "bad figure refused: %s", e.msg);
    json_object_put(r);
    bench_store_close(&st);
    CHECK(count_rows(path, "SELECT count(*) FROM runs") == 0, "no run row left");
    CHECK(count_rows(path, "SELECT count(*) FROM figures") == 0, "no figure rows left");
}

#define WRITERS 4
#define PER_WRITER 50

static void test_concurrent_writers(void)
{
    const char *path = DIR "/concurrent.db";
    remove_db(path);
    pid_t kids[WRITERS];
    /* every writer creates and migrates the file itself: the first open races too */
    for (int w = 0; w < WRITERS; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            struct bench_store st;
            struct errbuf e = {{0}};
            if (bench_store_open(&st, path, &e) < 0) {
                fprintf(stderr, "writer %d: %s\n", w, e.msg);
                _exit(1);
            }
            for (int i = 0; i < PER_WRITER; i++) {
                double v[3] = {w, i, 1};
                json_object *r = make_receipt("h", v, 3, 20);
                int64_t id;
                int rc = bench_store_insert(&st, r, &id, &e);
                json_object_put(r);
                if (rc < 0) {
                    fprintf(stderr, "writer %d, receipt %d: %s\n", w, i, e.msg);
                    _exit(1);
                }
            }
            bench_store_close(&st);
            _exit(0);
        }
    }
    for (int w = 0; w < WRITERS; w++) {
        int status = -1;
        waitpid(kids[w], &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d status %d", w, status);
    }
    CHECK(count_rows(path, "SELECT count(*) FROM runs") == WRITERS * PER_WRITER, "runs: %lld",
          count_rows(path, "SELECT count(*) FROM runs"));
    CHECK(count_rows(path, "SELECT count(*) FROM figures") == WRITERS * PER_WRITER * 23, "figures: %lld",
          count_rows(path, "SELECT count(*) FROM figures"));
    /* each writer's receipts all there, each once */
    CHECK(count_rows(path, "SELECT count(DISTINCT a.value || '/' || b.value) FROM figures a JOIN figures b "
                           "ON a.run_id = b.run_id AND a.name = 'generated_tps' AND a.idx = 0 "
                           "AND b.name = 'generated_tps' AND b.idx = 1") == WRITERS * PER_WRITER,
          "every (writer, receipt) once");
    struct bench_store st;
    struct errbuf e = {{0}};
    CHECK(bench_store_open(&st, path, &e) == 0 && bench_store_integrity(&st, &e) == 0, "integrity: %s", e.msg);
    bench_store_close(&st);
}

#define BIG_FIGURE 20000

/* A writer SIGKILLed at random moments, mostly inside a receipt's transaction (each has
 * 20000 figure rows): the file stays sound and every run row has all its figures. */
static void test_killed_writer(void)
{
    const char *path = DIR "/killed.db";
    remove_db(path);
    struct bench_store st;
    struct errbuf e = {{0}};
    CHECK(bench_store_open(&st, path, &e) == 0, "open: %s", e.msg);
    bench_store_close(&st);
    srand((unsigned)getpid());
    for (int round = 0; round < 6; round++) {
        int ready[2];
        if (pipe(ready) < 0)
            break;
        pid_t kid = fork();
        if (kid == 0) {
            close(ready[0]);
            if (bench_store_open(&st, path, &e) < 0)
                _exit(1);
            json_object *r;
            double v[2] = {1, 2};
            r = make_receipt("h", v, 2, BIG_FIGURE);
            if (write(ready[1], "r", 1) != 1)
                _exit(1);
            for (;;) {
                int64_t id;
                if (bench_store_insert(&st, r, &id, &e) < 0)
                    _exit(1);
            }
        }
        close(ready[1]);
        char c;
        CHECK(read(ready[0], &c, 1) == 1, "writer %d started", round);
        close(ready[0]);
        struct timespec ts = {0, (long)(20 + rand() % 150) * 1000000L};
        nanosleep(&ts, NULL);
        kill(kid, SIGKILL);
        int status;
        waitpid(kid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "round %d: killed (status %d)", round, status);
    }
    CHECK(bench_store_open(&st, path, &e) == 0, "open after kills: %s", e.msg);
    CHECK(bench_store_integrity(&st, &e) == 0, "integrity after kills: %s", e.msg);
    bench_store_close(&st);
    CHECK(count_rows(path, "SELECT count(*) FROM runs r WHERE (SELECT count(*) FROM figures f "
                           "WHERE f.run_id = r.id) != 2 + " "20000") == 0,
          "a run row without all its figures");
    CHECK(count_rows(path, "SELECT count(*) FROM figures WHERE run_id NOT IN (SELECT id FROM runs)") == 0,
          "figures without their run");
    printf("killed writer: %lld whole receipts survived 6 kills\n", count_rows(path, "SELECT count(*) FROM runs"));
}

static bool regressed(json_object *a, json_object *b, double max, const char *figure)
{
    struct figure_cmp c[32];
    bool same;
    int n = bench_compare(a, b, c, 32, &same);
    for (int i = 0; i < n; i++)
        if (strcmp(c[i].info->name, figure) == 0)
            return bench_is_regression(&c[i], max);
    return false;
}

static void test_compare(void)
{
    double base[] = {100, 101, 102}, slower[] = {90, 91, 92}, noisy[] = {85, 99, 104},
           slightly[] = {96, 96.5, 97}, faster[] = {110, 111, 112};
    json_object *a = make_receipt("h1", base, 3, 0);
    json_object *b1 = make_receipt("h1", slower, 3, 0), *b2 = make_receipt("h1", noisy, 3, 0);
    json_object *b3 = make_receipt("h1", slightly, 3, 0), *b4 = make_receipt("h1", faster, 3, 0);
    json_object *other = make_receipt("h2", slower, 3, 0);
    CHECK(regressed(a, b1, 0.05, "generated_tps"), "10%% slower, ranges apart: a regression");
    CHECK(!regressed(a, b2, 0.05, "generated_tps"), "median 2%% lower within the spread: noise");
    CHECK(!regressed(a, b3, 0.05, "generated_tps"), "4.5%% slower under a 5%% threshold");
    CHECK(regressed(a, b3, 0.03, "generated_tps"), "4.5%% slower over a 3%% threshold");
    CHECK(!regressed(a, b4, 0.05, "generated_tps"), "faster is no regression");
    CHECK(!regressed(a, other, 0.05, "generated_tps"), "absolute figures of another host are not judged");
    /* a ratio to the host's bandwidth is judged across hosts */
    double r_base[] = {0.8, 0.81}, r_worse[] = {0.6, 0.61};
    bench_receipt_add_figure(a, "roofline_ratio", r_base, 2);
    bench_receipt_add_figure(other, "roofline_ratio", r_worse, 2);
    CHECK(regressed(a, other, 0.05, "roofline_ratio"), "roofline ratio across hosts");
    /* lower is better for times */
    double t_base[] = {1.0, 1.01}, t_worse[] = {1.2, 1.21};
    bench_receipt_add_figure(a, "ttft_s", t_base, 2);
    bench_receipt_add_figure(b4, "ttft_s", t_worse, 2);
    CHECK(regressed(a, b4, 0.05, "ttft_s"), "a longer time to first token");
    struct figure_cmp c[32];
    bool same;
    int n = bench_compare(a, b1, c, 32, &same);
    CHECK(n >= 1 && same && c[0].ratio > 0.90 && c[0].ratio < 0.91 && c[0].beyond_noise, "ratio %g", n ? c[0].ratio : 0);
    json_object_put(a);
    json_object_put(b1);
    json_object_put(b2);
    json_object_put(b3);
    json_object_put(b4);
    json_object_put(other);
}

static void test_plot(void)
{
    struct plot_series s[2] = {{.label = "host <a> & b"}, {.label = "two"}};
    for (int i = 0; i < 5; i++) {
        struct plot_point p = {.x = 1000 + 60 * i, .y = 10 + i, .lo = 9 + i, .hi = 11 + i, .run_id = i + 1};
        CHECK(plot_series_add(&s[i % 2], &p) == 0, "add");
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    struct errbuf e = {{0}};
    struct plot_axes axes = {.title = "t", .x_label = "x (s)", .y_label = "y (tok/s)", .x_is_time = true};
    CHECK(f && bench_plot_svg(f, "mem", &axes, s, 2, &e) == 0, "plot: %s", e.msg);
    if (f)
        fclose(f);
    int points = 0, bars = 0;
    for (const char *p = buf; p && (p = strstr(p, "<circle class=\"point\"")); p++)
        points++;
    for (const char *p = buf; p && (p = strstr(p, "class=\"errorbar\"")); p++)
        bars++;
    CHECK(points == 5 && bars == 5, "points %d, error bars %d", points, bars);
    CHECK(buf && strstr(buf, "host &lt;a&gt; &amp; b") && !strstr(buf, "<script"), "escaped legend, no script");
    CHECK(buf && strstr(buf, "y (tok/s)") && strstr(buf, "x (s)"), "axis labels");
    free(buf);
    free(s[0].points);
    free(s[1].points);
}

int main(void)
{
    if (mkdir("build/test-tmp", 0755) < 0 && errno != EEXIST)
        perror("build/test-tmp");
    if (mkdir(DIR, 0755) < 0 && errno != EEXIST)
        perror(DIR);
    test_schema();
    test_migration();
    test_all_or_nothing();
    test_concurrent_writers();
    test_killed_writer();
    test_compare();
    test_plot();
    return check_done("test_bench_store");
}
