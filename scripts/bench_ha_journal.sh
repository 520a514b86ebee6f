#!/usr/bin/env bash
# Put/get through a store master running alone, with HA journaling to etcd and without, in
# interleaved rounds: `weft bench-store --master` against a plain `weft store-master` and against
# an elected `weft store-master --ha` on a private etcd (Debian's etcd-server), then the HA
# master's journal counters. Usage: scripts/bench_ha_journal.sh [rounds] (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
weft=$PWD/build/weft
rounds=${1:-3}
export WEFT_CLUSTER_SECRET=bench-ha-journal-$$
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_dir=$(mktemp -d)
client=$(port); peer=$(port); plain=$(port); metrics=$(port)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$etcd_dir"' EXIT
etcd --data-dir "$etcd_dir" --listen-client-urls "http://127.0.0.1:$client" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "default=http://127.0.0.1:$peer" \
  >"$etcd_dir/etcd.log" 2>&1 &
pids+=($!)
sleep 2
common=(--set rank_size=256MiB)
"$weft" store-master --ha "etcd://127.0.0.1:$client" --set pool_name=bench-ha "${common[@]}" \
  --set coordinator=tcp://127.0.0.1:0 --set "metrics_address=127.0.0.1:$metrics" >"$etcd_dir/ha.log" 2>&1 &
pids+=($!)
"$weft" store-master --set pool_name=bench-plain "${common[@]}" --set "coordinator=tcp://127.0.0.1:$plain" \
  >"$etcd_dir/plain.log" 2>&1 &
pids+=($!)
sleep 3
bench=(--transport tcp --sizes 4K 64K --batch 64x16K --rounds 5 "${common[@]}")
for r in $(seq "$rounds"); do
  echo "== round $r: plain master"
  "$weft" bench-store --master "tcp://127.0.0.1:$plain" --set pool_name=bench-plain "${bench[@]}" 2>/dev/null | tail -9
  echo "== round $r: HA master (journal to etcd)"
  "$weft" bench-store --master "etcd://127.0.0.1:$client" --set pool_name=bench-ha "${bench[@]}" 2>/dev/null | tail -9
done
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$metrics/metrics').read().decode())" |
  grep '^weft_ha_journal'
