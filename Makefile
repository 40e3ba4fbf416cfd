# lorad — build, test and run.
#
#   make            build/lorad, build/loradctl, build/lorad-sync, build/lorad-mkdemo,
#                   build/liblorad.a
#   make run        build, write the demo model and adapters, serve them
#   make check      every test (unit tests, then integration tests)
#   make check SAN=1   the same under AddressSanitizer + UBSan (build/san)
#   make check TSAN=1  the same under ThreadSanitizer (build/tsan)
#   make deps       install the Debian packages (apt-get)
#   make format        clang-format every C file in place
#   make format-check  fail when clang-format would change any C file
#   make install    binaries, units, man pages, scripts, config (mk/install.mk)
#   make soak       the verifying soak and the kill -9 loop (bench/; minutes, not CI)
#                   SOAK_ARGS / CRASH_ARGS pass sizes (e.g. SOAK_ARGS="--requests 200000")
#   make bench-converge  etcd write -> last instance's commit, 3 and 8 instances
#
# Every dependency is a Debian package found by pkg-config.

PKGS      := libmicrohttpd libcjson openblas libuv liburcu-qsbr nettle
# The clients (client/: loradctl, lorad-sync) link libcurl and cJSON, not the daemon's packages.
TOOL_PKGS := libcurl libcjson
TEST_PKGS := check libcurl
DEB_PKGS  := build-essential pkg-config libmicrohttpd-dev libcjson-dev libopenblas-dev \
             libuv1-dev liburcu-dev nettle-dev check libcurl4-openssl-dev curl jq wrk \
             clang systemd shellcheck prometheus haproxy groff-base \
             etcd-server etcd-client

CC      ?= cc
OPT     ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE
B       := build
ifeq ($(SAN),1)
B       := build/san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
endif
ifeq ($(TSAN),1)
B       := build/tsan
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=thread
export TSAN_OPTIONS := suppressions=$(CURDIR)/tests/tsan.supp $(TSAN_OPTIONS)
endif

# pkg-config is asked only when the packages are there (else `make deps` first).
HAVE_PKGS := $(shell pkg-config --exists $(PKGS) $(TOOL_PKGS) $(TEST_PKGS) && echo yes)
ifeq ($(HAVE_PKGS),yes)
DEP_CFLAGS  := $(shell pkg-config --cflags $(PKGS))
DEP_LIBS    := $(shell pkg-config --libs $(PKGS)) -lm -lpthread
TOOL_CFLAGS := $(shell pkg-config --cflags $(TOOL_PKGS))
TOOL_LIBS   := $(shell pkg-config --libs $(TOOL_PKGS)) -lm
TEST_CFLAGS := $(shell pkg-config --cflags $(TEST_PKGS))
TEST_LIBS   := $(shell pkg-config --libs $(TEST_PKGS))
else
# Missing packages: make builds this file first (installing them), then
# restarts and asks pkg-config again.
ifeq ($(filter deps clean,$(MAKECMDGOALS)),)
include build/.deps-installed
endif
endif

CFLAGS_ALL := $(WARN) $(OPT) $(DEP_CFLAGS) $(CFLAGS)
LDFLAGS_ALL := $(OPT) $(LDFLAGS)

