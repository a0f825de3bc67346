#include "worker/tp_group.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "worker/log.h"

/* Pause instructions a waiting rank spins before it sleeps: about half a millisecond,
 * longer than the gaps between gathers inside a step, much shorter than a step. */
#define SPIN_ITERS 20000
/* The head's logits are gathered this many rows at a time at least. */
#define LOGIT_ROWS_PER_GATHER 16
#define LOAD_ERROR_LEN 512

enum { CMD_NONE, CMD_STEP };

struct tp_shared {
    _Atomic uint32_t arrived, gen, sleepers;
    int32_t cmd;
    int32_t size, max_rows, n_embd;
    int32_t n_rows, n_logit_rows;
    uint64_t load_len;
    int32_t load_failed[TP_MAX_RANKS];
    char load_error[TP_MAX_RANKS][LOAD_ERROR_LEN];
    /* byte offsets in the region */
    uint64_t off_tables, off_x, off_load, off_buf[2];
    uint64_t buf_floats;
    uint64_t bytes;
};

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int *tables(const struct tp_group *g)
{
    return (int *)(void *)((char *)g->sh + g->sh->off_tables);
}

/* Whether the other ranks can still arrive: the leader's children have not exited, the
 * follower's parent is the leader. When not, says who is gone in e. */
static bool peers_alive(struct tp_group *g, struct errbuf *e)
{
    if (g->rank != 0) {
        if (getppid() != g->leader) {
            err_set(e, "the leader (pid %d) is gone", (int)g->leader);
            return false;
        }
        return true;
    }
    for (int r = 1; r < g->size; r++) {
        int status;
        if (g->followers[r] <= 0)
            continue;
        if (waitpid(g->followers[r], &status, WNOHANG) != g->followers[r])
            continue;
        const char *why = g->sh->load_failed[r] ? g->sh->load_error[r] : "";
        if (WIFSIGNALED(status))
            err_set(e, "tensor-parallel rank %d (pid %d) was killed by signal %d%s%s", r,
                    (int)g->followers[r], WTERMSIG(status), *why ? ": " : "", why);
        else
            err_set(e, "tensor-parallel rank %d (pid %d) exited with status %d%s%s", r,
                    (int)g->followers[r], WEXITSTATUS(status), *why ? ": " : "", why);
        g->followers[r] = 0;
        return false;
    }
    return true;
}

/* Every rank arrives; the last one opens the next generation. -1 (e says why) when a
 * rank that has not arrived is gone. */
static int barrier(struct tp_group *g, struct errbuf *e)
{
    struct tp_shared *sh = g->sh;
    uint32_t seen = atomic_load(&sh->gen);
    if (atomic_fetch_add(&sh->arrived, 1) + 1 == (uint32_t)g->size) {
        atomic_store(&sh->arrived, 0);
        atomic_fetch_add(&sh->gen, 1);
        /* a sleeper counted before our increment of gen is woken; one counted after it
         * finds gen changed when its futex call compares */
        if (atomic_load(&sh->sleepers))
            syscall(SYS_futex, &sh->gen, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
        return 0;
    }
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&sh->gen, memory_order_acquire) != seen)
            return 0;
        cpu_relax();
    }
    for (;;) {
        atomic_fetch_add(&sh->sleepers, 1);
        struct timespec ts = {0, TP_CHECK_MS * 1000000L};
        syscall(SYS_futex, &sh->gen, FUTEX_WAIT, seen, &ts, NULL, 0);
        atomic_fetch_sub(&sh->sleepers, 1);
        if (atomic_load(&sh->gen) != seen)
            return 0;
        if (!peers_alive(g, e))
            return -1;
        if (g->tick)
            g->tick(g->tick_ctx);
    }
}

/* Inside a step nothing can be undone: a leader whose follower died ends the process
 * (bitnetd replays the stage), a follower whose leader died just ends. */
static void barrier_or_exit(struct tp_group *g)
{
    struct errbuf e;
    if (barrier(g, &e) == 0)
        return;
    worker_log(g->log_id, "%s; ending this stage so that bitnetd restarts it", e.msg);
    _exit(g->rank == 0 ? TP_EXIT_RANK_LOST : 1);
}

static int map_region(struct tp_group *g, size_t bytes, struct errbuf *e)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd, 0);
    if (p == MAP_FAILED)
        return err_set(e, "tensor-parallel region: mmap of %zu bytes: %s", bytes, strerror(errno));
    g->sh = p;
    g->map_bytes = bytes;
    return 0;
}

