/* Where model synth finds the Llama-3 tokenizer.json it embeds when none is given. */
#ifndef BITNET_CTL_TOKENIZER_PATH_H
#define BITNET_CTL_TOKENIZER_PATH_H

#include <stddef.h>

#include "model/errbuf.h"

/* An installed copy first: PREFIX/share/bitnetd/tokenizer.json beside PREFIX/bin, the
 * directory of this executable (so any PREFIX, and a DESTDIR tree, find their own); then
 * the build tree's (make deps), whose absolute path the build compiles in. Fills out with
 * the first that is readable; -1 with both paths in e when neither is. */
int default_tokenizer_json(char *out, size_t cap, struct errbuf *e);

#endif
