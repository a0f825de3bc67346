/* The build a benchmark ran on, as the Makefile baked it in: so that two receipts tell
 * whether they timed the same code compiled the same way. */
#ifndef BITNET_CTL_BUILD_INFO_H
#define BITNET_CTL_BUILD_INFO_H

/* `git describe --always --dirty` of the tree that was built, or "unknown". */
const char *build_commit(void);
/* The compiler and the flags it was given (CC CFLAGS as set by the user or defaulted). */
const char *build_cflags(void);

#endif
