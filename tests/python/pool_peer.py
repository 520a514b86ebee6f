"""A joining peer for tests/python/test_pool.py, run as its own process:

    python pool_peer.py POOL_NAME RANK_SIZE

Joins the pool (which the test hosts), prints "rank N", enters barrier 1, writes fresh random
data into the host's memory and reads it back (every byte compared), enters barrier 2 (the host
has finished with this peer's memory) and leaves. Exit status 0 when every check passed.
"""

import os
import sys

import numpy as np

import weft


def main() -> int:
    pool_name, rank_size = sys.argv[1], sys.argv[2]
    pool = weft.Pool(pool_name=pool_name, rank_size=rank_size, mode="join").join()
    print(f"rank {pool.rank}", flush=True)
    ranks = pool.wait_for_peers(2, timeout=60)
    pool.barrier(timeout=120)  # 1

    host = next(r for r in ranks if r != pool.rank)
    n = (1 << 20) + 5
    gva = pool.alloc(n, placement="rank", rank=host)
    payload = np.frombuffer(os.urandom(n), dtype=np.uint8)
    back = np.full(n, 0xA5, dtype=np.uint8)
    pool.copy(gva, payload, direction="LH2GH")
    pool.copy(back, gva, direction="GH2LH")
    ok = np.array_equal(payload, back)
    pool.free(gva)
    print("peer check " + ("ok" if ok else "FAILED"), flush=True)

    pool.barrier(timeout=300)  # 2
    pool.leave()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