static void set_buffers(struct tp_group *g)
{
    for (int i = 0; i < 2; i++)
        g->buf[i] = (float *)(void *)((char *)g->sh + g->sh->off_buf[i]);
    g->buf_floats = g->sh->buf_floats;
}

int tp_group_create(struct tp_group *g, int size, int max_rows, int n_embd, int row_width,
                    int widest, const void *load, size_t load_len, const char *log_id,
                    struct errbuf *e)
{
    memset(g, 0, sizeof *g);
    g->memfd = -1;
    g->log_id = log_id;
    if (size < 2 || size > TP_MAX_RANKS)
        return err_set(e, "tensor parallelism over %d ranks: 2 to %d", size, TP_MAX_RANKS);
    g->size = size;
    g->leader = getpid();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t buf_floats = (size_t)max_rows * (size_t)row_width;
    /* rows of logits are gathered in chunks; the buffers take at least a few whole rows
     * of the widest vector */
    if (buf_floats < (size_t)LOGIT_ROWS_PER_GATHER * (size_t)widest)
        buf_floats = (size_t)LOGIT_ROWS_PER_GATHER * (size_t)widest;
    struct tp_shared head = {.size = size, .max_rows = max_rows, .n_embd = n_embd,
                             .load_len = load_len, .buf_floats = buf_floats};
    size_t at = round_up(sizeof head, page);
    head.off_tables = at;
    at = round_up(at + 3 * (size_t)max_rows * sizeof(int), page);
    head.off_x = at;
    at = round_up(at + (size_t)max_rows * n_embd * sizeof(float), page);
    head.off_load = at;
    at = round_up(at + load_len, page);
    for (int i = 0; i < 2; i++) {
        head.off_buf[i] = at;
        at = round_up(at + buf_floats * sizeof(float), page);
    }
    head.bytes = at;
    g->memfd = memfd_create("bitnet-tp", MFD_CLOEXEC);
    if (g->memfd < 0)
        return err_set(e, "tensor-parallel region: memfd_create: %s", strerror(errno));
    /* pages are allocated where first touched: the gather buffers by whoever writes first */
    if (ftruncate(g->memfd, (off_t)head.bytes) != 0) {
        err_set(e, "tensor-parallel region: %zu bytes: %s", (size_t)head.bytes, strerror(errno));
        tp_group_destroy(g);
        return -1;
    }
    if (map_region(g, head.bytes, e) < 0) {
        tp_group_destroy(g);
        return -1;
    }
    memcpy(g->sh, &head, sizeof head);
    memcpy((char *)g->sh + head.off_load, load, load_len);
    set_buffers(g);
    return 0;
}

int tp_group_spawn(struct tp_group *g, const char *program, struct errbuf *e)
{
    pid_t parent = getpid();
    for (int r = 1; r < g->size; r++) {
        char spec[32], id[300];
        snprintf(spec, sizeof spec, "%d:%d", g->memfd, r);
        snprintf(id, sizeof id, "%s.r%d", g->log_id ? g->log_id : "worker", r);
        char *argv[] = {(char *)program, "--tp-follower", spec, "--id", id, NULL};
        pid_t pid = fork();
        if (pid < 0)
            return err_set(e, "tensor-parallel rank %d: fork: %s", r, strerror(errno));
        if (pid == 0) {
            /* only async-signal-safe calls here: the leader has threads */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
            fcntl(g->memfd, F_SETFD, 0); /* the one descriptor the follower keeps */
            execv(program, argv);
            _exit(127);
        }
        g->followers[r] = pid;
    }
    return 0;
}

int tp_group_wait_loaded(struct tp_group *g, struct errbuf *e)
{
    if (barrier(g, e) < 0)
        return err_prefix(e, "while the ranks loaded");
    for (int r = 1; r < g->size; r++)
        if (g->sh->load_failed[r])
            return err_set(e, "tensor-parallel rank %d: %s", r, g->sh->load_error[r]);
    return 0;
}

