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
