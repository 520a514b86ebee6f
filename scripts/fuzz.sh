#!/usr/bin/env bash
# Builds every libFuzzer target with clang in build-fuzz/ and runs each for $1 seconds
# (default 10). Exits non-zero if any target finds a crash; the reproducer is left under
# <build>/fuzz-artifacts/<target>/ and the log next to it.
#   scripts/fuzz.sh [seconds]        JOBS=n to change the build parallelism (default 2),
#                                    FUZZ_PARALLEL=n the targets run at once (default: one per core),
#                                    FUZZ_BUILD=dir an existing build configured with WEFT_BUILD_FUZZ=ON
#                                    (make test uses its sanitizer build) instead of build-fuzz/
set -euo pipefail

seconds=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
corpus=$build/fuzz-corpus
artifacts=$build/fuzz-artifacts

if [ -z "${FUZZ_BUILD:-}" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DWEFT_BUILD_FUZZ=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_ENABLE_CUDA=OFF >/dev/null
elif ! grep -q '^WEFT_BUILD_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  echo "fuzz.sh: $build is not a build configured with -DWEFT_BUILD_FUZZ=ON (clang). If it is a sanitizer" \
       "build made before make build-asan used clang, remove it and run make test again." >&2
  exit 2
fi
ninja -C "$build" -j"${JOBS:-2}" weft_fuzz_all

rm -rf "$corpus"
"$build/fuzz/weft_fuzz_seeds" "$corpus"
mkdir -p "$artifacts"

# One target per core at a time: each libFuzzer run is single-threaded.
run_target() {
  local bin=$1 name log
  name=$(basename "$bin")
  log=$artifacts/$name.log
  mkdir -p "$corpus/$name" "$artifacts/$name"
  if "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/$name/" \
       "$corpus/$name" >"$log" 2>&1; then
    echo "ok    $name ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs)" >"$log.result"
  else
    echo "FAIL  $name (log: $log)" >"$log.result"
  fi
}
parallel=${FUZZ_PARALLEL:-$(nproc)}
targets=("$build"/fuzz/*_fuzz)
for bin in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
  run_target "$bin" &
done
wait

failed=()
for bin in "${targets[@]}"; do
  name=$(basename "$bin")
  result=$(cat "$artifacts/$name.log.result" 2>/dev/null || echo "FAIL  $name (no result: the runner died)")
  echo "$result"
  if [[ $result != ok* ]]; then
    tail -n 40 "$artifacts/$name.log" 2>/dev/null || true
    failed+=("$name")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz targets that crashed: ${failed[*]}"
  exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