void tp_group_destroy(struct tp_group *g)
{
    if (g->rank == 0) {
        /* a follower holds nothing to save: its state is the leader's to replay */
        for (int r = 1; r < g->size; r++)
            if (g->followers[r] > 0)
                kill(g->followers[r], SIGKILL);
        for (int r = 1; r < g->size; r++) {
            int status;
            if (g->followers[r] > 0)
                while (waitpid(g->followers[r], &status, 0) < 0 && errno == EINTR)
                    ;
            g->followers[r] = 0;
        }
    }
    if (g->sh)
        munmap(g->sh, g->map_bytes);
    if (g->memfd >= 0)
        close(g->memfd);
    g->sh = NULL;
    g->memfd = -1;
}

bool tp_group_alive(struct tp_group *g, struct errbuf *e)
{
    return peers_alive(g, e);
}

int tp_group_attach(struct tp_group *g, int fd, int rank, const char *log_id, struct errbuf *e)
{
    memset(g, 0, sizeof *g);
    g->memfd = fd;
    g->rank = rank;
    g->log_id = log_id;
    g->leader = getppid();
    struct tp_shared head;
    if (pread(fd, &head, sizeof head, 0) != (ssize_t)sizeof head)
        return err_set(e, "tensor-parallel region (fd %d): cannot read its header", fd);
    if (head.size < 2 || head.size > TP_MAX_RANKS || rank < 1 || rank >= head.size)
        return err_set(e, "tensor-parallel region: rank %d of %d", rank, head.size);
    g->size = head.size;
    if (map_region(g, head.bytes, e) < 0)
        return -1;
    set_buffers(g);
    return 0;
}

const void *tp_group_load_request(const struct tp_group *g, size_t *len)
{
    *len = g->sh->load_len;
    return (const char *)g->sh + g->sh->off_load;
}

int tp_group_report_loaded(struct tp_group *g, const char *error)
{
    if (error) {
        snprintf(g->sh->load_error[g->rank], LOAD_ERROR_LEN, "%s", error);
        g->sh->load_failed[g->rank] = 1;
    }
    struct errbuf e;
    return barrier(g, &e);
}

int tp_group_post_step(struct tp_group *g, const struct tp_step *st, int n_embd)
{
    struct tp_shared *sh = g->sh;
    int n = st->n_rows, max = sh->max_rows;
    if (n < 1 || n > max || st->n_logit_rows < 0 || st->n_logit_rows > max || n_embd != sh->n_embd)
        return -1;
    int *t = tables(g);
    memcpy(t, st->row_slot, (size_t)n * sizeof(int));
    memcpy(t + max, st->row_pos, (size_t)n * sizeof(int));
    memcpy(t + 2 * max, st->logit_rows, (size_t)st->n_logit_rows * sizeof(int));
    memcpy((char *)sh + sh->off_x, st->x, (size_t)n * n_embd * sizeof(float));
    sh->n_rows = n;
    sh->n_logit_rows = st->n_logit_rows;
    sh->cmd = CMD_STEP;
    barrier_or_exit(g);
    return 0;
}

int tp_group_next_step(struct tp_group *g, struct tp_step *st, int n_embd)
{
    struct errbuf e;
    if (barrier(g, &e) < 0)
        return -1;
    struct tp_shared *sh = g->sh;
    if (sh->cmd != CMD_STEP || n_embd != sh->n_embd)
        return 1;
    int *t = tables(g);
    st->n_rows = sh->n_rows;
    st->row_slot = t;
    st->row_pos = t + sh->max_rows;
    st->n_logit_rows = sh->n_logit_rows;
    st->logit_rows = t + 2 * sh->max_rows;
    st->x = (const float *)(const void *)((const char *)sh + sh->off_x);
    return 0;
}

void tp_group_gather(void *ctx, float *buf, int n_rows, int width, int lo, int hi)
{
    struct tp_group *g = ctx;
    int chunk = (int)(g->buf_floats / (size_t)width);
    for (int r0 = 0; r0 < n_rows; r0 += chunk) {
        int rows = n_rows - r0 < chunk ? n_rows - r0 : chunk;
        float *sb = g->buf[g->turn];
        g->turn ^= 1;
        for (int r = 0; r < rows; r++)
            memcpy(sb + (size_t)r * width + lo, buf + (size_t)(r0 + r) * width + lo,
                   (size_t)(hi - lo) * sizeof(float));
        barrier_or_exit(g);
        for (int r = 0; r < rows; r++) {
            float *row = buf + (size_t)(r0 + r) * width;
            const float *all = sb + (size_t)r * width;
            memcpy(row, all, (size_t)lo * sizeof(float));
            memcpy(row + hi, all + hi, (size_t)(width - hi) * sizeof(float));
        }
    }
}
