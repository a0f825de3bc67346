/* bench sweep's own daemons: one bitnetd per placement, started the way the tests start
 * them (a session of its own, so that stopping it takes its workers too). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctl/bench_run.h"
#include "model/clock.h"
#include "proto/wire.h"

/* The daemon a signal must not leave behind: bench sweep runs for minutes, and a daemon
 * started in a session of its own outlives a Ctrl-C'd bitnetctl. The handler kills it
 * (the bench in flight then fails at once, the daemon gone) and notes the signal; the
 * sweep cleans up as after any failure and exits with it. A signal handler can only
 * reach these through static storage; one daemon runs at a time. */
static volatile sig_atomic_t running_daemon_pgid, caught_signal;

static void stop_on_signal(int sig)
{
    if (running_daemon_pgid > 0)
        kill(-(pid_t)running_daemon_pgid, SIGKILL);
    caught_signal = sig;
}

static void guard_signals(pid_t pgid)
{
    running_daemon_pgid = pgid;
    struct sigaction sa = {.sa_handler = stop_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int bench_daemon_interrupted(void)
{
    return caught_signal;
}

/* Empties and removes the run directory this file made (the daemon's sockets stay in it
 * when the daemon was killed). */
static void remove_run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *ent;
        while ((ent = readdir(d)))
            if (strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0)
                unlinkat(dirfd(d), ent->d_name, 0);
        closedir(d);
    }
    rmdir(dir);
}

/* bitnetd beside this executable, as bitnetd finds bitnet-worker beside itself */
static int daemon_binary(char *out, size_t cap, struct errbuf *e)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0)
        return err_set(e, "/proc/self/exe: %s", strerror(errno));
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    if ((size_t)snprintf(out, cap, "%s/bitnetd", slash ? self : ".") >= cap)
        return err_set(e, "%s/bitnetd: path too long", self);
    if (access(out, X_OK) < 0)
        return err_set(e, "%s: %s (bench --workers starts the bitnetd built beside bitnetctl)", out,
                       strerror(errno));
    return 0;
}

/* The last line of the daemon's log, for an error message. */
static void log_tail(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (line[0] != '\n')
            snprintf(out, cap, "%s", line);
    fclose(f);
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n')
        out[n - 1] = '\0';
}

static bool daemon_ready(const struct bench_daemon_proc *d)
{
    struct errbuf e = {{0}};
    Bitnet__StatusRequest req = BITNET__STATUS_REQUEST__INIT;
    Bitnet__Envelope *r = bench_daemon_ask(d->run_dir, BITNET__ENVELOPE__BODY_STATUS_REQUEST, &req,
                                           BITNET__ENVELOPE__BODY_DAEMON_STATUS_REPLY, &e);
    bool ready = r && r->daemon_status_reply->state == BITNET__DAEMON_STATE__DAEMON_STATE_READY;
    wire_free(r);
    return ready;
}

int bench_daemon_start(struct bench_daemon_proc *d, const char *model, int workers,
                       int threads_per_worker, const struct session_opts *so, int ctx,
                       struct errbuf *e)
{
    memset(d, 0, sizeof *d);
    char bin[PATH_MAX];
    if (daemon_binary(bin, sizeof bin, e) < 0)
        return -1;
    /* in /tmp: the daemon's sockets live in its run directory, and a unix socket's path
     * has a short limit */
    snprintf(d->run_dir, sizeof d->run_dir, "/tmp/bitnetctl-sweep.XXXXXX");
    if (!mkdtemp(d->run_dir))
        return err_set(e, "/tmp: cannot make a run directory: %s", strerror(errno));
    snprintf(d->log, sizeof d->log, "%s/bitnetd.log", d->run_dir);
    char w[16], t[16], c[16];
    snprintf(w, sizeof w, "%d", workers);
    snprintf(t, sizeof t, "%d", threads_per_worker);
    snprintf(c, sizeof c, "%d", ctx);
    const char *argv[16] = {bin, "--model", model, "--workers", w, "--run-dir", d->run_dir, "--ctx", c,
                            "--kv-type", kv_type_name(so->kv_type), "--lm-head", so->lm_head_q8 ? "q8" : "f16"};
    int argc = 13;
    if (threads_per_worker > 0) {
        argv[argc++] = "--threads-per-worker";
        argv[argc++] = t;
    }
    argv[argc] = NULL;
    fflush(NULL);
    /* before the fork, so that no signal finds the daemon started and unguarded */
    guard_signals(0);
    pid_t pid = fork();
    if (pid < 0)
        return err_set(e, "fork: %s", strerror(errno));
    if (pid == 0) {
        setsid();
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    running_daemon_pgid = pid;
    double deadline = clock_seconds() + 120.0;
    while (!daemon_ready(d) && !caught_signal) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            d->pid = 0;
            running_daemon_pgid = 0;
            char tail[512];
            log_tail(d->log, tail, sizeof tail);
            err_set(e, "%s: exited before it was ready: %s", bin, tail);
            bench_daemon_stop(d);
            return -1;
        }
        if (clock_seconds() > deadline) {
            err_set(e, "%s: not ready within 120 s (log: %s)", bin, d->log);
            bench_daemon_stop(d);
            return -1;
        }
        usleep(100 * 1000);
    }
    if (caught_signal) {
        err_set(e, "interrupted by signal %d", (int)caught_signal);
        bench_daemon_stop(d);
        return -1;
    }
    return 0;
}

void bench_daemon_stop(struct bench_daemon_proc *d)
{
    /* after a signal: at once (the handler may have come before the daemon's pid was
     * known to it) */
    if (d->pid > 0 && caught_signal) {
        kill(-d->pid, SIGKILL);
    } else if (d->pid > 0) {
        struct errbuf e = {{0}};
        Bitnet__Shutdown m = BITNET__SHUTDOWN__INIT;
        wire_free(bench_daemon_ask(d->run_dir, BITNET__ENVELOPE__BODY_SHUTDOWN, &m,
                                   BITNET__ENVELOPE__BODY_ACK, &e));
    }
    if (d->pid > 0) {
        double deadline = clock_seconds() + 20.0;
        int status;
        while (waitpid(d->pid, &status, WNOHANG) == 0) {
            if (clock_seconds() > deadline) {
                kill(-d->pid, SIGKILL);
                waitpid(d->pid, &status, 0);
                break;
            }
            usleep(50 * 1000);
        }
        d->pid = 0;
        running_daemon_pgid = 0;
    }
    if (d->run_dir[0]) {
        remove_run_dir(d->run_dir);
        d->run_dir[0] = '\0';
    }
}
