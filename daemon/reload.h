/* SIGHUP: the command line and its --config file are read again, and so is the remote
 * workers' key allow-list (--allow-keys), so that a worker whose key was just listed is
 * admitted without a restart. The settings a running daemon can take on change at once
 * (max_jobs_per_client, worker_timeout, drain_timeout); every other one that changed is
 * kept as it was, and the log names it. A file that does not parse changes nothing. */
#ifndef BITNET_DAEMON_RELOAD_H
#define BITNET_DAEMON_RELOAD_H

struct daemon;

void reload_config(struct daemon *d);

#endif
