/* The run directory and the daemon's ZeroMQ sockets. Whoever binds an ipc endpoint
 * unlinks a stale file first and again on exit (libzmq does neither); a lock file in the
 * directory makes sure the stale file is not a live daemon's. */
#ifndef BITNET_DAEMON_IPC_H
#define BITNET_DAEMON_IPC_H

#include <stdbool.h>
#include <stddef.h>

#include "model/errbuf.h"
#include "proto/keys.h"

struct daemon;
struct zap;

#define IPC_ENDPOINT_MAX 160

struct ipc {
    char run_dir[112];
    bool created_dir;
    int lock_fd;
    char ctl_ep[IPC_ENDPOINT_MAX];      /* client ROUTER */
    char workers_ep[IPC_ENDPOINT_MAX];  /* worker-control ROUTER */
    char results_ep[IPC_ENDPOINT_MAX];  /* ForwardResult PULL */
    void *ctx;
    void *ctl, *workers, *results;
    void *feed;                         /* PUSH to stage 0's data endpoint */
    char feed_ep[IPC_ENDPOINT_MAX];     /* what feed is connected to, "" if nothing */
    char feed_key[CURVE_Z85_LEN + 1];   /* its CURVE server key, "" on ipc */

    /* Remote workers (--listen): a worker-control ROUTER and a results PULL of their own
     * on tcp, CURVE servers with the daemon's key behind a ZAP allow-list. Own sockets,
     * not more listeners on the ipc ones: a ROUTER's routing ids are per socket, so a
     * peer on the network can never take over a local worker's id. All "" / NULL without
     * --listen. */
    void *workers_tcp, *results_tcp;
    char tcp_workers_ep[IPC_ENDPOINT_MAX];  /* as bound */
    char tcp_results_ep[IPC_ENDPOINT_MAX];  /* as remote last stages are told to connect */
    char curve_pub[CURVE_Z85_LEN + 1], curve_sec[CURVE_Z85_LEN + 1];
    struct zap *zap;                        /* served from the event loop (daemon.c registers it) */
};

/* What --listen and its companions say (daemon/config.h); listen NULL for none. */
struct ipc_tcp {
    const char *listen, *advertise, *curve_key, *allow_keys;
};

int ipc_open(struct ipc *x, const char *run_dir, const struct ipc_tcp *tcp, struct errbuf *e);
/* (Re)connects the stage-0 feed to endpoint, as a CURVE client of server_key when that is
 * not empty; a no-op when already connected there with that key. */
int ipc_connect_feed(struct ipc *x, const char *endpoint, const char *server_key,
                     struct errbuf *e);
/* "ipc://RUN/name"; -1 when it does not fit a unix socket path. */
int ipc_endpoint(const struct ipc *x, const char *name, char *out, size_t cap, struct errbuf *e);
/* Closes the sockets and unlinks their files (and the extra files named, e.g. the
 * workers' data endpoints that a killed worker could not remove). */
void ipc_close(struct ipc *x, const char *const *extra_endpoints, int n_extra);

#endif
