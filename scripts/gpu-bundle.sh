#!/bin/bash
# Builds the GPU bundle here (this machine has the -dev packages; the GPU machine does not):
# build-gpu/bundle/bin holds the stripped GPU tests, a few unit tests and the weft binary,
# build-gpu/bundle/lib the non-system shared libraries they load (spdlog, fmt, numa, ...).
# libstdc++ and libgcc are linked statically (WEFT_GPU_BUNDLE=ON) so the binaries do not depend
# on the GPU image's C++ runtime. Then, on the GPU machine, from the repo root:
#   scripts/gpu-check.sh            (with build-gpu/bundle copied along)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWEFT_GPU_BUNDLE=ON >/dev/null
TARGETS=(weft cuda_copy_test device_segment_ipc_test pool_device_test trans_device_test trans_ipc_test cuda_plan_test
         engine_test gva_test)
ninja -C "$BUILD" "${TARGETS[@]}"
rm -rf "$BUILD/bundle"
mkdir -p "$BUILD/bundle/bin" "$BUILD/bundle/lib"
for t in "${TARGETS[@]}"; do
  f=$(find "$BUILD" -maxdepth 3 -type f -name "$t" -perm -u+x | head -1)
  [ -n "$f" ] || { echo "gpu-bundle: $t was not built" >&2; exit 1; }
  cp "$f" "$BUILD/bundle/bin/$t"
  strip --strip-unneeded "$BUILD/bundle/bin/$t"
done
# Shared libraries outside the C library family, which the GPU image has in a newer version.
system='^(linux-vdso|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux|libgcc_s\.so|libstdc\+\+\.so)'
for f in "$BUILD"/bundle/bin/*; do
  ldd "$f" | awk '/=>/ {print $1, $3}' | while read -r name path; do
    if ! [[ "$name" =~ $system ]] && [ -f "$path" ]; then cp -L "$path" "$BUILD/bundle/lib/$name"; fi
  done
done
strip --strip-unneeded "$BUILD"/bundle/lib/* 2>/dev/null || true
echo "bundle: $(du -sh "$BUILD/bundle" | cut -f1)"
ls -la "$BUILD/bundle/bin" "$BUILD/bundle/lib"
