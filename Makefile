# weft: `make demo` and `make test` set everything up on a fresh Debian machine.
BUILD ?= build
ASAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps build build-asan demo test test-unit test-asan fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD) -j$(JOBS)

# The sanitizer build is clang's, with the libFuzzer targets in it: the one instrumented build of
# the libraries serves the ASAN+UBSAN tests and the brief fuzz runs of `make test` (a separate
# fuzz build was a fourth compile of the whole library in CI).
$(ASAN_BUILD)/build.ninja:
	CC=clang CXX=clang++ cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DWEFT_SANITIZE=ON \
	  -DWEFT_BUILD_FUZZ=ON -DWEFT_ENABLE_CUDA=OFF $(CMAKE_FLAGS)

build-asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD) -j$(JOBS)

# The main job: a local multi-peer fabric on the embedded coordinator.
demo: build
	$(BUILD)/weft demo --peers 4 --size 256MiB

# Every test this machine can run: unit + integration (release), the same under ASAN+UBSAN,
# and each fuzz target briefly.
test:
	@scripts/test.sh

bench: build
	$(BUILD)/weft bench --json $(BUILD)/bench.json --png $(BUILD)/bench.png

fuzz: deps
	scripts/fuzz.sh 30

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
