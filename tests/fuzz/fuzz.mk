# libFuzzer targets (tests/fuzz/fuzz_*.c), included by the Makefile.
#
#   make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="gguf wire"]  each target N s, niced, in turn
#   make fuzz-smoke      each target a few seconds; fails on a crash
#   make fuzz-seeds      rewrites tests/fuzz/corpus/ (tests/fuzz/make_seeds.c)
#   make fuzz-clean      removes build/fuzz/ (objects, corpora, logs)
#
# Everything is compiled again with clang and the sanitizers into build/fuzz/, apart from the
# gcc objects of build/obj. A target's new inputs go to build/fuzz/corpus/<target> (smoke
# runs: build/fuzz/smoke/corpus/<target>; never committed); the seeds in
# tests/fuzz/corpus/<target> are read only. A crash leaves its input
# in tests/fuzz/crashes/<target>/; once fixed it belongs in tests/fuzz/regress/<target>/,
# which tests/t_fuzz.sh replays.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
FZ           := $(B)/fuzz
FUZZ_NAMES   := $(filter-out common,\
                $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_BINS    := $(FUZZ_NAMES:%=$(FZ)/fuzz_%)

# The project's own flags (CFLAGS of the Makefile, -Werror included) with clang's
# optimisation level for fuzzing and the sanitizers. Objects get fuzzer-no-link (coverage
# only); the targets link libFuzzer's main. -fno-sanitize-recover: UBSan findings must abort,
# or libFuzzer would not count them as crashes.
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS  := $(filter-out -O% -MMD -MP,$(CFLAGS)) -O1 -g -MMD -MP $(FUZZ_SAN)
# fuzz_daemon runs bitnetd's code, which reports to a service manager (daemon/notify.c)
FUZZ_LDLIBS  := $(LDLIBS) $(SYSTEMD_LIBS)

# The same per-file CPU features as the Makefile gives the gcc kernels (kept in step by hand).
$(FZ)/obj/kernels/%_avx2.o:   FUZZ_ARCH := -mavx2 -mfma -mf16c
$(FZ)/obj/kernels/%_avx512.o: FUZZ_ARCH := -mavx512f -mavx512bw -mavx512vl -mavx512vnni \
                                           -mavx512dq -mf16c -mfma -mavx2
$(FZ)/obj/kernels/%_amx.o:    FUZZ_ARCH := -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vl \
                                           -mavx512vnni -mavx512dq -mf16c -mfma -mavx2

# The library, the runtime (daemon and worker without their main) and the generated code.
FUZZ_LIB_SRC := $(LIB_SRC) $(RT_SRC) $(PROTO_GEN)
FUZZ_LIB_OBJ := $(patsubst %.c,$(FZ)/obj/%.o,$(FUZZ_LIB_SRC:$(B)/gen/%=gen/%))
FUZZ_COMMON  := $(FZ)/obj/tests/fuzz/fuzz_common.o

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-deps fuzz-seeds fuzz-clean

# clang and its libFuzzer runtime from Debian (clang only recommends libclang-rt-dev, which
# images without recommends lack), as deps installs the gcc toolchain.
FUZZ_APT_PKGS := clang libclang-rt-dev
fuzz-deps:
	@missing=""; for p in $(FUZZ_APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || \
	    missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "fuzz-deps: installing$$missing"; SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Under a lock: make test (tests/t_fuzz.sh) may build while a make fuzz does.
fuzz-build: deps fuzz-deps
	@mkdir -p $(FZ); flock $(FZ)/.build.lock \
	  $(MAKE) --no-print-directory $(FUZZ_BINS) $(FZ)/make_seeds

$(FZ)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FZ)/obj/%.o: %.c | $(PROTO_GEN)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_ARCH) -fsanitize=fuzzer-no-link -c $< -o $@

$(FZ)/libfuzzlib.a: $(FUZZ_LIB_OBJ) $(FUZZ_COMMON)
	@rm -f $@
	ar rcs $@ $^

$(FZ)/fuzz_%: $(FZ)/obj/tests/fuzz/fuzz_%.o $(FZ)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(FUZZ_LDLIBS)

# Writes the seed corpora; no libFuzzer main, the same instrumented library.
$(FZ)/make_seeds: $(FZ)/obj/tests/fuzz/make_seeds.o $(FZ)/libfuzzlib.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -o $@ $^ $(FUZZ_LDLIBS)

