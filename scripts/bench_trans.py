#!/usr/bin/env python3
"""The Python transfer engine between two processes: weft.mooncake (Mooncake's API on weft)
against weft's native Python API (weft.TransferEngine), the real Mooncake wheel, and the C++ API
alone, on the same work.

Cases (all WRITE into a registered buffer of a second process, P2P handshake, tcp, loopback):
    1000 x 16 KiB   one batch_transfer_sync_write of 1000 requests
    1 x 64 MiB      one batch_transfer_sync_write of one request
    1 x 4 KiB       one transfer_sync_write (per-call overhead)

Every case is verified once per variant first (fresh random bytes, poisoned destination, read
back and compared). The Python variants take turns call by call (in shuffled order) for
--rounds x --seconds seconds per case; each figure is the median time per call. The weft
variants share one target process; the real Mooncake (--mooncake-python: an interpreter with
the wheel) runs in its own interpreter with its own target, driven call by call over a pipe and
timing each call itself, so every variant sees the same load. "Python layer only" is
weft.mooncake's own work per call (the native engine replaced by a stub). With --weft-cli,
`weft bench-trans` (tools/weft/trans_cmd.cc: the C++ API, its own peer) runs before and after
the Python cases; its figures are not interleaved with the others.

    build-py/venv/bin/python scripts/bench_trans.py [--seconds 1] [--rounds 8] [--weft-cli PATH]
        [--mooncake-python /tmp/mcvenv/bin/python --mooncake-ld-path <libibverbs prefix>/lib...]

The Mooncake wheel (mooncake-transfer-engine-non-cuda) links libibverbs even for tcp; see
docs/performance.md (TCP) for how it was made to run here. The run prints a table; --json FILE
writes the figures.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

BUF = 64 << 20
CASES: List[Tuple[str, int, int]] = [("1000 x 16 KiB", 1000, 16 << 10), ("1 x 64 MiB", 1, 64 << 20),
                                     ("1 x 4 KiB", 1, 4 << 10)]


def mooncake_engine(module: str):
    if module == "mooncake.engine":
        os.environ.setdefault("MC_FORCE_TCP", "1")  # the real Mooncake picks tcp only this way
    mod = importlib.import_module(module)
    te = mod.TransferEngine()
    rc = te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "")
    if rc != 0:
        raise SystemExit(f"{module}: initialize returned {rc}")
    return te


def target(module: str) -> None:
    te = mooncake_engine(module)
    buf = ctypes.create_string_buffer(BUF)
    addr = ctypes.addressof(buf)
    if te.register_memory(addr, BUF) != 0:
        raise SystemExit("register_memory failed")
    print(f"{te.get_rpc_port()} {addr}", flush=True)
    sys.stdin.read()  # until the driver closes our stdin


def measure(fns: Dict[str, Callable[[], None]], seconds: float, rounds: int) -> Dict[str, float]:
    """Median seconds per call of each function. The functions take turns call by call (the
    order shuffled each turn), so load from other processes on this shared machine hits them
    alike and their ratios hold even when the absolute figures move."""
    for fn in fns.values():
        fn()  # warm: connections, descriptors
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns)
    end = time.perf_counter() + seconds * rounds
    while True:
        random.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            timed = fns[name]()
            # A function may time itself (the real Mooncake runs in another process) and return it.
            samples[name].append(timed if isinstance(timed, float) else time.perf_counter() - t0)
        if time.perf_counter() >= end and min(len(v) for v in samples.values()) >= 5:
            break
    return {name: statistics.median(v) for name, v in samples.items()}


def start_target(module: str) -> Tuple[subprocess.Popen, str, int]:
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--target", module], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().split()
    if len(line) != 2:
        raise SystemExit(f"the {module} target did not start")
    return child, f"127.0.0.1:{line[0]}", int(line[1])


def registered(register: Callable[[int, int], None]) -> Tuple[ctypes.Array, int]:
    buf = ctypes.create_string_buffer(BUF)
    addr = ctypes.addressof(buf)
    register(addr, BUF)
    return buf, addr


def verify(label: str, write: Callable[[], None], read: Callable[[], None], laddr: int, n: int) -> None:
    """Fresh random bytes written out, the local buffer poisoned, read back and compared."""
    data = os.urandom(n)
    ctypes.memmove(laddr, data, n)
    write()
    ctypes.memset(laddr, 0xA5, n)
    read()
    if ctypes.string_at(laddr, n) != data:
        raise SystemExit(f"{label}: the read-back differs")


def mooncake_calls(te, session: str, laddr: int, remote: int, label: str, count: int, size: int):
    srcs = [laddr + i * size for i in range(count)]
    dsts = [remote + i * size for i in range(count)]
    lens = [size] * count

    def check(rc):
        if rc != 0:
            raise SystemExit(f"{label}: a Mooncake-API call returned {rc}")

    verify(label, lambda: check(te.batch_transfer_sync_write(session, srcs, dsts, lens)),
           lambda: check(te.batch_transfer_sync_read(session, srcs, dsts, lens)), laddr, count * size)
    if count == 1 and size <= 4096:
        return lambda: check(te.transfer_sync_write(session, laddr, remote, size))
    return lambda: check(te.batch_transfer_sync_write(session, srcs, dsts, lens))


def serve_real_mooncake() -> None:
    """--serve: the real mooncake.engine (this interpreter has it) with its own target process;
    prints "ready", then for each line "I" on stdin makes one call of case I and prints its
    duration in seconds, so that the driver can interleave it with weft's calls."""
    child, session, remote = start_target("mooncake.engine")
    try:
        te = mooncake_engine("mooncake.engine")
        buf, laddr = registered(lambda a, n: te.register_memory(a, n) == 0 or sys.exit("register_memory failed"))
        fns = [mooncake_calls(te, session, laddr, remote, label, count, size) for label, count, size in CASES]
        print("ready", flush=True)
        for line in sys.stdin:
            fn = fns[int(line)]
            t0 = time.perf_counter()
            fn()
            print(time.perf_counter() - t0, flush=True)
        te.unregister_memory(laddr)
        del buf
    finally:
        child.stdin.close()
        child.wait(timeout=60)


