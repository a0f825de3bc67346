/* The event loop: one zmq_poll over the signalfd and the three bound sockets, and a
 * cron that runs the timers (worker heartbeats and restarts, step timeouts, drain
 * deadlines). Everything the daemon does starts from here. */
#ifndef BITNET_DAEMON_LOOP_H
#define BITNET_DAEMON_LOOP_H

#include "model/errbuf.h"

struct daemon;

/* Blocks SIGCHLD, SIGTERM, SIGINT and SIGHUP and opens a signalfd for them. Must run
 * before any thread exists (ZeroMQ's included) so that every thread inherits the mask. */
int loop_signals_open(int *sig_fd, struct errbuf *e);

/* Runs until Shutdown, SIGTERM or SIGINT; 0, or -1 if polling itself failed. */
int loop_run(struct daemon *d);

#endif
