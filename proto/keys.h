/* CURVE key files, as `bitnetctl keygen --out PREFIX` writes them:
 *
 *   PREFIX.pub  one line: the Z85 public key (40 characters), then the key's name. This is
 *               also the format of the daemon's allow-list (proto/zap.h), so an allow-list
 *               can be made by concatenating .pub files or by putting them in a directory.
 *   PREFIX.key  mode 0600: "public-key = Z85" and "secret-key = Z85" lines.
 *
 * The labels are there so that a .pub given where a .key belongs (or the other way round)
 * is an error naming the file, not a key silently derived from the wrong bytes. Blank
 * lines and lines starting with '#' are comments.
 */
#ifndef BITNET_PROTO_KEYS_H
#define BITNET_PROTO_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/errbuf.h"

#define CURVE_Z85_LEN 40

/* True when s is exactly 40 characters that decode as Z85 (32 bytes), decoded into key. */
bool curve_z85_decode(const char *s, size_t len, uint8_t key[32]);

/* The same test, without the bytes. */
bool curve_z85_valid(const char *s, size_t len);

/* Whether the line is blank or a comment ('#' first). */
bool curve_line_is_comment(const char *line);

/* The public key of a .pub file (its first key line). "path: what went wrong" on error. */
int curve_read_public(const char *path, char pub[CURVE_Z85_LEN + 1], struct errbuf *e);

/* The key pair of a .key file. Refuses a file that group or others may read, as ssh does
 * with private keys, and one whose public-key line does not belong to its secret key. */
int curve_read_secret(const char *path, char pub[CURVE_Z85_LEN + 1],
                      char sec[CURVE_Z85_LEN + 1], struct errbuf *e);

/* Makes a new key pair and writes PREFIX.key (0600) and PREFIX.pub. Existing files are
 * kept unless overwrite is set. pub receives the new public key. */
int curve_write_pair(const char *prefix, bool overwrite, char pub[CURVE_Z85_LEN + 1],
                     struct errbuf *e);

#endif
