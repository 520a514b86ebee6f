#!/bin/bash
# One call on a GPU machine: checks the bundle loads, runs tests/gpu and the GPU-relevant unit
# tests, compute-sanitizer memcheck over the copy kernels once, the GPU benchmarks (and the NCCL
# baseline when two GPUs are present), then prints a summary table last.
#
# Run from the repo root after scripts/gpu-bundle.sh built build-gpu/bundle and it was copied to the
# GPU machine along with the checkout (logs go to $OUT).
# Options: --quick (fewer benchmark sizes), --no-bench, --no-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/weft-gpu-check}
mkdir -p "$OUTDIR"
B=build-gpu/bundle
[ -f "$B/bin.tar.gz" ] && tar -xzf "$B/bin.tar.gz" -C "$B"  # gpu-bundle.sh packs the binaries
export LD_LIBRARY_PATH="$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"  # compute-sanitizer
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never multicast
QUICK="" BENCH=1 SANITIZE=1
for a in "$@"; do
  case "$a" in
    --quick) QUICK=--quick ;;
    --no-bench) BENCH=0 ;;
    --no-sanitizer) SANITIZE=0 ;;
  esac
done

SUMMARY=()
TESTLOG="$OUTDIR/tests.log"
: >"$TESTLOG"
record() { SUMMARY+=("$(printf '%-28s %-6s %7s  %s' "$1" "$2" "$3" "$4")"); }

