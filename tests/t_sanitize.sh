#!/usr/bin/env bash
# make sanitize-ci: a subset of the tests under ASan+UBSan and under TSan, each against a
# build of its own (build/asan, build/tsan); fails if any test or sanitizer report does.
# Inside a sanitizer run (BITNET_SANITIZE set by tests/sanitize/sanitize.sh) it does nothing,
# so the suite never starts itself again.
set -u
cd "$(dirname "$0")/.."
if [ -n "${BITNET_SANITIZE:-}" ]; then
    echo "t_sanitize: inside the $BITNET_SANITIZE run of tests/sanitize/sanitize.sh: not again"
    exit 0
fi
# a fresh make: run.sh is not a recursive recipe, so MAKEFLAGS would name a jobserver
# this make cannot reach
unset MAKEFLAGS MFLAGS MAKELEVEL
make --no-print-directory sanitize-ci
