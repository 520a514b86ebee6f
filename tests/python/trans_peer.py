"""The target peer for tests/python/test_trans.py and test_mooncake.py, run as its own process:

    python trans_peer.py --hostname 127.0.0.1 --metadata P2PHANDSHAKE --size N [--module mooncake.engine]

Starts a Mooncake-API transfer engine (weft.mooncake, or the module named by --module, e.g. the
shim's mooncake.engine), registers one buffer of --size bytes (filled with 0x5A), and prints

    ready <session name> <buffer address> <size>

Then it serves commands, one per line on stdin, answering one line each on stdout:

    sha OFFSET LENGTH        -> "sha <hex sha256 of the buffer bytes>"
    fill OFFSET LENGTH BYTE  -> "ok"                  (memset)
    await-notify SECONDS     -> "notify <name> <ok|MISMATCH|BAD>" or "notify-timeout"
                                The message of the notification is "OFFSET LENGTH SHA"; the bytes
                                are checked the moment the notification is seen, so "ok" proves
                                that the data was in place before the notification arrived.
    exit                     -> exits 0
"""

import argparse
import ctypes
import hashlib
import importlib
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hostname", default="127.0.0.1")
    ap.add_argument("--metadata", default="P2PHANDSHAKE")
    ap.add_argument("--protocol", default="tcp")
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--module", default="weft.mooncake")
    a = ap.parse_args()

    engine = importlib.import_module(a.module)
    te = engine.TransferEngine()
    if te.initialize(a.hostname, a.metadata, a.protocol, "") != 0:
        print("init-failed", flush=True)
        return 2
    buf = ctypes.create_string_buffer(a.size)
    addr = ctypes.addressof(buf)
    ctypes.memset(addr, 0x5A, a.size)
    if te.register_memory(addr, a.size) != 0:
        print("register-failed", flush=True)
        return 3
    if a.metadata.upper() == "P2PHANDSHAKE":
        host = a.hostname.split(":")[0]
        name = f"{host}:{te.get_rpc_port()}"
    else:
        name = a.hostname
    print(f"ready {name} {addr} {a.size}", flush=True)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "sha":
            off, n = int(cmd[1]), int(cmd[2])
            print("sha " + hashlib.sha256(ctypes.string_at(addr + off, n)).hexdigest(), flush=True)
        elif cmd[0] == "fill":
            off, n, byte = int(cmd[1]), int(cmd[2]), int(cmd[3])
            ctypes.memset(addr + off, byte, n)
            print("ok", flush=True)
        elif cmd[0] == "await-notify":
            deadline = time.monotonic() + float(cmd[1])
            answer = "notify-timeout"
            while time.monotonic() < deadline:
                got = te.get_notifies()
                if got:
                    n = got[0]
                    # Check the bytes now, before anything else can happen.
                    try:
                        off, length, sha = n.msg.split()
                        actual = hashlib.sha256(ctypes.string_at(addr + int(off), int(length))).hexdigest()
                        verdict = "ok" if actual == sha else "MISMATCH"
                    except ValueError:
                        verdict = "BAD"
                    answer = f"notify {n.name} {verdict} {len(got)}"
                    break
                time.sleep(0.001)
            print(answer, flush=True)
        elif cmd[0] == "exit":
            break
        else:
            print(f"unknown {cmd[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