LIB_SRC    := $(wildcard lib/*.c)
DAEMON_SRC := $(wildcard daemon/*.c)
CLIENT_SRC := $(filter-out client/loradctl.c client/sync.c,$(wildcard client/*.c))
UNIT_SRC   := $(wildcard tests/test_*.c)
ITEST_SRC  := $(wildcard tests/itest_*.c)
TESTLIB_SRC := $(filter-out tests/test_% tests/itest_%,$(wildcard tests/*.c))

LIB_OBJ    := $(LIB_SRC:%.c=$(B)/obj/%.o)
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(B)/obj/%.o)
CLIENT_OBJ := $(CLIENT_SRC:%.c=$(B)/obj/%.o)
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(B)/obj/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/%.c=$(B)/tests/%)
ITEST_BIN  := $(ITEST_SRC:tests/%.c=$(B)/tests/%)

.PHONY: all check run deps clean unit itest format format-check bench bench-converge soak
.SECONDARY:
all: $(B)/lorad $(B)/loradctl $(B)/lorad-sync $(B)/lorad-mkdemo

deps:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PKGS)

build/.deps-installed:
	@echo "lorad: installing missing Debian packages (make deps)"
	@$(MAKE) --no-print-directory deps
	@mkdir -p build && touch $@

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(if $(filter tests/%,$<),$(TEST_CFLAGS)) \
	  $(if $(filter client/% tests/test_api.c tests/test_sync.c,$<),$(TOOL_CFLAGS)) -MMD -MP -c $< -o $@

$(B)/liblorad.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/lorad: $(DAEMON_OBJ) $(B)/liblorad.a
	$(CC) $(LDFLAGS_ALL) -o $@ $(DAEMON_OBJ) $(B)/liblorad.a $(DEP_LIBS)

$(B)/lorad-mkdemo: $(B)/obj/tools/mkdemo.o $(B)/liblorad.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEP_LIBS)

# loradctl uses lib/ only for its error convention and small-file reader.
$(B)/loradctl: $(B)/obj/client/loradctl.o $(CLIENT_OBJ) $(B)/liblorad.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(TOOL_LIBS)

$(B)/tests/%: $(B)/obj/tests/%.o $(TESTLIB_OBJ) $(B)/liblorad.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEP_LIBS) $(TEST_LIBS)

# lorad-sync, the fleet agent (SPEC.md 12): the client modules and lib/'s
# error convention and small-file reader.
$(B)/lorad-sync: $(B)/obj/client/sync.o $(CLIENT_OBJ) $(B)/liblorad.a
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(TOOL_LIBS)

# The unit tests of client/ link the client objects too.
$(B)/tests/test_api $(B)/tests/test_sync: $(B)/tests/%: $(B)/obj/tests/%.o $(TESTLIB_OBJ) $(CLIENT_OBJ) $(B)/liblorad.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEP_LIBS) $(TOOL_LIBS) $(TEST_LIBS)

unit: $(UNIT_BIN)
	@B=$(B) ./tests/run-tests.sh $(UNIT_BIN)

# What the integration tests run: the binaries, by absolute path.
ITEST_ENV := B=$(B) LORAD_BIN=$(abspath $(B)/lorad) MKDEMO_BIN=$(abspath $(B)/lorad-mkdemo) \
  LORADCTL_BIN=$(abspath $(B)/loradctl) LORAD_SYNC_BIN=$(abspath $(B)/lorad-sync)

itest: $(B)/lorad $(B)/loradctl $(B)/lorad-sync $(B)/lorad-mkdemo $(ITEST_BIN)
	@$(ITEST_ENV) ./tests/run-tests.sh $(ITEST_BIN)

check: $(B)/lorad $(B)/loradctl $(B)/lorad-sync $(B)/lorad-mkdemo $(UNIT_BIN) $(ITEST_BIN)
	@$(ITEST_ENV) ./tests/run-tests.sh $(UNIT_BIN) $(ITEST_BIN)
	@# the fuzz corpora and regressions, replayed (seconds) where clang exists
	@if command -v clang >/dev/null; then $(MAKE) --no-print-directory fuzz-replay; fi

# The roof selects the OpenBLAS kernel with the daemon's own blas.c.
$(B)/bench/roof: $(B)/obj/bench/roof.o $(B)/obj/daemon/blas.o $(B)/obj/daemon/log.o $(B)/liblorad.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(DEP_LIBS)

bench: $(B)/lorad $(B)/lorad-mkdemo $(B)/bench/roof
	@./bench/run.sh $(B)

soak: $(B)/lorad $(B)/lorad-mkdemo
	@./bench/soak.py $(SOAK_ARGS) $(B)
	@./bench/crashloop.py $(CRASH_ARGS) $(B)
# The fleet's convergence through etcd (SPEC.md 12); not part of CI.
bench-converge: $(B)/lorad $(B)/lorad-sync $(B)/lorad-mkdemo
	@./bench/converge.sh $(B)

run: $(B)/lorad $(B)/lorad-mkdemo
	@./scripts/run-demo.sh $(B)

# The C files held to the repository's .clang-format.
FORMAT_SRC := $(wildcard lib/*.[ch] daemon/*.[ch] client/*.[ch] tests/*.[ch] tests/fuzz/*.c tools/*.c bench/*.c)

format:
	clang-format -i $(FORMAT_SRC)

format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRC) && echo "format-check: $(words $(FORMAT_SRC)) files formatted"

clean:
	rm -rf build

-include mk/install.mk
-include mk/fuzz.mk
-include $(shell find build -name '*.d' 2>/dev/null)
