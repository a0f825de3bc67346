#include "tests/check.h"

#include <errno.h>
#include <sys/stat.h>

int check_failures;
int check_count;
int check_skipped;

bool shared_data_missing(void)
{
    struct stat st;
    return stat(SHARED_DATA(""), &st) != 0 && errno == ENOENT;
}

void check_not_run(const char *what, const char *file)
{
    check_skipped++;
    printf("NOT RUN: %s needs " SHARED_DATA("%s") " (third-party vectors, not in the "
           "repository)\n", what, file);
    fflush(stdout);
}
