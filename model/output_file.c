#include "model/output_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/input_file.h"

static void clear(struct output_file *o)
{
    free(o->path);
    free(o->tmp);
    memset(o, 0, sizeof *o);
}

/* A symlink is written through, as an editor would: the link stays, its target gets the
 * new bytes. Returns the path to write (malloc'd) or NULL with e. */
static char *resolve(const char *path, struct stat *st, bool *exists, struct errbuf *e)
{
    *exists = false;
    if (lstat(path, st) != 0) {
        if (errno != ENOENT) {
            err_set(e, "%s: %s", path, strerror(errno));
            return NULL;
        }
        char *p = strdup(path);
        if (!p)
            err_set(e, "%s: out of memory", path);
        return p;
    }
    if (S_ISLNK(st->st_mode)) {
        char *real = realpath(path, NULL);
        if (!real) {
            /* a dangling link: where it points may be anywhere, so say so */
            err_set(e, "%s: a symbolic link to a missing file (%s); give the target's path",
                    path, strerror(errno));
            return NULL;
        }
        if (stat(real, st) != 0) {
            err_set(e, "%s: %s", real, strerror(errno));
            free(real);
            return NULL;
        }
        *exists = true;
        const char *kind = input_kind_refused(st->st_mode);
        if (kind) {
            err_set(e, "%s: links to %s (%s); give a regular file's path", path, kind, real);
            free(real);
            return NULL;
        }
        return real;
    }
    *exists = true;
    const char *kind = input_kind_refused(st->st_mode);
    if (kind) {
        err_set(e, "%s: is %s; give a regular file's path to write", path, kind);
        return NULL;
    }
    char *p = strdup(path);
    if (!p)
        err_set(e, "%s: out of memory", path);
    return p;
}

int output_open(struct output_file *o, const char *path, mode_t mode, int flags,
                struct errbuf *e)
{
    memset(o, 0, sizeof *o);
    if (!path || !*path)
        return err_set(e, "output path is empty");
    struct stat st;
    bool exists;
    if (!(o->path = resolve(path, &st, &exists, e)))
        return -1;
    o->no_replace = flags & OUTPUT_NO_REPLACE;
    if (exists && o->no_replace) {
        err_set(e, "%s: %s (give --force to replace it)", path, strerror(EEXIST));
        clear(o);
        return -1;
    }
    if (!(flags & OUTPUT_EXACT_MODE)) {
        if (exists) {
            mode = st.st_mode & 07777;
        } else {
            mode_t mask = umask(0);
            umask(mask);
            mode &= ~mask;
        }
    }
    char *dir_copy = strdup(o->path), *base_copy = strdup(o->path);
    size_t n = strlen(o->path) + 16;
    o->tmp = malloc(n);
    if (!dir_copy || !base_copy || !o->tmp) {
        free(dir_copy);
        free(base_copy);
        clear(o);
        return err_set(e, "%s: out of memory", path);
    }
    /* in the same directory, so the rename stays on one file system; hidden, so that a
     * glob over the directory does not pick up a half-written file */
    snprintf(o->tmp, n, "%s/.%s.XXXXXX", dirname(dir_copy), basename(base_copy));
    free(dir_copy);
    free(base_copy);
    int fd = mkostemp(o->tmp, O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        char *dir = strdup(o->path);
        err_set(e, "%s: cannot create a file in %s: %s", path, dir ? dirname(dir) : "its directory",
                strerror(err));
        free(dir);
        free(o->tmp);
        o->tmp = NULL;
        clear(o);
        return -1;
    }
    if (fchmod(fd, mode) != 0 || !(o->fp = fdopen(fd, "wb"))) {
        err_set(e, "%s: %s", o->tmp, strerror(errno));
        close(fd);
        output_abort(o);
        return -1;
    }
    return 0;
}

int output_commit(struct output_file *o, struct errbuf *e)
{
    if (!o->fp || !o->tmp)
        return err_set(e, "%s: not open for writing", o->path ? o->path : "output");
    int err = 0;
    if (fflush(o->fp) != 0 || ferror(o->fp))
        err = errno ? errno : EIO;
    else if (fsync(fileno(o->fp)) != 0)
        err = errno;
    if (fclose(o->fp) != 0 && !err)
        err = errno;
    o->fp = NULL;
    if (err) {
        err_set(e, "%s: write failed: %s", o->path, strerror(err));
        output_abort(o);
        return -1;
    }
    if (o->no_replace) {
        /* link fails if the name was taken since output_open: never a silent replace */
        if (link(o->tmp, o->path) != 0) {
            err_set(e, "%s: %s%s", o->path, strerror(errno),
                    errno == EEXIST ? " (give --force to replace it)" : "");
            output_abort(o);
            return -1;
        }
        unlink(o->tmp);
    } else if (rename(o->tmp, o->path) != 0) {
        err_set(e, "%s: cannot rename into place: %s", o->path, strerror(errno));
        output_abort(o);
        return -1;
    }
    free(o->tmp);
    o->tmp = NULL;
    clear(o);
    return 0;
}

void output_abort(struct output_file *o)
{
    if (o->fp)
        fclose(o->fp);
    o->fp = NULL;
    if (o->tmp)
        unlink(o->tmp);
    clear(o);
}
