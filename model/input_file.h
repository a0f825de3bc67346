/* Opening a file the user named, for reading. open() on a FIFO waits for a writer, a
 * device may never end, and a directory is no file at all: every reader of a named file
 * (model, config, key, text) comes through here, so each such path is refused at once
 * with "path: what it is". */
#ifndef BITNET_INPUT_FILE_H
#define BITNET_INPUT_FILE_H

#include <stdio.h>
#include <sys/stat.h>

#include "model/errbuf.h"

/* A read-only descriptor of the regular file at path, its stat in *st; -1 with e set
 * ("path: is a FIFO, not a regular file", "path: No such file or directory", ...).
 * max_bytes > 0 refuses a larger file (config and key files: a mistaken path to a huge
 * file would otherwise be read whole). */
int input_open(const char *path, size_t max_bytes, struct stat *st, struct errbuf *e);

/* The same as a stdio stream ("rb"); NULL with e set. */
FILE *input_fopen(const char *path, size_t max_bytes, struct errbuf *e);

/* "a FIFO", "a directory", ... for a st_mode; NULL for a regular file. */
const char *input_kind_refused(mode_t mode);

#endif
