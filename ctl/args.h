/* Checked conversions of command-line values: a bad number is an error that names the
 * option, never a silent zero. */
#ifndef BITNET_CTL_ARGS_H
#define BITNET_CTL_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int arg_int(const char *opt, const char *s, long min, long max, long *out);
int arg_u64(const char *opt, const char *s, uint64_t *out);
int arg_float(const char *opt, const char *s, float min, float max, float *out);
/* Parses ids separated by commas and/or spaces into a malloc'd array. */
int arg_ids(const char *opt, const char *s, int32_t **ids, size_t *n);
/* Reads a whole file into a malloc'd NUL-terminated buffer. */
char *read_text_file(const char *path, size_t *len);

#endif