class RealMooncake:
    """The client side of --serve."""

    def __init__(self, python: str, ld_path: str) -> None:
        env = dict(os.environ)
        if ld_path:
            env["LD_LIBRARY_PATH"] = ld_path + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        env["GLOG_minloglevel"] = "2"  # Mooncake's INFO lines would drown the table
        self.proc = subprocess.Popen([python, os.path.abspath(__file__), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the real Mooncake did not start (see its messages above)")

    def call(self, case: int) -> float:
        self.proc.stdin.write(f"{case}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def run_weft(seconds: float, rounds: int, real: "Optional[RealMooncake]") -> Dict[str, Dict[str, float]]:
    """weft.mooncake and weft.TransferEngine (its public request tuples, and the list form
    transfer_lists that weft.mooncake calls) against one target process, and the real Mooncake
    when given, all taking turns."""
    import weft

    child, session, remote = start_target("weft.mooncake")
    try:
        mc = mooncake_engine("weft.mooncake")
        mc_buf, mc_addr = registered(lambda a, n: mc.register_memory(a, n) == 0 or sys.exit("register_memory failed"))
        te = weft.TransferEngine("127.0.0.1", "P2PHANDSHAKE", "tcp", cluster_secret="", allow_unauthenticated=True)
        te_buf, laddr = registered(lambda a, n: te.register_memory(a, n))
        peer = te.open_segment(session)
        native = te._native
        out: Dict[str, Dict[str, float]] = {k: {} for k in IMPLS + [LAYER] + ([MOONCAKE] if real else [])}
        for case, (label, count, size) in enumerate(CASES):
            reqs = [("write", laddr + i * size, peer, remote + i * size, size) for i in range(count)]
            verify(label, lambda: te.transfer(reqs), lambda: te.transfer([("read",) + r[1:] for r in reqs]), laddr,
                   count * size)
            srcs = [laddr + i * size for i in range(count)]
            dsts = [remote + i * size for i in range(count)]
            lens = [size] * count
            fns = {
                "weft.mooncake": mooncake_calls(mc, session, mc_addr, remote, label, count, size),
                "weft.TransferEngine.transfer": lambda: te.transfer(reqs),
                "weft native transfer_lists": lambda: native.transfer_lists(1, peer, srcs, dsts, lens, None, None, True),
            }
            if real:
                fns[MOONCAKE] = lambda: real.call(case)
            for impl, t in measure(fns, seconds, rounds).items():
                out[impl][label] = t
                print(f"  {impl:<30} {label:<14} {t * 1e6:12.1f} us", file=sys.stderr, flush=True)
            # weft.mooncake's own Python work per call: the same call with the native engine
            # replaced by a stub that returns the success list at once.
            engine = mc.get_engine()
            saved, engine._native = engine._native, _Stub(count)
            try:
                t = measure({"layer": fns["weft.mooncake"]}, min(seconds, 0.5), 1)["layer"]
            finally:
                engine._native = saved
            out[LAYER][label] = t
            print(f"  {LAYER:<30} {label:<14} {t * 1e6:12.1f} us", file=sys.stderr, flush=True)
        te.close()
        mc.close()
        del mc_buf, te_buf  # registered until the engines closed
        return out
    finally:
        child.stdin.close()
        child.wait(timeout=60)


def run_cpp(cli: str, rounds: int) -> Dict[str, float]:
    """The same writes through the C++ API alone: `weft bench-trans` (tools/weft/trans_cmd.cc, its
    own peer process, every case verified first), median seconds per call by case."""
    import tempfile

    out: Dict[str, float] = {}
    runs = [(["--rounds", str(max(rounds, 20))], {"1000x16K": "1000 x 16 KiB", "1x64M": "1 x 64 MiB"}),
            (["--pages", "1", "--page", "4K", "--large", "4K", "--rounds", str(max(rounds, 2000))], {"1x4K": "1 x 4 KiB"})]
    for args, names in runs:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            r = subprocess.run([cli, "bench-trans", "--json", f.name] + args, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise SystemExit(f"{cli} bench-trans failed: {r.stderr[-2000:]}")
            rows = json.load(open(f.name))["rows"]
        for row in rows:
            if row["op"] == "write" and row["case"] in names:
                out[names[row["case"]]] = row["seconds_median"]
    return out


IMPLS = ["weft.mooncake", "weft.TransferEngine.transfer", "weft native transfer_lists"]
LAYER = "weft.mooncake Python layer only"
MOONCAKE = "Mooncake (mooncake.engine)"
CPP = "C++ weft bench-trans"


class _Stub:
    """Stands in for the native engine: every transfer succeeds at once."""

    def __init__(self, count: int) -> None:
        self.ok = [None] * count

    def transfer_lists(self, *args):
        return list(self.ok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the real Mooncake, driven
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mooncake-python", help="an interpreter with the real Mooncake wheel installed")
    ap.add_argument("--mooncake-ld-path", default="", help="LD_LIBRARY_PATH for it (libibverbs)")
    ap.add_argument("--weft-cli", help="the weft CLI: run `weft bench-trans` (C++ API) before and after, "
                                       "for the same writes without Python (not interleaved)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args()
    if a.target:
        target(a.target)
        return
    if a.serve:
        serve_real_mooncake()
        return

    cpp_before = run_cpp(a.weft_cli, a.rounds) if a.weft_cli else None
    real = RealMooncake(a.mooncake_python, a.mooncake_ld_path) if a.mooncake_python else None
    try:
        results: Dict[str, Dict[str, float]] = run_weft(a.seconds, a.rounds, real)
    finally:
        if real:
            real.close()
    if a.weft_cli:
        cpp_after = run_cpp(a.weft_cli, a.rounds)
        results[CPP + " (before)"] = cpp_before
        results[CPP + " (after)"] = cpp_after

    print(f"\nPython transfer engine, loopback, tcp; median time per call over >= {a.rounds * a.seconds:g} s "
          f"of calls taking turns")
    head = f"{'case':<14} | {'impl':<30} | {'us/call':>10} | {'GB/s':>7} | {'vs native':>9}"
    print(head)
    print("-" * len(head))
    for label, count, size in CASES:
        base = results["weft.TransferEngine.transfer"][label]
        for impl, figures in results.items():
            if label not in figures:
                continue
            t = figures[label]
            if impl == LAYER:  # no bytes move: its cost, as a share of the native call
                print(f"{label:<14} | {impl:<30} | {t * 1e6:10.1f} | {'-':>7} | {t / base:8.3f}x")
                continue
            print(f"{label:<14} | {impl:<30} | {t * 1e6:10.1f} | {count * size / t / 1e9:7.3f} | {t / base:8.2f}x")
    if MOONCAKE in results:
        print("\nweft.mooncake speed-up over the real Mooncake (time ratio, calls taking turns):")
        for label, _, _ in CASES:
            ratio = results[MOONCAKE][label] / results["weft.mooncake"][label]
            print(f"  {label:<14} {ratio:6.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cases": CASES, "seconds_per_call": results}, f, indent=1)


if __name__ == "__main__":
    main()
