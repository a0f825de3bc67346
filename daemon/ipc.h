/* The run directory and the daemon's ZeroMQ sockets. Whoever binds an ipc endpoint
 * unlinks a stale file first and again on exit (libzmq does neither); a lock file in the
 * directory makes sure the stale file is not a live daemon's. */
#ifndef BITNET_DAEMON_IPC_H
#define BITNET_DAEMON_IPC_H

#include <stdbool.h>
#include <stddef.h>

#include "model/errbuf.h"

struct daemon;

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
};

int ipc_open(struct ipc *x, const char *run_dir, struct errbuf *e);
/* (Re)connects the stage-0 feed to endpoint; a no-op when already connected there. */
int ipc_connect_feed(struct ipc *x, const char *endpoint, struct errbuf *e);
/* "ipc://RUN/name"; -1 when it does not fit a unix socket path. */
int ipc_endpoint(const struct ipc *x, const char *name, char *out, size_t cap, struct errbuf *e);
/* Closes the sockets and unlinks their files (and the extra files named, e.g. the
 * workers' data endpoints that a killed worker could not remove). */
void ipc_close(struct ipc *x, const char *const *extra_endpoints, int n_extra);

#endif