fuzz-seeds: fuzz-build
	$(FZ)/make_seeds tests/fuzz/corpus

# -close_fd_mask=2: the daemon and worker log every refusal on stderr; libFuzzer keeps its
# own and the sanitizers' reports on a copy of it. Memory: the targets load a tiny model,
# 2 GB is far above what any of them needs. -timeout: one input of fuzz_daemon is hundreds
# of round trips through libzmq's I/O thread, which a loaded 2-core machine can starve.
FUZZ_RUN_FLAGS := -close_fd_mask=2 -rss_limit_mb=2048 -timeout=60 -print_final_stats=1
export ASAN_OPTIONS ?= detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS ?= print_stacktrace=1

# One run at a time, the machine having 2 cores: a second one (make test's smoke during a
# make fuzz, say) waits for the first.
FUZZ_RUN_LOCK = mkdir -p $(FZ); exec 9>$(FZ)/.run.lock; flock -n 9 || \
	{ echo "$@: waiting for another fuzz run to end ($(FZ)/.run.lock)"; flock 9; }

# fuzz_run TARGET SECONDS DIR: runs one target over DIR/corpus/TARGET and the seeds, and
# prints its executions, coverage and crashes (log in DIR/logs, crash inputs in
# DIR/artifacts); returns non-zero when it crashed (the input copied to tests/fuzz/crashes/).
define fuzz_run
	t=$(1); log=$(3)/logs/$$t.log; art=$(3)/artifacts/$$t/; \
	mkdir -p $(3)/logs $$art $(3)/corpus/$$t tests/fuzz/corpus/$$t; rm -f $$art*; \
	nice -n 10 $(FZ)/fuzz_$$t $(FUZZ_RUN_FLAGS) -max_total_time=$(2) -artifact_prefix=$$art \
	  $(3)/corpus/$$t tests/fuzz/corpus/$$t >$$log 2>&1; rc=$$?; \
	execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $$log | tail -1); \
	total=$$(sed -n 's/.*Loaded [0-9]* modules *(\([0-9]*\) inline.*/\1/p' $$log | head -1); \
	cov=$$(grep -ao 'cov: [0-9]* ft: [0-9]* corp: [0-9/]*[a-zA-Z]*' $$log | tail -1); \
	crashes=$$(ls $$art 2>/dev/null | wc -l); \
	printf '%-10s %10s execs  %-44s of %s edges  crashes: %s\n' $$t "$${execs:-?}" "$$cov" \
	  "$${total:-?}" $$crashes; \
	if [ $$rc -ne 0 ] || [ $$crashes -gt 0 ]; then \
	  mkdir -p tests/fuzz/crashes/$$t; cp $$art* tests/fuzz/crashes/$$t/ 2>/dev/null; \
	  echo "  fuzz_$$t failed (exit $$rc); log: $$log; inputs: tests/fuzz/crashes/$$t/"; \
	  grep -a -m1 -E 'ERROR: |runtime error|SUMMARY' $$log | sed 's/^/  /'; false; \
	fi
endef

# The corpus it grows stays in build/fuzz/corpus for the next run.
fuzz: fuzz-build
	@$(FUZZ_RUN_LOCK); failed=""; for t in $(FUZZ_TARGETS); do \
	  { $(call fuzz_run,$$t,$(FUZZ_SECONDS),$(FZ)); } || failed="$$failed $$t"; \
	done; [ -z "$$failed" ] || { echo "fuzz: crashes in$$failed"; exit 1; }

# Seeds plus what this run finds, in a scratch directory, so that every smoke run starts
# alike.
fuzz-smoke: fuzz-build
	@$(FUZZ_RUN_LOCK); rm -rf $(FZ)/smoke; failed=""; for t in $(FUZZ_TARGETS); do \
	  { $(call fuzz_run,$$t,$(FUZZ_SMOKE_SECONDS),$(FZ)/smoke); } || failed="$$failed $$t"; \
	done; [ -z "$$failed" ] || { echo "fuzz-smoke: crashes in$$failed"; exit 1; }

fuzz-clean:
	rm -rf $(FZ)

-include $(shell find $(FZ)/obj -name '*.d' 2>/dev/null)
