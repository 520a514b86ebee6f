#!/bin/bash
# Builds the GPU bundle here (this machine has the -dev packages; the GPU machine does not):
# build-gpu/bundle/bin.tar.gz holds the stripped GPU tests, a few unit tests and the weft binary,
# build-gpu/bundle/lib the non-system shared libraries they load (spdlog, fmt, numa, ...),
# build-gpu/bundle/python/weft the weft Python package for the GPU machine's CPython 3.12 (with CUDA).
# libstdc++ and libgcc are linked statically (WEFT_GPU_BUNDLE=ON) so the binaries do not depend
# on the GPU image's C++ runtime. Then, on the GPU machine, from the repo root:
#   scripts/gpu-check.sh            (with build-gpu/bundle copied along)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWEFT_GPU_BUNDLE=ON >/dev/null
TARGETS=(weft cuda_copy_test device_segment_ipc_test pool_device_test trans_device_test trans_ipc_test cuda_plan_test
         engine_test gva_test symm_device_test)
ninja -C "$BUILD" "${TARGETS[@]}"
# The Python package for the GPU machine's CPython 3.12 (torch there, no -dev packages to build
# with): a wheel built here by a 3.12 venv, with CUDA (the archs of pyproject.toml) and the C++
# runtime linked in (WEFT_GPU_BUNDLE). Left out, with a note, where no CPython 3.12 is found.
# Its CUDA archs: Hopper (H100/H200) machine code only unless WEFT_BUNDLE_CUDA_ARCHS names others
# (a release wheel carries pyproject.toml's list; each arch adds minutes to this build). Written to
# bundle/cuda_archs, where gpu-check.sh tells test_cuda_package.py what to expect.
BUNDLE_ARCHS=${WEFT_BUNDLE_CUDA_ARCHS:-90-real}
PY312=${WEFT_BUNDLE_PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3.12}
PY_WHEEL="$BUILD/py-wheel"
rm -rf "$PY_WHEEL"
if [ -x "$PY312" ]; then
  PY_VENV="$BUILD/py312-venv"
  [ -x "$PY_VENV/bin/python" ] || "$PY312" -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install -q --disable-pip-version-check scikit-build-core nanobind
  # No build isolation and a fixed build folder (build-gpu/py312): rebuilds only what changed.
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" "$PY_VENV/bin/pip" wheel -q \
    --disable-pip-version-check --no-build-isolation --no-deps -w "$PY_WHEEL" \
    -C build-dir="$BUILD/py312" -C cmake.define.WEFT_GPU_BUNDLE=ON \
    -C cmake.define.CMAKE_CUDA_ARCHITECTURES="$BUNDLE_ARCHS" .
else
  echo "gpu-bundle: no CPython 3.12 at $PY312 (set WEFT_BUNDLE_PYTHON): the Python package is left out"
fi
rm -rf "$BUILD/bundle"
mkdir -p "$BUILD/bundle/bin" "$BUILD/bundle/lib"
if compgen -G "$PY_WHEEL/weft-*.whl" >/dev/null; then
  mkdir -p "$BUILD/bundle/python"
  python3 -m zipfile -e "$PY_WHEEL"/weft-*.whl "$BUILD/bundle/python"
  echo "${BUNDLE_ARCHS//;/,}" >"$BUILD/bundle/cuda_archs"
  rm -rf "$BUILD"/bundle/python/weft-*.dist-info
  strip --strip-unneeded "$BUILD"/bundle/python/weft/_weft*.so
  # Its own NEEDED entries (ldd also lists spdlog's libstdc++, which the binaries share).
  needed=$(readelf -d "$BUILD"/bundle/python/weft/_weft*.so | grep NEEDED)
  if [[ "$needed" == *libstdc++* ]]; then
    echo "gpu-bundle: the Python extension links libstdc++ dynamically (python/CMakeLists.txt: WEFT_GPU_BUNDLE)" >&2
    exit 1
  fi
fi
for t in "${TARGETS[@]}"; do
  f=$(find "$BUILD" -maxdepth 3 -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "gpu-bundle: $t was not built" >&2; exit 1; }
  cp "$f" "$BUILD/bundle/bin/$t"
  strip --strip-unneeded "$BUILD/bundle/bin/$t"
