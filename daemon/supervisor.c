#include "daemon/supervisor.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "proto/endpoints.h"

int supervisor_resolve_bin(struct daemon *d, struct errbuf *e)
{
    size_t cap = sizeof d->worker_bin;
    if (d->cfg.worker_bin) {
        if (strlen(d->cfg.worker_bin) >= cap)
            return err_set(e, "--worker-bin: path too long");
        snprintf(d->worker_bin, cap, "%s", d->cfg.worker_bin);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0)
            return err_set(e, "/proc/self/exe: %s (give --worker-bin)", strerror(errno));
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = 0;
        if ((size_t)snprintf(d->worker_bin, cap, "%s/bitnet-worker", slash ? self : ".") >= cap)
            return err_set(e, "worker program path too long");
    }
    if (access(d->worker_bin, X_OK) != 0)
        return err_set(e, "worker program %s: %s%s", d->worker_bin, strerror(errno),
                       d->cfg.worker_bin ? "" : " (build it, or give --worker-bin)");
    return 0;
}

/* Between fork and exec only async-signal-safe calls: the daemon has ZeroMQ's threads. */
static void exec_child(char *const argv[], char *const envp[], pid_t parent)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    /* a daemon killed with SIGKILL must not leave workers holding gigabytes of memory */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* descriptors the daemon inherited (a shell's pipe, make's jobserver) or opened without
     * close-on-exec are nothing a worker should hold */
    close_range(3, ~0U, 0);
    execve(argv[0], argv, envp);
    const char *msg = "bitnetd: exec of the worker program failed: ";
    const char *why = strerror(errno); /* not async-signal-safe in theory; glibc's is */
    if (write(2, msg, strlen(msg)) < 0 || write(2, why, strlen(why)) < 0 || write(2, "\n", 1) < 0)
        _exit(127);
    _exit(127);
}

/* w's id, a dot and 24 random hex digits: 96 bits no other process can guess */
static int new_route(const struct worker *w, char *out, size_t cap, struct errbuf *e)
{
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return err_set(e, "worker %s: getrandom: %s", w->id, strerror(errno));
    int n = snprintf(out, cap, "%s.", w->id);
    for (size_t i = 0; i < sizeof r && n + 2 < (int)cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%02x", r[i]);
    return 0;
}

/* The daemon's environment with one variable set (replacing any inherited value), as a
 * new array of borrowed strings: built before fork, since the child may not allocate. */
static char **env_with(char *var)
{
    size_t name_len = strchr(var, '=') - var + 1, n = 0;
    while (environ[n])
        n++;
    char **envp = malloc((n + 2) * sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], var, name_len) != 0)
            envp[k++] = environ[i];
    envp[k++] = var;
    envp[k] = NULL;
    return envp;
}

int supervisor_spawn(struct daemon *d, struct worker *w, struct errbuf *e)
{
    /* With --listen, a local worker may send to a remote stage, which admits only the keys
     * the daemon names in its LoadShard: it sends as the daemon's key pair, the same for
     * every local worker and every restart, so naming it never waits for a worker. (Its
     * control and data sockets stay ipc; the key is used for a tcp next stage only.) */
    /* four heartbeats per timeout, so one late message is never taken for death */
    int beat = d->cfg.heartbeat_timeout_ms / 4;
    char beat_ms[16];
    snprintf(beat_ms, sizeof beat_ms, "%d", beat < 20 ? 20 : beat > 200 ? 200 : beat);
    char *argv[14] = {
        d->worker_bin, "--id", w->id, "--control", d->ipc.workers_ep, "--data", w->data_endpoint,
        "--heartbeat-ms", beat_ms,
    };
    if (d->ipc.curve_sec[0] && d->cfg.curve_key) {
        argv[9] = "--key";
        argv[10] = d->cfg.curve_key;
    }
    /* after a remote stage: data on tcp, where that stage can reach it */
    char adv[160];
    if (w->tcp_data) {
        argv[6] = w->data_bind;
        const char *host = w->data_endpoint + 6, *colon = strrchr(host, ':');
        snprintf(adv, sizeof adv, "%.*s", (int)(colon - host), host);
        argv[11] = "--advertise";
        argv[12] = adv;
    }
    char route[sizeof w->route], route_env[sizeof w->route + sizeof ROUTING_ID_ENV];
    if (new_route(w, route, sizeof route, e) < 0)
        return -1;
    snprintf(route_env, sizeof route_env, "%s=%s", ROUTING_ID_ENV, route);
    char **envp = env_with(route_env);
    if (!envp)
        return err_set(e, "worker %s: out of memory", w->id);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        exec_child(argv, envp, parent);
    int fork_errno = errno;
    free(envp);
    if (pid < 0)
        return err_set(e, "worker %s: fork: %s", w->id, strerror(fork_errno));
    w->pid = pid;
    memcpy(w->route, route, sizeof route);
    return 0;
}

void supervisor_reap(struct daemon *d)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        workers_on_exit(d, pid, status);
    }
}

static int n_alive(const struct daemon *d)
{
    int n = 0;
    for (int i = 0; i < d->workers.n; i++)
        n += d->workers.w[i].pid > 0;
    return n;
}

static void reap_known(struct daemon *d)
{
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        int status;
        if (w->pid > 0 && waitpid(w->pid, &status, WNOHANG) == w->pid)
            w->pid = 0;
    }
}

void supervisor_stop_all(struct daemon *d, int grace_ms)
{
    for (int i = 0; i < d->workers.n; i++)
        if (d->workers.w[i].pid > 0)
            kill(d->workers.w[i].pid, SIGTERM);
    double deadline = clock_ms() + grace_ms;
    while (n_alive(d) && clock_ms() < deadline) {
        reap_known(d);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < d->workers.n; i++) {
        struct worker *w = &d->workers.w[i];
        if (w->pid <= 0)
            continue;
        dlog("worker %s (pid %d) still there %d ms after SIGTERM: SIGKILL", w->id, (int)w->pid,
             grace_ms);
        kill(w->pid, SIGKILL);
        int status;
        while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
            ;
        w->pid = 0;
    }
}
