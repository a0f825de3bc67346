#include "daemon/ipc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "proto/endpoints.h"
#include "proto/wire.h"
#include "proto/zap.h"

#define LOCK_NAME "bitnetd.lock"

int ipc_endpoint(const struct ipc *x, const char *name, char *out, size_t cap, struct errbuf *e)
{
    struct sockaddr_un sun;
    if (strlen(x->run_dir) + 1 + strlen(name) >= sizeof sun.sun_path)
        return err_set(e, "%s/%s: longer than a unix socket path may be (%zu bytes)",
                       x->run_dir, name, sizeof sun.sun_path - 1);
    if (run_dir_endpoint(out, cap, x->run_dir, name) < 0)
        return err_set(e, "%s/%s: path too long", x->run_dir, name);
    return 0;
}

static const char *ep_path(const char *endpoint)
{
    return strncmp(endpoint, "ipc://", 6) == 0 ? endpoint + 6 : NULL;
}

static int make_run_dir(struct ipc *x, struct errbuf *e)
{
    if (mkdir(x->run_dir, 0750) == 0)
        x->created_dir = true;
    else if (errno != EEXIST)
        return err_set(e, "run directory %s: %s", x->run_dir, strerror(errno));
    /* one that was there already may be another user's, planted for us to use */
    return run_dir_check(x->run_dir, RUN_DIR_DAEMON, e);
}

/* The lock is what makes unlinking "stale" socket files safe: were they a live daemon's,
 * this daemon would silently take its clients. */
