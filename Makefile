# SPDX-License-Identifier: MIT
# The front door: `make run` builds and runs the demo, `make test` builds
# everything and runs every test. CMake does the real work in $(BUILD).
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE ?= cmake
CTEST ?= ctest
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# Extra CMake arguments for every configure below, e.g. .ci/run's
# FIB_CMAKE_ARGS=-DFIB_WERROR=ON. They stick in each build directory's cache.
FIB_CMAKE_ARGS ?=

# bash for pipefail: CMake's own progress lines are dropped, but not its
# warnings (stderr) nor our notices ("-- fibers: ...", e.g. which test will
# be skipped and what to install), and a failed configure still fails.
SHELL := /bin/bash
# $(call CONFIGURE,cmake arguments[,environment for cmake])
CONFIGURE = set -o pipefail; $(2) $(CMAKE) $(FIB_CMAKE_ARGS) $(1) \
	| { grep '^-- fibers:' || true; }

.PHONY: all run test clean configure test-bare

# tools/deps.sh checks what each goal needs before it starts: what is
# missing is installed with apt-get where this user may (root, sudo without
# a password), else it stops naming the command to run. FIB_NO_INSTALL=1
# in the environment: never install, only name it.
DEPS = CC='$(CC)' CMAKE='$(CMAKE)' CTEST='$(CTEST)' $(SHELL) tools/deps.sh
BUILD_ABS = $(abspath $(BUILD))

all: configure
	$(CMAKE) --build $(BUILD) -j $(JOBS)

configure:
	@$(DEPS) build
	@$(call CONFIGURE,-S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_C_COMPILER=$(CC))

# Without CMake the demo is built with one compiler line (tools/build-demo.sh):
# it needs nothing else, so `make run` never installs CMake.
run:
	@$(DEPS) run
	@if command -v $(CMAKE) >/dev/null; then \
	    $(MAKE) --no-print-directory all && $(BUILD_ABS)/examples/counters; \
	else CC='$(CC)' $(SHELL) tools/build-demo.sh $(BUILD_ABS)/nocmake && \
	    $(BUILD_ABS)/nocmake/counters; fi

# The set-up first, then the build (a sub-make: not a prerequisite, which
# `make -j` could start beside it).
test:
	@$(DEPS) test
	@$(MAKE) --no-print-directory all
	cd $(BUILD) && $(CTEST) --output-on-failure -j $(JOBS)

# Both commands on a machine without cmake, ctest and gdb (a PATH that
# hides them): tests/tools/bare_machine.sh. Exit 77: it cannot run here.
test-bare:
	@$(SHELL) tests/tools/bare_machine.sh || [ $$? -eq 77 ]

clean:
	rm -rf $(BUILD) build-*

# ---- ports: cross-build with Debian's cross compilers and run the whole
# suite under qemu-user (.ci/run installs both). Stress sizes are scaled
# down: qemu runs the switch ~20-50x slower than the hardware.
QEMU_TEST_SCALE ?= 0.05
CROSS_ARCHES = aarch64 riscv64

.PHONY: $(addprefix test-,$(CROSS_ARCHES))

$(addprefix test-,$(CROSS_ARCHES)): test-%:
	@$(call CONFIGURE,-S . -B build-$* -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/$*-linux-gnu.cmake)
	$(CMAKE) --build build-$* -j $(JOBS)
	cd build-$* && FIB_TEST_SCALE=$(QEMU_TEST_SCALE) \
	    $(CTEST) --output-on-failure -j $(JOBS)

# ---- optimisation levels: the suite at -O0 (Debug) and at -O3 (Release,
# so also with NDEBUG), under ASan+UBSan, so that the sanitizers see the
# code shapes of both ends and not only RelWithDebInfo's -O2. One build
# directory per level and compiler.
O0_BUILD_TYPE = Debug
O3_BUILD_TYPE = Release

.PHONY: test-O0 test-O3

test-O0 test-O3: test-%:
	@$(call CONFIGURE,-S . -B build-$*-$(notdir $(CC)) \
	    -DCMAKE_BUILD_TYPE=$($*_BUILD_TYPE) -DFIB_SANITIZE=$(ASAN_UBSAN) \
	    $(SAN_CMAKE_ARGS),CC=$(CC))
	$(CMAKE) --build build-$*-$(notdir $(CC)) -j $(JOBS) >/dev/null
	cd build-$*-$(notdir $(CC)) && FIB_TEST_SCALE=$(SAN_TEST_SCALE) \
	    $(CTEST) --output-on-failure -j $(JOBS)

