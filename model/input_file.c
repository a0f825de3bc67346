#include "model/input_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

const char *input_kind_refused(mode_t mode)
{
    if (S_ISREG(mode))
        return NULL;
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

int input_open(const char *path, size_t max_bytes, struct stat *st, struct errbuf *e)
{
    /* O_NONBLOCK so that a FIFO without a writer opens at once and can be refused; a
     * regular file ignores it, and it is cleared before anyone reads */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return err_set(e, "%s: %s", path, strerror(errno));
    const char *kind = NULL;
    if (fstat(fd, st) != 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: %s", path, strerror(err));
    }
    if ((kind = input_kind_refused(st->st_mode))) {
        close(fd);
        return err_set(e, "%s: is %s, not a regular file", path, kind);
    }
    if (max_bytes && (unsigned long long)st->st_size > max_bytes) {
        close(fd);
        return err_set(e, "%s: %lld bytes, more than the %zu such a file may have", path,
                       (long long)st->st_size, max_bytes);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        int err = errno;
        close(fd);
        return err_set(e, "%s: %s", path, strerror(err));
    }
    return fd;
}

FILE *input_fopen(const char *path, size_t max_bytes, struct errbuf *e)
{
    struct stat st;
    int fd = input_open(path, max_bytes, &st, e);
    if (fd < 0)
        return NULL;
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        err_set(e, "%s: %s", path, strerror(errno));
        close(fd);
    }
    return fp;
}
