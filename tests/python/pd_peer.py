"""The prefill worker for tests/python/test_pd.py, run as its own process:

    python pd_peer.py --layers L --blocks N --block-elems E --seed S [--split-kv] [--secret X]

Builds L KV-cache layers of uint16 ([2, N, E] with --split-kv, else [N, E]) filled from the seed
(kv_caches(), which the test calls too to know the expected bytes), opens a weft.pd.KVPeer on them
and prints "ready <name>". Then one command a line on stdin, one answer a line on stdout:

    expect RID SECONDS       -> "ok"                 (KVPeer.expect_read)
    await-sent N SECONDS     -> "sent RID,RID,..."   (what finished() reported, once N ids or time is up)
    exit                     -> exits 0
"""

import argparse
import sys
import time

import numpy as np

from weft.pd import KVPeer


def kv_caches(layers: int, blocks: int, block_elems: int, seed: int, split_kv: bool) -> list:
    rng = np.random.default_rng(seed)
    shape = (2, blocks, block_elems) if split_kv else (blocks, block_elems)
    return [rng.integers(0, 1 << 16, size=shape, dtype=np.uint16) for _ in range(layers)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--blocks", type=int, required=True)
    ap.add_argument("--block-elems", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--split-kv", action="store_true")
    ap.add_argument("--secret", default="pd-test-secret")
    args = ap.parse_args()
    caches = kv_caches(args.layers, args.blocks, args.block_elems, args.seed, args.split_kv)
    peer = KVPeer(caches, num_blocks=args.blocks, local_name="127.0.0.1", cluster_secret=args.secret)
    print("ready", peer.name, flush=True)
    sent: set = set()
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "expect":
            peer.expect_read(cmd[1], float(cmd[2]))
            print("ok", flush=True)
        elif cmd[0] == "await-sent":
            want, deadline = int(cmd[1]), time.monotonic() + float(cmd[2])
            while len(sent) < want and time.monotonic() < deadline:
                sent |= peer.finished()[0]
                time.sleep(0.01)
            print("sent", ",".join(sorted(sent)), flush=True)
        elif cmd[0] == "exit":
            break
    peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
