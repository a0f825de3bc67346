/* Writing a file the user named, so that nothing of theirs is lost: the path is checked
 * before any work starts (a directory, a device or a FIFO there is refused), the bytes go
 * to a new temporary file in the same directory, and only a complete, flushed file is
 * renamed into place. A failure removes the temporary file and nothing else: whatever
 * stood at the path before is still there, unchanged. */
#ifndef BITNET_OUTPUT_FILE_H
#define BITNET_OUTPUT_FILE_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "model/errbuf.h"

struct output_file {
    char *path;     /* where the file ends up (a symlink's target, resolved) */
    char *tmp;      /* the temporary file, NULL once renamed or removed */
    FILE *fp;       /* write here */
    bool no_replace;
};

enum {
    /* fail if a file exists at path, at open and again at the rename (keys) */
    OUTPUT_NO_REPLACE = 1,
    /* the new file gets exactly mode, whatever the umask or an older file's mode
     * (secrets); otherwise an existing file's mode is kept, a new one gets mode & ~umask */
    OUTPUT_EXACT_MODE = 2,
};

/* Checks path and creates the temporary file; -1 with e set, nothing created. */
int output_open(struct output_file *o, const char *path, mode_t mode, int flags,
                struct errbuf *e);

/* Flushes, syncs and renames the temporary file to path; -1 with e set (the temporary
 * file is then removed). */
int output_commit(struct output_file *o, struct errbuf *e);

/* Removes the temporary file, if any, and frees o; path is never touched. Safe to call
 * after a commit or on a zeroed struct. */
void output_abort(struct output_file *o);

#endif
