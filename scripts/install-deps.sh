#!/usr/bin/env bash
# Installs what weft needs to build, test and benchmark, skipping what is already there.
# Debian packages through apt-get, Python packages through pip. Safe to run repeatedly.
# --bench also installs what only the benchmarks' baselines need (redis-server and redis-py for
# scripts/bench_store.py).
set -euo pipefail

bench=0
[ "${1:-}" = "--bench" ] && bench=1

debs=(cmake ninja-build g++ pkg-config make
      libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
      libgtest-dev libgmock-dev libbenchmark-dev libnuma-dev libucx-dev ucx-utils libxxhash-dev libgloo-dev
      clang libclang-rt-14-dev python3 python3-pip python3-venv iproute2 etcd-server)
((bench)) && debs+=(redis-server)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# pip name, or "pip name:import name" where they differ.
pys=(matplotlib nanobind scikit-build-core:scikit_build_core pytest numpy)
((bench)) && pys+=(redis)
for entry in "${pys[@]}"; do
  p=${entry%%:*}
  mod=${entry#*:}
  python3 -c "import $mod" 2>/dev/null || {
    echo "install-deps: pip install $p"
    python3 -m pip install -q "$p" || python3 -m pip install -q --break-system-packages "$p"
  }
done