done
# Shared libraries outside the C library family, which the GPU image has in a newer version.
system='^(linux-vdso|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux|libgcc_s\.so|libstdc\+\+\.so)'
for f in "$BUILD"/bundle/bin/* "$BUILD"/bundle/python/weft/_weft*.so; do
  [ -f "$f" ] || continue
  ldd "$f" | awk '/=>/ {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $system ]] && [ -f "$path" ]; then cp -L "$path" "$BUILD/bundle/lib/$name"; fi
  done
done
# UCX for the ucx transport's device tests: Debian's (no CUDA: device ends are staged) in lib/,
# where libucp.so.0 is found by default, and PyPI's libucx-cu13 (CUDA: device memory given to UCX)
# in ucx-cuda/, chosen with WEFT_UCX_LIBRARY. Either is skipped, with a note, when not available.
for l in libucp.so.0 libucs.so.0 libuct.so.0 libucm.so.0; do
  f=$(ldconfig -p | awk -v l="$l" '$1 == l && !p {p = $NF} END {print p}')  # reads all: no SIGPIPE under pipefail
  if [ -n "$f" ]; then cp -L "$f" "$BUILD/bundle/lib/$l"; else echo "gpu-bundle: no $l here (Debian UCX left out)"; fi
done
WHEEL_DIR="$BUILD/ucx-wheel"
if [ ! -d "$WHEEL_DIR/libucx/lib" ]; then
  rm -rf "$WHEEL_DIR" && mkdir -p "$WHEEL_DIR"
  if timeout 300 pip download --quiet --no-deps libucx-cu13 -d "$WHEEL_DIR" >/dev/null 2>&1; then
    (cd "$WHEEL_DIR" && python3 -m zipfile -e ./*.whl . >/dev/null)
  else
    echo "gpu-bundle: libucx-cu13 could not be downloaded (the CUDA UCX case will skip)"
  fi
fi
if [ -d "$WHEEL_DIR/libucx/lib" ]; then
  # The wheel's own layout: its CUDA modules find the CUDA runtime it carries through
  # $ORIGIN/../../../libucx_cu13.libs, as in a pip install.
  U="$BUILD/bundle/ucx-cuda"
  rm -rf "$U" && mkdir -p "$U/libucx/lib/ucx" "$U/libucx_cu13.libs"
  for l in libucp.so.0 libucs.so.0 libuct.so.0 libucm.so.0 libucs_signal.so.0; do
    cp -L "$WHEEL_DIR/libucx/lib/$l" "$U/libucx/lib/$l"
  done
  cp -L "$WHEEL_DIR"/libucx/lib/ucx/lib{uct_cuda,ucm_cuda}.so.0 "$U/libucx/lib/ucx/"
  cp -L "$WHEEL_DIR"/libucx_cu13.libs/libcudart-*.so* "$U/libucx_cu13.libs/"
fi
strip --strip-unneeded "$BUILD"/bundle/lib/* "$BUILD"/bundle/ucx-cuda/libucx/lib/*.so.* "$BUILD"/bundle/ucx-cuda/libucx/lib/ucx/* 2>/dev/null || true
ls -la "$BUILD/bundle/bin" "$BUILD/bundle/lib"; ls -la "$BUILD/bundle/ucx-cuda" "$BUILD/bundle/python/weft" 2>/dev/null || true
# The binaries travel compressed (each carries the static CUDA runtime: 45 MiB, 18 gzipped);
# gpu-check.sh unpacks them.
tar -czf "$BUILD/bundle/bin.tar.gz" -C "$BUILD/bundle" bin && rm -rf "$BUILD/bundle/bin"
echo "bundle: $(du -sh "$BUILD/bundle" | cut -f1)"
# The bundle travels to the GPU machine with the checkout, which must stay under 64 MiB in all.
kib=$(du -sk "$BUILD/bundle" | cut -f1)
if [ "$kib" -gt $((60 * 1024)) ]; then
  echo "gpu-bundle: the bundle is $((kib / 1024)) MiB, over 60 MiB: it may not fit the 64 MiB that goes to the GPU machine" >&2
  exit 1
fi
