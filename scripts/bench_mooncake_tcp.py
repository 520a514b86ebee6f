#!/usr/bin/env python3
"""Mooncake's TCP transport on loopback: the same work as `weft bench-tcp` (WRITE and READ of
64 KiB .. 64 MiB into a registered buffer of a second process), for the comparison in
docs/performance.md (TCP section).

Needs the Mooncake wheel (pip install mooncake-transfer-engine-non-cuda) and, because the wheel
links libibverbs even for TCP, libibverbs.so.1 on the library path (Debian: libibverbs1
ibverbs-providers; `apt-get download` + `dpkg -x` into a prefix and LD_LIBRARY_PATH works without
installing them). Runs the target as a child process; P2P handshake, no metadata server.

    python3 scripts/bench_mooncake_tcp.py [--seconds 0.5] [--rounds 3] [--max-size 64M]
"""
import argparse
import ctypes
import os
import random
import subprocess
import sys
import time

MAX = 64 << 20


def parse_size(text):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in mult:
        return int(text[:-1]) * mult[text[-1]]
    return int(text)


def engine(hostname):
    os.environ.setdefault("MC_FORCE_TCP", "1")
    from mooncake.engine import TransferEngine

    te = TransferEngine()
    rc = te.initialize(hostname, "P2PHANDSHAKE", "tcp", "")
    if rc != 0:
        raise SystemExit(f"TransferEngine.initialize returned {rc}")
    return te


def target(size):
    te = engine("127.0.0.1")
    buf = ctypes.create_string_buffer(size)
    addr = ctypes.addressof(buf)
    if te.register_memory(addr, size) != 0:
        raise SystemExit("register_memory failed")
    print(f"{te.get_rpc_port()} {addr}", flush=True)
    sys.stdin.read()  # until the initiator closes our stdin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-size", default="64K")
    ap.add_argument("--max-size", default="64M")
    a = ap.parse_args()
    hi = parse_size(a.max_size)
    if a.target:
        target(hi)
        return
    child = subprocess.Popen([sys.executable, __file__, "--target", "--max-size", str(hi)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().split()
    if len(line) != 2:
        raise SystemExit("the target did not start")
    port, remote = int(line[0]), int(line[1])
    session = f"127.0.0.1:{port}"
    te = engine("127.0.0.1")
    local = ctypes.create_string_buffer(hi)
    laddr = ctypes.addressof(local)
    if te.register_memory(laddr, hi) != 0:
        raise SystemExit("register_memory failed")
    print(f"mooncake TCP transport, loopback, session {session}, {a.rounds} rounds x {a.seconds} s (median)")
    print(f"{'op':<6} {'size':>8} {'GB/s':>10}")
    size = parse_size(a.min_size)
    sizes = []
    while size <= hi:
        sizes.append(size)
        size *= 4
    for op in ("WRITE", "READ"):
        fn = te.transfer_sync_write if op == "WRITE" else te.transfer_sync_read
        for size in sizes:
            # Verify once: fresh random bytes, poisoned destination.
            data = random.randbytes(size)
            if op == "WRITE":
                ctypes.memmove(laddr, data, size)
                if fn(session, laddr, remote, size) != 0:
                    raise SystemExit(f"{op} {size} failed")
                ctypes.memset(laddr, 0x5A, size)
                if te.transfer_sync_read(session, laddr, remote, size) != 0 or local.raw[:size] != data:
                    raise SystemExit(f"{op} {size}: read-back differs")
            else:
                ctypes.memmove(laddr, data, size)
                if te.transfer_sync_write(session, laddr, remote, size) != 0:
                    raise SystemExit("seeding write failed")
                ctypes.memset(laddr, 0x5A, size)
                if fn(session, laddr, remote, size) != 0 or local.raw[:size] != data:
                    raise SystemExit(f"{op} {size}: data differs")
            results = []
            for _ in range(a.rounds):
                fn(session, laddr, remote, size)
                n = 0
                t0 = time.perf_counter()
                while True:
                    if fn(session, laddr, remote, size) != 0:
                        raise SystemExit(f"{op} {size} failed while timing")
                    n += 1
                    el = time.perf_counter() - t0
                    if el >= a.seconds and n >= 3:
                        break
                results.append(size * n / el / 1e9)
            results.sort()
            print(f"{op:<6} {size >> 10 if size < (1 << 20) else size >> 20:>5} {'KiB' if size < (1 << 20) else 'MiB'} "
                  f"{results[len(results) // 2]:>10.3f}", flush=True)
    lat = []
    for i in range(2200):
        t0 = time.perf_counter()
        te.transfer_sync_read(session, laddr, remote, 4096)
        if i >= 200:
            lat.append((time.perf_counter() - t0) * 1e6)
    lat.sort()
    print(f"4 KiB READ round trip: p50 {lat[len(lat) // 2]:.1f} us p99 {lat[int(len(lat) * 0.99)]:.1f} us")
    child.stdin.close()
    child.wait(timeout=10)


if __name__ == "__main__":
    main()