# ---- benchmarks: our figures beside Boost.Context, ucontext, Boost.Fiber
# and Go, from one run. See docs/performance.md.
BENCH_BUILD ?= build/bench
BENCH_PY ?= python3

.PHONY: bench bench-build bench-smoke bench-deps

bench-build:
	@$(call CONFIGURE,-S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DFIB_BUILD_BENCH=ON -DFIB_BUILD_TESTS=OFF -DFIB_BUILD_EXAMPLES=OFF)
	$(CMAKE) --build $(BENCH_BUILD) -j $(JOBS)

bench: bench-build
	$(BENCH_PY) bench/run.py --build-dir $(BENCH_BUILD)

bench-smoke: bench-build
	$(BENCH_PY) bench/run.py --build-dir $(BENCH_BUILD) --smoke

bench-deps:
	apt-get update
	apt-get install -y g++ libboost-context-dev libboost-fiber-dev golang-go \
	    redis-server redis-tools wrk nginx-light

# Instructions per operation on aarch64 and riscv64: bench_fibers
# cross-built in $(BENCH_BUILD)-<arch> and counted under qemu-user with one
# instruction per block (valgrind does not run there). Not part of `make
# bench`; the cross compilers and qemu-user as for make test-aarch64.
# ICOUNT_ARGS="--arch aarch64 riscv64 x86_64" adds the native build under
# qemu-x86_64 (make bench-build first), to set beside callgrind's counts.
ICOUNT_ARGS ?=
ICOUNT_BUILDS = $(addprefix bench-icount-build-,$(CROSS_ARCHES))

.PHONY: bench-icount $(ICOUNT_BUILDS)

$(ICOUNT_BUILDS): bench-icount-build-%:
	@$(call CONFIGURE,-S . -B $(BENCH_BUILD)-$* \
	    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFIB_BUILD_BENCH=ON \
	    -DFIB_BUILD_TESTS=OFF -DFIB_BUILD_EXAMPLES=OFF \
	    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/$*-linux-gnu.cmake)
	$(CMAKE) --build $(BENCH_BUILD)-$* -j $(JOBS) --target bench_fibers

bench-icount: $(ICOUNT_BUILDS)
	$(BENCH_PY) bench/qemu_icount.py --build-dir $(BENCH_BUILD) --no-build \
	    $(ICOUNT_ARGS)

# ---- network benchmarks: the network examples against redis-server, nginx,
# Go and a plain epoll loop, driven by redis-benchmark, wrk and echo_client
# on loopback, server on CPU 0, client on CPU 1. Installs nothing (make
# bench-deps). See docs/performance-net.md.
NET_BUILD ?= build/bench-net
NET_ARGS ?=

.PHONY: bench-net bench-net-build

