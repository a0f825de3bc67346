/* Only this file sees the build's commit and flags, so a new commit rebuilds one object
 * (the Makefile passes them with -D and rebuilds it when they change). */
#include "ctl/build_info.h"

#ifndef BITNET_BUILD_COMMIT
#define BITNET_BUILD_COMMIT "unknown"
#endif
#ifndef BITNET_BUILD_CFLAGS
#define BITNET_BUILD_CFLAGS "unknown"
#endif

const char *build_commit(void)
{
    return BITNET_BUILD_COMMIT;
}

const char *build_cflags(void)
{
    return BITNET_BUILD_CFLAGS;
}
