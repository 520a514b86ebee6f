#!/usr/bin/env bash
# Builds every libFuzzer target with clang in build-fuzz/ and runs each for $1 seconds
# (default 10). Exits non-zero if any target finds a crash; the reproducer is left under
# build-fuzz/fuzz-artifacts/<target>/ and the log next to it.
#   scripts/fuzz.sh [seconds]        JOBS=n to change the build parallelism (default 2)
set -euo pipefail

seconds=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-fuzz
corpus=$build/fuzz-corpus
artifacts=$build/fuzz-artifacts

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DWEFT_BUILD_FUZZ=ON -DWEFT_BUILD_TESTS=OFF -DWEFT_ENABLE_CUDA=OFF >/dev/null
ninja -C "$build" -j"${JOBS:-2}" weft_fuzz_all

rm -rf "$corpus"
"$build/fuzz/weft_fuzz_seeds" "$corpus"
mkdir -p "$artifacts"

failed=()
for bin in "$build"/fuzz/*_fuzz; do
  name=$(basename "$bin")
  mkdir -p "$corpus/$name" "$artifacts/$name"
  log=$artifacts/$name.log
  if "$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/$name/" \
       "$corpus/$name" >"$log" 2>&1; then
    echo "ok    $name ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs)"
  else
    echo "FAIL  $name (log: $log)"
    tail -n 40 "$log"
    failed+=("$name")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz targets that crashed: ${failed[*]}"
  exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