bench-net-build:
	@$(call CONFIGURE,-S . -B $(NET_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DFIB_BUILD_BENCH=ON -DFIB_BUILD_TESTS=OFF -DFIB_BUILD_EXAMPLES=ON)
	$(CMAKE) --build $(NET_BUILD) -j $(JOBS) --target echo_server \
	    echo_client kv_server http_server epoll_echo epoll_client

bench-net: bench-net-build
	$(BENCH_PY) bench/net/run_net.py --build-dir $(NET_BUILD) \
	    --results $(BENCH_BUILD)/results.jsonl $(NET_ARGS)

# ---- dynamic analysis: the whole suite under each tool, with each
# compiler that supports it, each in its own build directory. The
# library's switch hooks are compiled in by the sanitizer itself
# (src/sanitize.h); tests/safety.cmake sets the tools' options per test.
# Stress sizes are scaled down (the tools run 2-50x slower). The compiler
# comes from CC at the first configure (a -DCMAKE_C_COMPILER that differs
# in spelling from the cached one makes CMake drop the cache, -D's too).
SAN_CCS ?= gcc clang
SAN_TEST_SCALE ?= 0.1
TSAN_TEST_SCALE ?= 0.05 # TSan: at most 8128 fibers+threads alive at once
# gcc 12's TSan runtime (the older one) spends milliseconds making each TSan
# fiber (a thread context of its own, cleared page by page): a fifth of
# clang's sizes keeps its leg near clang's time.
TSAN_TEST_SCALE_gcc ?= 0.01
VALGRIND_TEST_SCALE ?= 0.1
VALGRIND_CC ?= gcc
SAN_CMAKE_ARGS ?=
ASAN_UBSAN = address,undefined # a variable: $(call) splits on bare commas

.PHONY: test-asan test-tsan test-valgrind test-safety

test-asan: $(addprefix test-asan-,$(SAN_CCS))
test-tsan: $(addprefix test-tsan-,$(SAN_CCS))
test-safety: test-asan test-tsan test-valgrind

# ASan + UBSan (-fno-sanitize-recover=all: the first report fails the test)
test-asan-%:
	@$(call CONFIGURE,-S . -B build-asan-$* \
	    -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DFIB_SANITIZE=$(ASAN_UBSAN) \
	    $(SAN_CMAKE_ARGS),CC=$*)
	$(CMAKE) --build build-asan-$* -j $(JOBS) >/dev/null
	cd build-asan-$* && FIB_TEST_SCALE=$(SAN_TEST_SCALE) \
	    $(CTEST) --output-on-failure -j $(JOBS)

test-tsan-%:
	@$(call CONFIGURE,-S . -B build-tsan-$* \
	    -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DFIB_SANITIZE=thread \
	    $(SAN_CMAKE_ARGS),CC=$*)
	$(CMAKE) --build build-tsan-$* -j $(JOBS) >/dev/null
	cd build-tsan-$* && \
	    FIB_TEST_SCALE=$(or $(TSAN_TEST_SCALE_$*),$(TSAN_TEST_SCALE)) \
	    $(CTEST) --output-on-failure -j $(JOBS)

# valgrind memcheck: every unit test and demo runs under
# tests/tools/valgrind_run.sh (one compiler: memcheck checks the binary).
test-valgrind:
	@$(call CONFIGURE,-S . -B build-valgrind \
	    -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(SAN_CMAKE_ARGS) \
	    -DFIB_WITH_VALGRIND=ON \
	    "-DFIB_TEST_LAUNCHER=bash;$(CURDIR)/tests/tools/valgrind_run.sh",CC=$(VALGRIND_CC))
	$(CMAKE) --build build-valgrind -j $(JOBS) >/dev/null
	cd build-valgrind && FIB_TEST_SCALE=$(VALGRIND_TEST_SCALE) \
	    $(CTEST) --output-on-failure -j $(JOBS)

# ---- fuzzing: the runtime under libFuzzer, with ASan + UBSan (clang; on
# Debian its runtimes are in libclang-rt-dev). Builds fuzz/ (a CMake
# project of its own, apart from the default build) in $(FUZZ_BUILD),
# replays every input in fuzz/regressions/ and fuzz/corpus/ once (any
# crash or failed check fails the goal), then fuzzes for $(FUZZ_SECONDS)
# seconds from the committed corpus; what it learns goes to
# $(FUZZ_BUILD)/corpus, a crash to $(FUZZ_BUILD)/crash-*. The findings
# listed in fuzz/known-bugs are tolerated (each by name) until their fix
# lands; FUZZ_STRICT=1 checks them too. FUZZ_SAN picks the sanitizers
# (default ASan + UBSan). See docs/testing.md.
FUZZ_BUILD ?= build-fuzz
FUZZ_CC ?= clang
FUZZ_SAN ?= address,undefined
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
FUZZ_STRICT ?=
FUZZ_KNOWN = $(if $(FUZZ_STRICT),,$(shell grep -v '^\#' fuzz/known-bugs | \
	grep . | paste -sd, -))
FUZZ_ENV = FUZZ_KNOWN_BUGS='$(FUZZ_KNOWN)'
FUZZ_INPUTS = $(wildcard fuzz/regressions/* fuzz/corpus/*)

.PHONY: fuzz fuzz-build fuzz-replay

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz: needs clang" \
	    "(Debian: apt-get install clang libclang-rt-dev)" >&2; exit 1; }
	@$(call CONFIGURE,-S fuzz -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=$(FUZZ_CC) \
	    -DFUZZ_SAN=$(FUZZ_SAN))
	$(CMAKE) --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_runtime >/dev/null

# Each input once, as a regression test (no fuzzing).
fuzz-replay: fuzz-build
	$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_runtime $(FUZZ_INPUTS) 2>&1 | \
	    { grep -a -E '^(Running|Executed)' -v || true; }; \
	    exit $${PIPESTATUS[0]}
	@echo "make fuzz: $(words $(FUZZ_INPUTS)) inputs replayed, no failure"

fuzz: fuzz-replay
	@mkdir -p $(FUZZ_BUILD)/corpus
	$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_runtime -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=20 -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/ \
	    $(FUZZ_ARGS) $(FUZZ_BUILD)/corpus fuzz/corpus
