#!/usr/bin/env bash
# The README's test command: installs, builds, and runs every test this machine can run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
# Each phase header shows the minutes spent so far, so a slow phase shows in the CI log.
phase() { printf '== %s  [%dm%02ds]\n' "$1" $((SECONDS / 60)) $((SECONDS % 60)); }

scripts/install-deps.sh

phase "release build"
make --no-print-directory build
phase "tests (release)"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 600

phase "sanitizer build (ASAN + UBSAN, clang; the fuzz targets too)"
make --no-print-directory build-asan
phase "tests (ASAN + UBSAN)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 900

phase "fuzz targets (brief, from the sanitizer build)"
FUZZ_BUILD="$PWD/build-asan" scripts/fuzz.sh "${WEFT_FUZZ_SECONDS:-10}"

phase "Python package (pip install . into build-py/venv) and tests/python"
[ -x build-py/venv/bin/python ] || python3 -m venv build-py/venv
build-py/venv/bin/pip install -q --disable-pip-version-check scikit-build-core nanobind pytest numpy
# PyPI's UCX (with CUDA, no InfiniBand): the ucx transport must also run on it (test_trans.py).
build-py/venv/bin/pip install -q --disable-pip-version-check libucx-cu13 ||
  echo "test.sh: libucx-cu13 could not be installed; its test will say so and skip"
# No build isolation: the build tools above have stable paths, so build-py/ rebuilds incrementally.
# One CUDA architecture is enough to test the CUDA-enabled package (what runs here never launches
# a kernel); a release wheel (plain `pip install .`) carries every one pyproject.toml names.
test_cuda_archs="${WEFT_TEST_CUDA_ARCHS:-90-real}"
CMAKE_BUILD_PARALLEL_LEVEL="$jobs" build-py/venv/bin/pip install -q --disable-pip-version-check \
  --no-build-isolation --force-reinstall --no-deps \
  --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES="$test_cuda_archs" .
build-py/venv/bin/python -c 'import weft; print("weft.cuda_status():", weft.cuda_status())'  # with CUDA where nvcc is
# WEFT_BIN: the release build's CLI, which test_store.py's mooncake_master test runs as the master.
# WEFT_EXPECT_CUDA_ARCHS: what test_cuda_package.py must find in the package built above.
WEFT_BIN="$PWD/build/weft" WEFT_EXPECT_CUDA_ARCHS="${test_cuda_archs//;/,}" build-py/venv/bin/python -m pytest -q -rs tests/python

phase "GPU tests"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "a GPU is present: run scripts/gpu-check.sh for the GPU tests"
else
  echo "SKIPPED: no GPU on this machine (GPU tests run through scripts/gpu-check.sh on a GPU machine)"
fi
phase "all tests passed"
