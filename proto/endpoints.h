/* Where the daemon's local sockets live, so bitnetd and bitnetctl agree without being
 * told: $XDG_RUNTIME_DIR/bitnetd, else /tmp/bitnetd-$UID (docs/runtime.md). */
#ifndef BITNET_PROTO_ENDPOINTS_H
#define BITNET_PROTO_ENDPOINTS_H

#include <stdbool.h>
#include <stddef.h>

#include "model/errbuf.h"

/* The default run directory; returns -1 if it does not fit in cap. */
int run_dir_default(char *out, size_t cap);

/* "ipc://" + run_dir + "/" + name; returns -1 if it does not fit in cap. */
int run_dir_endpoint(char *out, size_t cap, const char *run_dir, const char *name);

#define CTL_SOCKET_NAME "ctl.sock"

/* The environment variable in which bitnetd hands a worker it starts the routing id to use
 * on the worker socket: fresh and random for each process, so that no other process can
 * take over a worker's route by connecting under its name ("w1"). */
#define ROUTING_ID_ENV "BITNET_ROUTING_ID"

/* Whether a run directory may be used. Its sockets carry prompts and its lock file is
 * written to, so a directory someone else could have made or can change is refused:
 * - the daemon's must be a real directory (not a symlink), owned by the daemon's user and
 *   writable by no one else;
 * - a client's must be a real directory writable by no one but its owner's group, owned by
 *   the client's user or root, or by another user (a service's) only where that user
 *   could not have planted it: in a directory that others cannot write, such as /run.
 * -1 with e: "DIR: permission denied", "DIR: owned by uid N, not by you (uid M): ...",
 * and, for a client, "no daemon at DIR" when it does not exist. */
enum run_dir_role { RUN_DIR_DAEMON, RUN_DIR_CLIENT };
int run_dir_check(const char *dir, enum run_dir_role role, struct errbuf *e);

/* Checks that the socket file at path is a socket in a trusted directory, owned by the
 * directory's owner or root, and that a daemon accepts connections on it: a client then
 * learns "permission denied" or "no daemon listening" instead of waiting forever. */
int run_dir_probe_socket(const char *path, struct errbuf *e);

#endif
