#include "proto/endpoints.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int run_dir_default(char *out, size_t cap)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n = xdg && *xdg ? snprintf(out, cap, "%s/bitnetd", xdg)
                        : snprintf(out, cap, "/tmp/bitnetd-%u", (unsigned)getuid());
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int run_dir_endpoint(char *out, size_t cap, const char *run_dir, const char *name)
{
    int n = snprintf(out, cap, "ipc://%s/%s", run_dir, name);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* Whether only root could have made an entry in path's parent directory (e.g. /run): a
 * directory there owned by another user was given to it, not planted by it. */
static bool parent_is_closed(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return false;
    struct stat st;
    bool closed = stat(dirname(copy), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
                  !(st.st_mode & (S_IWGRP | S_IWOTH));
    free(copy);
    return closed;
}

int run_dir_check(const char *dir, enum run_dir_role role, struct errbuf *e)
{
    struct stat st;
    if (lstat(dir, &st) != 0) {
        if (errno == EACCES)
            return err_set(e, "%s: permission denied (its parent directory does not let you "
                              "in)", dir);
        if (errno == ENOENT && role == RUN_DIR_CLIENT)
            return err_set(e, "no daemon at %s: the directory does not exist (is bitnetd "
                              "running? --run-dir names another)", dir);
        return err_set(e, "run directory %s: %s", dir, strerror(errno));
    }
    if (S_ISLNK(st.st_mode))
        return err_set(e, "run directory %s: is a symbolic link, which anyone who can write "
                          "its parent could have planted; give the real directory", dir);
    if (!S_ISDIR(st.st_mode))
        return err_set(e, "run directory %s: exists and is not a directory", dir);
    uid_t me = geteuid();
    mode_t unsafe = role == RUN_DIR_DAEMON ? (S_IWGRP | S_IWOTH) : S_IWOTH;
    if (st.st_mode & unsafe)
        return err_set(e, "run directory %s: writable by %s (mode %04o), who could replace its "
                          "sockets; chmod go-w it, or give another --run-dir", dir,
                       st.st_mode & S_IWOTH ? "every user" : "its group",
                       (unsigned)(st.st_mode & 07777));
    bool trusted_owner = st.st_uid == me ||
                         (role == RUN_DIR_CLIENT && (st.st_uid == 0 || parent_is_closed(dir)));
    if (!trusted_owner)
        return err_set(e, "run directory %s: owned by uid %u, not by you (uid %u): another "
                          "user may have made it to receive your prompts; remove it, or "
                          "give --run-dir a directory of yours", dir, (unsigned)st.st_uid,
                       (unsigned)me);
    return 0;
}

int run_dir_probe_socket(const char *path, struct errbuf *e)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        return err_set(e, "%s: longer than a unix socket path may be", path);
    char *dir = strdup(path);
    if (!dir)
        return err_set(e, "%s: out of memory", path);
    int rc = run_dir_check(dirname(dir), RUN_DIR_CLIENT, e);
    struct stat dst;
    if (rc == 0 && stat(dir, &dst) != 0)
        rc = err_set(e, "%s: %s", dir, strerror(errno));
    free(dir);
    if (rc < 0)
        return -1;
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == EACCES)
            return err_set(e, "%s: permission denied (ask to join the group of the daemon's "
                              "run directory)", path);
        if (errno == ENOENT)
            return err_set(e, "no daemon at %s (is bitnetd running? --run-dir names another)",
                           path);
        return err_set(e, "%s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return err_set(e, "%s: not a socket; no daemon made it", path);
    if (st.st_uid != dst.st_uid && st.st_uid != 0)
        return err_set(e, "%s: owned by uid %u, not by the run directory's owner (uid %u)",
                       path, (unsigned)st.st_uid, (unsigned)dst.st_uid);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_set(e, "socket: %s", strerror(errno));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    int err = errno;
    close(fd);
    if (r == 0)
        return 0;
    if (err == EACCES || err == EPERM)
        return err_set(e, "%s: permission denied (the daemon lets only its user and group "
                          "connect; ask to join its group)", path);
    if (err == ECONNREFUSED)
        return err_set(e, "no daemon listening at %s (the socket is left from one that "
                          "exited)", path);
    return err_set(e, "%s: connect: %s", path, strerror(err));
}
