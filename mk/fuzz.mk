# lorad — mk/fuzz.mk: libFuzzer harnesses (tests/fuzz/fuzz_*.c), included
# by the Makefile.
#
#   make fuzz                 build every harness, replay the seed corpora and
#                             tests/fuzz/regressions/, then fuzz each one for
#                             FUZZ_SECONDS (default 60); fails on any crash,
#                             leak or sanitizer report
#   make fuzz FUZZ_SECONDS=10
#   make fuzz FUZZ_RUNS=200000 [FUZZ_SEED=1]
#                             a fixed number of inputs from a fixed seed,
#                             reproducible from a clean tree (what CI runs)
#   make fuzz-replay          build and only replay corpora + regressions
#                             (quick; suitable for `make check`)
#   make fuzz-build           only build build/fuzz/fuzz_<name>
#
# Harnesses and the code under test are compiled by clang with
# -fsanitize=fuzzer,address,undefined (not the gcc-built archive): every
# lib/*.c, and for the config harness daemon/config.c with the two daemon
# modules it uses (log.c, blas.c).

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_RUNS    ?=
FUZZ_SEED    ?= 1
FUZZ_B       := build/fuzz
FUZZ_SAN     := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) \
                -Wall -Wextra $(DEP_CFLAGS)
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES   := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_B)/fuzz_%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_B)/obj/%.o)
FUZZ_DMN_OBJ := $(patsubst %.c,$(FUZZ_B)/obj/%.o,daemon/config.c daemon/log.c daemon/blas.c)
# Harnesses of daemon/ code (the others link lib/ only).
FUZZ_DAEMON  := config

.PHONY: fuzz fuzz-build fuzz-replay

$(FUZZ_B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@

# The harnesses themselves are held to -Werror.
$(FUZZ_B)/obj/tests/fuzz/%.o: tests/fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Werror -MMD -MP -c $< -o $@

$(FUZZ_B)/fuzz_%: $(FUZZ_B)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(DEP_LIBS)

$(FUZZ_DAEMON:%=$(FUZZ_B)/fuzz_%): $(FUZZ_B)/fuzz_%: $(FUZZ_B)/obj/tests/fuzz/fuzz_%.o \
		$(FUZZ_DMN_OBJ) $(FUZZ_LIB_OBJ)
	$(FUZZ_CC) $(FUZZ_SAN) -o $@ $^ $(DEP_LIBS)

fuzz-build: $(FUZZ_BIN)

fuzz-replay: $(FUZZ_BIN)
	@FUZZ_B=$(FUZZ_B) ./tests/fuzz/run.sh --replay $(FUZZ_NAMES)

fuzz: $(FUZZ_BIN)
	@FUZZ_B=$(FUZZ_B) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SEED=$(FUZZ_SEED) \
	    ./tests/fuzz/run.sh $(FUZZ_NAMES)
