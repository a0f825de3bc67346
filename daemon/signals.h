/* The signals bitnetd acts on, read from a signalfd the event loop watches: SIGCHLD
 * (reap workers), SIGTERM (drain, then stop), SIGINT (stop), SIGHUP (reload.h). */
#ifndef BITNET_DAEMON_SIGNALS_H
#define BITNET_DAEMON_SIGNALS_H

#include "model/errbuf.h"

/* Blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP and opens a signalfd for them. Must run
 * before any thread exists (ZeroMQ's included) so that every thread inherits the mask. */
int signals_open(int *sig_fd, struct errbuf *e);

/* The signalfd is readable (an el_ready_fn; ctx: the daemon). */
void signals_on_ready(void *ctx, void *unused);

#endif
