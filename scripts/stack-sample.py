#!/usr/bin/env python3
"""A sampling profiler for machines without perf: attaches a debugger (gdb, else cuda-gdb) to a
running process N times, takes every thread's backtrace, and prints which functions the
threads were in — inclusive (anywhere on the stack) and exclusive (the innermost frame) — as
a share of the samples. Threads that sit in a blocking wait (futex, poll, epoll, nanosleep,
accept, read on a socket) are left out unless --all: we want where the time of a busy call goes.

  scripts/stack-sample.py PID [--samples 40] [--interval 0.1] [--top 30] [--match weft::]

Each attach stops the process for a moment, so the figures are a rough picture, not timings.
"""
import argparse
import collections
import re
import shutil
import subprocess
import sys
import time

IDLE = re.compile(r"futex_wait|__futex_abstimed|pthread_cond_(timed)?wait|epoll_wait|\bpoll\b|__poll|nanosleep|"
                  r"clock_nanosleep|\baccept4?\b|\bselect\b|sigtimedwait|__GI___libc_read|recv")
FRAME = re.compile(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(.+?)\s*\(")


def debugger() -> str:
    for name in ("gdb", "cuda-gdb"):
        if shutil.which(name):
            return name
    sys.exit("stack-sample: neither gdb nor cuda-gdb is on the PATH")


def sample(dbg: str, pid: int) -> list:
    """One backtrace of every thread: a list of stacks, each a list of function names, innermost first."""
    out = subprocess.run([dbg, "-p", str(pid), "-batch", "-nx", "-ex", "set pagination off",
                          "-ex", "thread apply all bt 40"], capture_output=True, text=True, timeout=60).stdout
    stacks, cur = [], None
    for line in out.splitlines():
        if line.startswith("Thread "):
            cur = []
            stacks.append(cur)
            continue
        m = FRAME.match(line.replace("(anonymous namespace)", "{anon}"))
        if m and cur is not None:
            cur.append(m.group(2))
    return [s for s in stacks if s]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pid", type=int)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--interval", type=float, default=0.1, help="seconds between attaches")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--match", default="", help="inclusive rows: only functions containing this")
    ap.add_argument("--all", action="store_true", help="keep threads that wait")
    a = ap.parse_args()
    dbg = debugger()
    inclusive, exclusive = collections.Counter(), collections.Counter()
    busy = 0
    for _ in range(a.samples):
        try:
            stacks = sample(dbg, a.pid)
        except subprocess.TimeoutExpired:
            print("stack-sample: the debugger did not answer in 60 s; sample skipped", file=sys.stderr)
            continue
        for st in stacks:
            if not a.all and IDLE.search(st[0]):
                continue
            busy += 1
            exclusive[st[0]] += 1
            for fn in set(st):
                inclusive[fn] += 1
        time.sleep(a.interval)
    if busy == 0:
        print("stack-sample: no busy thread was seen (is the process running its work?)")
        return 1
    print(f"stack-sample: {a.samples} attaches to {a.pid} with {dbg}, {busy} busy thread stacks")
    print("\nexclusive (innermost frame)")
    for fn, n in exclusive.most_common(a.top):
        print(f"{100.0 * n / busy:6.1f}%  {fn[:140]}")
    print("\ninclusive (anywhere on the stack)" + (f", matching '{a.match}'" if a.match else ""))
    rows = [(fn, n) for fn, n in inclusive.most_common() if a.match in fn][:a.top]
    for fn, n in rows:
        print(f"{100.0 * n / busy:6.1f}%  {fn[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
