# The front door: `make run` builds and runs the demo, `make test` builds
# everything and runs every test. CMake does the real work in $(BUILD).
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE ?= cmake
CTEST ?= ctest
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all run test clean configure

all: configure
	$(CMAKE) --build $(BUILD) -j $(JOBS)

configure:
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_C_COMPILER=$(CC) >/dev/null

run: all
	./$(BUILD)/examples/counters

test: all
	cd $(BUILD) && $(CTEST) --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) build-*

# ---- ports (issue 5): cross-build with Debian's cross compilers and run
# the whole suite under qemu-user (.ci/run installs both). Stress sizes are
# scaled down: qemu runs the switch ~20-50x slower than the hardware.
QEMU_TEST_SCALE ?= 0.05
CROSS_ARCHES = aarch64 riscv64

.PHONY: $(addprefix test-,$(CROSS_ARCHES))

$(addprefix test-,$(CROSS_ARCHES)): test-%:
	@$(CMAKE) -S . -B build-$* -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_TOOLCHAIN_FILE=cmake/toolchains/$*-linux-gnu.cmake >/dev/null
	$(CMAKE) --build build-$* -j $(JOBS)
	cd build-$* && FIB_TEST_SCALE=$(QEMU_TEST_SCALE) \
	    $(CTEST) --output-on-failure -j $(JOBS)

# ---- benchmarks (issue 3): our figures beside Boost.Context, ucontext,
# Boost.Fiber and Go, from one run. See docs/performance.md.
BENCH_BUILD ?= build/bench
BENCH_PY ?= python3

.PHONY: bench bench-build bench-smoke bench-deps

bench-build:
	@$(CMAKE) -S . -B $(BENCH_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DFIB_BUILD_BENCH=ON -DFIB_BUILD_TESTS=OFF -DFIB_BUILD_EXAMPLES=OFF \
	    >/dev/null
	$(CMAKE) --build $(BENCH_BUILD) -j $(JOBS)

bench: bench-build
	$(BENCH_PY) bench/run.py --build-dir $(BENCH_BUILD)

bench-smoke: bench-build
	$(BENCH_PY) bench/run.py --build-dir $(BENCH_BUILD) --smoke

bench-deps:
	apt-get update
	apt-get install -y g++ libboost-context-dev libboost-fiber-dev golang-go