# gtest counts from a log: "passed/failed/skipped".
counts() {
  local log=$1 p f s
  p=$(grep -o '^\[  PASSED  \] [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  f=$(grep -o '^\[  FAILED  \] [0-9]* test' "$log" | tail -1 | grep -o '[0-9]*' | head -1)
  s=$(grep -o '^\[  SKIPPED \] [0-9]* test' "$log" | tail -1 | grep -o '[0-9]*' | head -1)
  echo "${p:-0} passed, ${f:-0} failed, ${s:-0} skipped"
}

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", (b - a) / 1e9 }'; }

run_test() { run_labelled "$1" "$@"; }

# run_labelled LABEL BINARY ARGS...: one summary row named LABEL.
run_labelled() {
  local label=$1 name=$2; shift 2
  local log="$OUTDIR/.$label.log" t0 t1 rc
  t0=$(date +%s%N)
  timeout 900 "$B/bin/$name" "$@" >"$log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  { echo "===== $label: $name $* (rc $rc)"; cat "$log"; } >>"$TESTLOG"
  record "$label" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" "$(counts "$log")"
  rm -f "$log"
}

{
  echo "== machine"; uname -a; nvidia-smi || true
  nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,clocks.mem,pcie.link.gen.current,pcie.link.width.current --format=csv || true
  nvidia-smi topo -m 2>/dev/null || true
  echo "== loader"
  for f in "$B"/bin/* "$B"/python/weft/_weft*.so; do [ -f "$f" ] && { echo "-- $f"; ldd "$f"; }; done
} >"$OUTDIR/machine.log" 2>&1
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
missing=$(grep -c "=> not found" "$OUTDIR/machine.log" || true)
record "bundle loads" "$([ "$missing" = 0 ] && echo ok || echo FAIL)" "-" "$GPUS GPU(s); $missing missing libraries"

run_test cuda_plan_test
run_test engine_test
run_test gva_test
run_test cuda_copy_test
run_test device_segment_ipc_test
run_test pool_device_test
run_test trans_device_test
# The ucx transport's device path with a UCX that has CUDA (PyPI's libucx-cu13, when bundled).
if [ -f "$B/ucx-cuda/libucx/lib/libucp.so.0" ]; then
  WEFT_UCX_LIBRARY="$PWD/$B/ucx-cuda/libucx/lib/libucp.so.0" run_labelled "trans_device_test ucx-cuda" trans_device_test \
    --gtest_filter='*Ucx*'
else
  record "trans_device_test ucx-cuda" "skip" "-" "libucx-cu13 was not bundled"
fi
run_test trans_ipc_test
run_test symm_device_test

# The Python package (bundle/python: CPython 3.12, with CUDA): it must see this machine's GPUs;
# then tests/python/test_cuda_package.py (which expects "available" where nvidia-smi lists GPUs) and
# the Python GPU tests (tests/python/test_gpu*.py, where there are any), if pytest is installed.
if [ -d "$B/python/weft" ]; then
  t0=$(date +%s%N)
  PYTHONPATH="$PWD/$B/python" timeout 300 python3 -c 'import weft, weft.mooncake; from weft import _weft
print(weft.cuda_available(), weft.cuda_status(), "| archs", _weft.cuda_architectures, "| SUPPORT_CUDA", weft.mooncake.SUPPORT_CUDA)' \
    >"$OUTDIR/python.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  { echo "===== python import (rc $rc)"; cat "$OUTDIR/python.log"; } >>"$TESTLOG"
  record "python import weft" "$([ $rc = 0 ] && grep -q '^True available' "$OUTDIR/python.log" && echo ok || echo FAIL)" \
    "$(secs "$t0" "$t1")" "$(tail -1 "$OUTDIR/python.log" | cut -c1-100)"
  gpu_tests=(tests/python/test_cuda_package.py)
  for f in tests/python/test_gpu*.py; do [ -f "$f" ] && gpu_tests+=("$f"); done
  if ! python3 -m pytest --version >/dev/null 2>&1; then
    record "python GPU tests" "skip" "-" "pytest is not installed for python3 (pip install pytest)"
  else
    t0=$(date +%s%N)
    # The archs the bundle's package was built for (gpu-bundle.sh), not pyproject.toml's list.
    expect_archs=$(cat "$B/cuda_archs" 2>/dev/null || true)
    PYTHONPATH="$PWD/$B/python" env ${expect_archs:+WEFT_EXPECT_CUDA_ARCHS="$expect_archs"} timeout 300 \
      python3 -m pytest -q -rs "${gpu_tests[@]}" >"$OUTDIR/python_gpu.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    { echo "===== python GPU tests (rc $rc)"; cat "$OUTDIR/python_gpu.log"; } >>"$TESTLOG"
    # A GPU machine where every Python GPU test skips has found no GPU: that is a failure here.
    record "python GPU tests" "$([ $rc = 0 ] && grep -qE '[0-9]+ passed' "$OUTDIR/python_gpu.log" && echo ok || echo FAIL)" \
      "$(secs "$t0" "$t1")" \
      "$(grep -E '[0-9]+ (passed|failed|skipped|error)' "$OUTDIR/python_gpu.log" | tail -1 | tr -d '=' | sed 's/^ *//')"
  fi
else
  record "python import weft" "FAIL" "-" "the bundle has no python/weft: rebuild it with scripts/gpu-bundle.sh"
fi

# The main job with device slices: every peer's GD rows must be there and verified.
t0=$(date +%s%N)
timeout 300 "$B/bin/weft" demo --peers 3 --size 64MiB >"$OUTDIR/demo.log" 2>&1
rc=$?
t1=$(date +%s%N)
gd_rows=$(grep -c 'GD.* 3/3' "$OUTDIR/demo.log" || true)
record "weft demo (device slices)" "$([ $rc = 0 ] && [ "$gd_rows" -gt 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
  "$gd_rows GD rows verified by 3 peers; $(tail -1 "$OUTDIR/demo.log")"

if [ $SANITIZE = 1 ]; then
  if command -v compute-sanitizer >/dev/null; then
    t0=$(date +%s%N)
    # Memory accesses of the kernels only: API calls that fail by design (the peer-access probe's
    # AlreadyEnabled, the VMM-handle probe on cudaMalloc memory) are not reported.
    timeout 600 compute-sanitizer --tool memcheck --leak-check no --report-api-errors no --error-exitcode 3 \
      "$B/bin/cuda_copy_test" --gtest_filter='*KvBatchIsOneKernelLaunch*:*OrderedOnTheCallersStream*:*KvBatchUnderAnSmBudget*:*CopyPagesOnTheCallersStream*:*CopyPagesRefusesBadInput*:*EveryKernelVariant*' \
      >"$OUTDIR/sanitizer.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    record "memcheck copy kernels" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
      "$(grep -o 'ERROR SUMMARY: [0-9]* error[s]*' "$OUTDIR/sanitizer.log" | tail -1) $(counts "$OUTDIR/sanitizer.log")"
  else
    record "memcheck copy kernels" "skip" "-" "compute-sanitizer not on PATH"
  fi
fi

if [ $BENCH = 1 ]; then
  t0=$(date +%s%N)
  timeout 600 "$B/bin/weft" bench-gpu $QUICK --json "$OUTDIR/bench_gpu.json" >"$OUTDIR/bench_gpu.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  record "weft bench-gpu" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
    "$(grep -c 'GB/s\| us ' "$OUTDIR/bench_gpu.log") rows"
  # The page-batch rows (Engine::CopyPages) and the two-GPU rows, one summary line each.
  if [ -f "$OUTDIR/bench_gpu.json" ]; then
    while IFS= read -r line; do SUMMARY+=("$line"); done < <(python3 - "$OUTDIR/bench_gpu.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
by = {(r["group"], r["case"]): r for r in rows}
for r in rows:
    if r["group"] == "kv" and r["case"].endswith(" pages vs large"):
        name = r["case"][: -len(" pages vs large")]
        pp = by.get(("kv", name + " pages vs per-page"), {})
        old = by.get(("kv", name + " vs large copy"), {})
        print("%-28s %-6s %7s  %.3fx large copy, %.1fx per-page memcpy (CopyBatch %.3fx)" % (
            "pages " + name.replace("4096x", ""), "ok" if r["ratio"] >= 0.9 else "below", "-", r["ratio"],
            pp.get("ratio", 0), old.get("ratio", 0)))
    if r["group"] == "kv" and " pages transport " in r["case"] or (r["group"] == "kv" and " page kernel " in r["case"]):
        print("%-28s %-6s %7s  %.3fx large copy (%s)" % (
            r["case"].replace("4096x", "").replace("pages transport", "tr")[:28], "-", "-", r["ratio"], r["note"][:60]))
    if r["group"] == "gemm":
        print("%-28s %-6s %7s  %.3f (%.0f vs %.0f %s) %s" % (
            r["case"][:28], "-", "-", r["ratio"], r["weft"], r["baseline"], r["unit"], r["note"][:40]))
    if r["group"] in ("nvlink", "ipc"):
        print("%-28s %-6s %7s  %.3fx %s (%.0f vs %.0f GB/s)" % (
            r["case"][:28], "ok" if r["ratio"] >= 0.97 else "below", "-", r["ratio"], r["baseline_is"], r["weft"], r["baseline"]))
PY
)
  fi
  # The transfer engine with device buffers, two processes on this host: device to device through
  # CUDA IPC against cudaMemcpyPeer of the same bytes in one process (same run); then device
  # buffers over tcp (the pipelined staging) against host buffers.
  t0=$(date +%s%N)
  timeout 300 "$B/bin/weft" bench-trans --location cuda:0 --remote-location "cuda:$((GPUS >= 2 ? 1 : 0))" \
    --paths auto --rounds 5 >>"$OUTDIR/bench_gpu.log" 2>&1
  rc1=$?
  timeout 300 "$B/bin/weft" bench-trans --location cuda:0 --remote-location cpu --paths tcp --rounds 5 \
    >>"$OUTDIR/bench_gpu.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  # Columns: case path local op ms us GB/s memcpy vs-memcpy [vs-host] [vs-peer].
  while IFS= read -r line; do SUMMARY+=("$line"); done < <(grep -E '^[0-9]+x[0-9]+[KM] +[a-z]+ +cuda' "$OUTDIR/bench_gpu.log" |
    awk '{ratio = ""; for (i = 10; i <= NF; i++) ratio = ratio " " $i;
          printf "%-28s %-6s %7s  %s GB/s,%s (vs host / vs cudaMemcpyPeer)\n", "trans " $1 " " $4 " " $2, "-", "-", $7, ratio}')
  record "weft bench-trans cuda:0" "$([ $rc = 0 ] && [ $rc1 = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
    "device buffers: cuda IPC vs cudaMemcpyPeer; tcp vs host buffers"
  t0=$(date +%s%N)
  timeout 300 "$B/bin/weft" bench --quick --no-progress --max 16MiB >"$OUTDIR/bench.log" 2>&1
  rc=$?
  t1=$(date +%s%N)
  record "weft bench --quick" "$([ $rc = 0 ] && grep -q 'device paths (' "$OUTDIR/bench.log" && echo ok || echo FAIL)" \
    "$(secs "$t0" "$t1")" "host directions, then the device paths"
  if [ "$GPUS" -ge 2 ] && [ -f scripts/nccl_baseline.py ]; then
    timeout 300 python3 scripts/nccl_baseline.py >>"$OUTDIR/bench_gpu.log" 2>&1
    rc=$?
    record "nccl baseline (2 GPUs)" "$([ $rc = 0 ] && echo ok || echo FAIL)" "-" "appended to bench_gpu.log"
  fi
  # weft's device collectives against NCCL (two GPUs and up; on one, two time-sliced ranks and no NCCL).
  if [ -d "$B/python/weft" ]; then
    t0=$(date +%s%N)
    PYTHONPATH="$PWD/$B/python" timeout 600 python3 scripts/bench_coll_gpu.py --iters "$([ "$GPUS" -ge 2 ] && echo 50 || echo 10)" \
      --json "$OUTDIR/bench_coll_gpu.json" >"$OUTDIR/bench_coll_gpu.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    record "bench_coll_gpu.py" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
      "$(grep -c '^all\|^reduce' "$OUTDIR/bench_coll_gpu.log") rows; $(grep -m1 '^#' "$OUTDIR/bench_coll_gpu.log" | cut -c3-60)"
    # The same with weft's launches asynchronous (TeamOptions::device_async), timed as NCCL's are.
    t0=$(date +%s%N)
    PYTHONPATH="$PWD/$B/python" timeout 600 python3 scripts/bench_coll_gpu.py --device-async \
      --iters "$([ "$GPUS" -ge 2 ] && echo 50 || echo 10)" --json "$OUTDIR/bench_coll_gpu_async.json" \
      >"$OUTDIR/bench_coll_gpu_async.log" 2>&1
    rc=$?
    t1=$(date +%s%N)
    record "bench_coll_gpu.py async" "$([ $rc = 0 ] && echo ok || echo FAIL)" "$(secs "$t0" "$t1")" \
      "$(grep -c '^all\|^reduce' "$OUTDIR/bench_coll_gpu_async.log") rows"
  fi
fi

{
  echo
  echo "== bench (weft vs baseline in the same run; ratio > 1: weft better)"
  [ -f "$OUTDIR/bench_gpu.log" ] && grep -E '^(GPU|group|pcie|kv|latency|model|kv-16sm|nvlink|ipc|gemm|nccl[a-z-]*) ' "$OUTDIR/bench_gpu.log"
  [ -f "$OUTDIR/bench_coll_gpu.log" ] && cat "$OUTDIR/bench_coll_gpu.log"
  [ -f "$OUTDIR/bench_coll_gpu_async.log" ] && cat "$OUTDIR/bench_coll_gpu_async.log"
  echo
  echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $GPUS GPU(s))"
  printf '%-28s %-6s %7s  %s\n' step status time detail
  for line in "${SUMMARY[@]}"; do echo "$line"; done
} | tee "$OUTDIR/summary.txt"
grep -q ' FAIL ' "$OUTDIR/summary.txt" && exit 1
exit 0