static int take_lock(struct ipc *x, struct errbuf *e)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", x->run_dir, LOCK_NAME);
    /* never through a symlink: it would truncate whatever file it points at */
    x->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
    if (x->lock_fd < 0)
        return err_set(e, "%s: %s", path,
                       errno == ELOOP ? "is a symbolic link; remove it" : strerror(errno));
    struct stat st;
    if (fstat(x->lock_fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        st.st_nlink != 1) {
        close(x->lock_fd);
        x->lock_fd = -1;
        return err_set(e, "%s: not a regular file of yours with one name; remove it", path);
    }
    if (flock(x->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        char pid[32] = "";
        ssize_t n = pread(x->lock_fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(x->lock_fd);
        x->lock_fd = -1;
        if (err == EWOULDBLOCK)
            return err_set(e, "another bitnetd (pid %s) runs with run directory %s",
                           *pid ? pid : "?", x->run_dir);
        return err_set(e, "%s: lock: %s", path, strerror(err));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(x->lock_fd, 0) != 0 || pwrite(x->lock_fd, pid, (size_t)n, 0) != n)
        return err_set(e, "%s: %s", path, strerror(errno));
    return 0;
}

static int set_int(void *sock, int opt, int v, const char *what, struct errbuf *e)
{
    if (zmq_setsockopt(sock, opt, &v, sizeof v) != 0)
        return err_set(e, "%s: setsockopt %d: %s", what, opt, zmq_strerror(zmq_errno()));
    return 0;
}

static void *new_socket(struct ipc *x, int type, const char *what, struct errbuf *e)
{
    void *s = zmq_socket(x->ctx, type);
    if (!s) {
        err_set(e, "%s: zmq_socket: %s", what, zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* nothing the daemon sends must outlive it: exit is never held up by a dead peer */
    if (set_int(s, ZMQ_LINGER, 0, what, e) < 0) {
        zmq_close(s);
        return NULL;
    }
    return s;
}

static int bind_ipc(void *sock, const char *endpoint, struct errbuf *e)
{
    const char *path = ep_path(endpoint);
    if (path && unlink(path) != 0 && errno != ENOENT)
        return err_set(e, "%s: stale socket file: %s", path, strerror(errno));
    if (zmq_bind(sock, endpoint) != 0)
        return err_set(e, "bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
    return 0;
}

static bool wildcard_host(const char *h, size_t n)
{
    return (n == 1 && *h == '*') || (n == 7 && memcmp(h, "0.0.0.0", 7) == 0) ||
           (n == 4 && memcmp(h, "[::]", 4) == 0);
}

/* The tcp sockets, each a CURVE server behind the allow-list. */
static int open_tcp(struct ipc *x, const struct ipc_tcp *t, struct errbuf *e)
{
    /* config.c checked the shape: tcp://HOST:PORT, PORT 1..65534 */
    const char *host = t->listen + 6, *colon = strrchr(host, ':');
    size_t host_len = (size_t)(colon - host);
    long port = strtol(colon + 1, NULL, 10);
    char results_bind[IPC_ENDPOINT_MAX];
    if ((size_t)snprintf(results_bind, sizeof results_bind, "tcp://%.*s:%ld", (int)host_len,
                         host, port + 1) >= sizeof results_bind)
        return err_set(e, "--listen %s: too long", t->listen);
    char adv[256];
    if (t->advertise) {
        snprintf(adv, sizeof adv, "%s", t->advertise);
    } else if (wildcard_host(host, host_len)) {
        /* a wildcard is no address to connect to: this host's name is the best guess */
        if (gethostname(adv, sizeof adv) != 0)
            return err_set(e, "gethostname: %s (give --advertise HOST)", strerror(errno));
        adv[sizeof adv - 1] = 0;
    } else {
        snprintf(adv, sizeof adv, "%.*s", (int)host_len, host);
    }
    if ((size_t)snprintf(x->tcp_results_ep, sizeof x->tcp_results_ep, "tcp://%s:%ld", adv,
                         port + 1) >= sizeof x->tcp_results_ep)
        return err_set(e, "--advertise %s: too long", adv);

    if (curve_read_secret(t->curve_key, x->curve_pub, x->curve_sec, e) < 0)
        return err_prefix(e, "--curve-key");
    /* the handler must be bound before any CURVE listener: until it is, libzmq admits
     * every client that knows the server key */
    x->zap = zap_open(x->ctx, t->allow_keys, e);
    if (!x->zap)
        return err_prefix(e, "--allow-keys");
    if (!(x->workers_tcp = new_socket(x, ZMQ_ROUTER, "tcp worker socket", e)) ||
        !(x->results_tcp = new_socket(x, ZMQ_PULL, "tcp results socket", e)))
        return -1;
    /* as the ipc one: a restarted remote worker joins again with the same id */
    if (set_int(x->workers_tcp, ZMQ_ROUTER_MANDATORY, 1, "tcp worker socket", e) < 0 ||
        set_int(x->workers_tcp, ZMQ_ROUTER_HANDOVER, 1, "tcp worker socket", e) < 0)
        return -1;
    /* reachable by other hosts: a huge frame drops the connection instead of being
     * buffered */
    int64_t max = (int64_t)WIRE_DEFAULT_MAX_BYTES * 2;
    void *socks[] = {x->workers_tcp, x->results_tcp};
    const char *names[] = {"tcp worker socket", "tcp results socket"};
    const char *eps[] = {t->listen, results_bind};
    for (int i = 0; i < 2; i++) {
        if (zmq_setsockopt(socks[i], ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
            set_int(socks[i], ZMQ_CURVE_SERVER, 1, names[i], e) < 0 ||
            zmq_setsockopt(socks[i], ZMQ_CURVE_SECRETKEY, x->curve_sec, CURVE_Z85_LEN) != 0)
            return err_set(e, "%s: CURVE options: %s", names[i], zmq_strerror(zmq_errno()));
        if (zmq_bind(socks[i], eps[i]) != 0)
            return err_set(e, "bind %s: %s", eps[i], zmq_strerror(zmq_errno()));
    }
    size_t len = sizeof x->tcp_workers_ep;
    if (zmq_getsockopt(x->workers_tcp, ZMQ_LAST_ENDPOINT, x->tcp_workers_ep, &len) != 0)
        snprintf(x->tcp_workers_ep, sizeof x->tcp_workers_ep, "%s", t->listen);
    return 0;
}

int ipc_open(struct ipc *x, const char *run_dir, const struct ipc_tcp *tcp, struct errbuf *e)
{
    memset(x, 0, sizeof *x);
    x->lock_fd = -1;
    if (run_dir) {
        if (strlen(run_dir) >= sizeof x->run_dir)
            return err_set(e, "run directory %s: path too long", run_dir);
        snprintf(x->run_dir, sizeof x->run_dir, "%s", run_dir);
    } else if (run_dir_default(x->run_dir, sizeof x->run_dir) < 0) {
        return err_set(e, "default run directory: path too long ($XDG_RUNTIME_DIR?)");
    }
    size_t len = strlen(x->run_dir);
    while (len > 1 && x->run_dir[len - 1] == '/')
        x->run_dir[--len] = 0;
    if (make_run_dir(x, e) < 0)
        return -1;
    /* workers and logs get absolute endpoints, whatever directory they run in */
    char abs[PATH_MAX];
    if (!realpath(x->run_dir, abs))
        return err_set(e, "run directory %s: %s", x->run_dir, strerror(errno));
    size_t abs_len = strlen(abs);
    if (abs_len >= sizeof x->run_dir)
        return err_set(e, "run directory %s: path too long for unix sockets", abs);
    memcpy(x->run_dir, abs, abs_len + 1);
    if (take_lock(x, e) < 0)
        return -1;
    if (ipc_endpoint(x, CTL_SOCKET_NAME, x->ctl_ep, sizeof x->ctl_ep, e) < 0 ||
        ipc_endpoint(x, "workers.sock", x->workers_ep, sizeof x->workers_ep, e) < 0 ||
        ipc_endpoint(x, "results.sock", x->results_ep, sizeof x->results_ep, e) < 0)
        return -1;

    x->ctx = zmq_ctx_new();
    if (!x->ctx)
        return err_set(e, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
    if (!(x->ctl = new_socket(x, ZMQ_ROUTER, "client socket", e)) ||
        !(x->workers = new_socket(x, ZMQ_ROUTER, "worker socket", e)) ||
        !(x->results = new_socket(x, ZMQ_PULL, "results socket", e)) ||
        !(x->feed = new_socket(x, ZMQ_PUSH, "stage-0 feed", e)))
        return -1;
    /* MANDATORY: a reply to a client or worker that went away is an error we see, not a
     * silent drop. No HANDOVER on the worker socket: every process bitnetd starts has a
     * routing id of its own, so a second connection under one is an impostor's, and
     * handing the route over would let it take the worker's messages. A streaming client that stops reading may
     * queue this many chunks before its job is cancelled. IMMEDIATE on the feed: a step
     * is never queued for a stage-0 worker that is not connected (it could be a
     * restarted one that has not loaded). */
    if (set_int(x->ctl, ZMQ_ROUTER_MANDATORY, 1, "client socket", e) < 0 ||
        set_int(x->ctl, ZMQ_SNDHWM, 100000, "client socket", e) < 0 ||
        set_int(x->workers, ZMQ_ROUTER_MANDATORY, 1, "worker socket", e) < 0 ||
        set_int(x->feed, ZMQ_IMMEDIATE, 1, "stage-0 feed", e) < 0 ||
        set_int(x->feed, ZMQ_RECONNECT_IVL, 10, "stage-0 feed", e) < 0)
        return -1;
    if (bind_ipc(x->workers, x->workers_ep, e) < 0 ||
        bind_ipc(x->results, x->results_ep, e) < 0 || bind_ipc(x->ctl, x->ctl_ep, e) < 0)
        return -1;
    if (chmod(ep_path(x->ctl_ep), 0660) != 0)
        return err_set(e, "%s: chmod: %s", ep_path(x->ctl_ep), strerror(errno));
    if (tcp && tcp->listen && open_tcp(x, tcp, e) < 0)
        return -1;
    return 0;
}

int ipc_connect_feed(struct ipc *x, const char *endpoint, const char *server_key,
                     struct errbuf *e)
{
    if (!server_key)
        server_key = "";
    if (strcmp(x->feed_ep, endpoint) == 0 && strcmp(x->feed_key, server_key) == 0)
        return 0;
    if (*x->feed_ep)
        zmq_disconnect(x->feed, x->feed_ep);
    x->feed_ep[0] = 0;
    x->feed_key[0] = 0;
    if (strlen(endpoint) >= sizeof x->feed_ep)
        return err_set(e, "stage-0 endpoint %s: too long", endpoint);
    if (*server_key) {
        /* options apply to the connections made after them: this one, to a remote stage */
        if (!*x->curve_sec)
            return err_set(e, "stage-0 endpoint %s: CURVE without a key of our own", endpoint);
        if (zmq_setsockopt(x->feed, ZMQ_CURVE_SERVERKEY, server_key, CURVE_Z85_LEN) != 0 ||
            zmq_setsockopt(x->feed, ZMQ_CURVE_PUBLICKEY, x->curve_pub, CURVE_Z85_LEN) != 0 ||
            zmq_setsockopt(x->feed, ZMQ_CURVE_SECRETKEY, x->curve_sec, CURVE_Z85_LEN) != 0)
            return err_set(e, "stage-0 feed %s: CURVE options: %s", endpoint,
                           zmq_strerror(zmq_errno()));
    }
    if (zmq_connect(x->feed, endpoint) != 0)
        return err_set(e, "connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
    snprintf(x->feed_ep, sizeof x->feed_ep, "%s", endpoint);
    snprintf(x->feed_key, sizeof x->feed_key, "%s", server_key);
    return 0;
}

static void unlink_ep(const char *endpoint)
{
    const char *path = ep_path(endpoint);
    if (path && *path)
        unlink(path);
}

void ipc_close(struct ipc *x, const char *const *extra_endpoints, int n_extra)
{
    void **socks[] = {&x->ctl, &x->workers, &x->results, &x->feed, &x->workers_tcp,
                      &x->results_tcp};
    for (size_t i = 0; i < sizeof socks / sizeof socks[0]; i++)
        if (*socks[i]) {
            zmq_close(*socks[i]);
            *socks[i] = NULL;
        }
    /* before zmq_ctx_term, which would wait for its socket */
    zap_close(x->zap);
    x->zap = NULL;
    memset(x->curve_sec, 0, sizeof x->curve_sec);
    if (x->ctx) {
        zmq_ctx_term(x->ctx);
        x->ctx = NULL;
    }
    /* only the lock holder may remove files: they could be another daemon's */
    if (x->lock_fd >= 0) {
        unlink_ep(x->ctl_ep);
        unlink_ep(x->workers_ep);
        unlink_ep(x->results_ep);
        for (int i = 0; i < n_extra; i++)
            unlink_ep(extra_endpoints[i]);
        char path[256];
        snprintf(path, sizeof path, "%s/%s", x->run_dir, LOCK_NAME);
        unlink(path);
        close(x->lock_fd);
        x->lock_fd = -1;
        if (x->created_dir)
            rmdir(x->run_dir); /* fails harmlessly when someone left files there */
    }
}
