# Sanitizer runs, included by the Makefile.
#
#   make sanitize      the whole suite under ASan+UBSan (build/asan), then the tests that
#                      start threads under ThreadSanitizer (build/tsan)
#   make sanitize-ci   a subset that fits CI's budget (tests/t_sanitize.sh runs it in make test)
#
# Each build directory holds the programs and test programs built by make B=DIR with the
# sanitizer's flags; tests/sanitize/sanitize.sh runs the tests against it and ends with a
# summary and a non-zero exit on any failure. SAN_OPT (default -O1) sets the optimisation,
# SAN_TSAN_STRICT=1 counts tests that fail under TSan (see below).

SAN_ASAN_B := $(B)/asan
SAN_TSAN_B := $(B)/tsan
SAN_OPT    ?= -O1
SAN_ASAN_CFLAGS := $(SAN_OPT) -g -fsanitize=address,undefined -fno-omit-frame-pointer \
                   -fno-sanitize-recover=all
SAN_TSAN_CFLAGS := $(SAN_OPT) -g -fsanitize=thread -fno-omit-frame-pointer
# parallel jobs of a sanitizer build when make was not given -j (a shared 2-core machine)
SAN_JOBS   ?= 2

# Tests whose processes start threads: the thread pool (kernels/threadpool.c: the GEMM and
# forward tests, bitnetctl, bitnet-worker), the ZAP thread (proto/zap.c: test_zap,
# test_wire, bitnetd and bitnet-worker with CURVE), the worker's heartbeat thread during a
# step (worker/busy_beat.c), the HTTP API's connection threads (t_http), and everything
# that starts bitnetd with its workers.
# Not t_liveness: its 1101-token prompt on the scalar kernels takes over 10 minutes under
# TSan. Under TSan a failed test counts only with SAN_TSAN_STRICT=1 (sanitize.sh says why);
# a TSan report always does.
SAN_TSAN_TESTS := test_threadpool test_gemm test_forward_rows test_forward_tp test_zap test_wire test_worker \
                  test_daemon t_daemon_ctl t_remote t_http
# CI (about 5 minutes on 2 cores, builds included): under ASan+UBSan every test but the
# slow end-to-end ones, which make sanitize runs; under TSan the pool, the ZAP thread and
# the worker.
SAN_CI_ASAN_SKIP  := test_xval test_reference t_cli t_daemon_ctl t_liveness t_remote t_tensor_parallel \
                     t_bench_history t_service t_http
SAN_CI_TSAN_TESTS := test_threadpool test_zap test_wire test_worker

# Scripts the sanitizer runs leave out: they run make themselves (t_sanitize would start
# sanitize-ci again; t_fuzz builds and runs clang's own sanitizer build of the fuzz targets;
# t_install runs make install, which would take the sanitizer's programs for the plain ones).
SAN_EXCLUDE := t_sanitize t_fuzz t_install

# every test by name, in tests/run.sh's order
SAN_ALL_TESTS := $(notdir $(TEST_BIN)) $(patsubst tests/%.sh,%,$(wildcard tests/t_*.sh))
SAN_CI_ASAN_TESTS := $(filter-out $(SAN_CI_ASAN_SKIP) $(SAN_EXCLUDE),$(SAN_ALL_TESTS))

# $(call san_build,DIR,CFLAGS,TESTS): the programs and the test programs of TESTS (all: every
# one; not the benchmarks), built into DIR with CFLAGS by make B=DIR. The tokenizer stays
# the one make deps put in build/npm.
san_build = $(MAKE) --no-print-directory \
            $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(SAN_JOBS)) \
            B=$(1) CC=gcc CFLAGS="$(2)" NPM_PREFIX=$(NPM_PREFIX) $(call san_targets,$(1),$(3))
san_targets = $(patsubst $(B)/%,$(1)/%,$(PROGRAMS) \
              $(filter $(if $(filter all,$(2)),%,$(addprefix $(B)/tests/,$(2))),$(TEST_BIN)))

# $(call san_run,ASAN_TESTS,TSAN_TESTS): both builds, then both phases. One sanitizer run
# at a time per tree (make test runs sanitize-ci, and several people may run make test in
# one tree): the builds and the run hold $(B)/.sanitize.lock.
san_run = mkdir -p $(B) && { flock -n $(B)/.sanitize.lock true || \
          echo "sanitize: waiting for another run ($(B)/.sanitize.lock)"; } && \
          flock $(B)/.sanitize.lock sh -c '\
            $(call san_build,$(SAN_ASAN_B),$(SAN_ASAN_CFLAGS),$(1)) && \
            $(call san_build,$(SAN_TSAN_B),$(SAN_TSAN_CFLAGS),$(2)) && \
            SAN_EXCLUDE="$(SAN_EXCLUDE)" tests/sanitize/sanitize.sh \
              --asan $(SAN_ASAN_B) "$(strip $(1))" --tsan $(SAN_TSAN_B) "$(strip $(2))"'

.PHONY: sanitize sanitize-ci
sanitize: deps
	@$(call san_run,all,$(SAN_TSAN_TESTS))

sanitize-ci: deps
	@$(call san_run,$(SAN_CI_ASAN_TESTS),$(SAN_CI_TSAN_TESTS))
