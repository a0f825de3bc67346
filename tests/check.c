#include "tests/check.h"

int check_failures;
int check_count;
