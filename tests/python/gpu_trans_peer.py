"""The target peer of tests/python/test_gpu_trans.py, run as its own process (a GPU machine, torch
with CUDA):

    python gpu_trans_peer.py --api mooncake|weft --size N [--offset K] [--transports tcp] [--split]

Allocates a torch CUDA tensor of K + N bytes and registers its last N bytes (a slice that starts
K bytes into the allocation, as torch's caching allocator hands out), filled with 0x5A, with
weft.mooncake (an int address, location "*": the device is detected) or weft.TransferEngine (the
tensor itself). Prints

    ready <session name> <buffer address> <size> <location>

then serves one command per line on stdin, one answer line each:

    sha OFFSET LENGTH        -> "sha <hex sha256 of the bytes>"
    fill OFFSET LENGTH BYTE  -> "ok"
    random OFFSET LENGTH     -> "sha <hex>" of the random bytes written there
    realloc MODE             -> unregisters, frees the tensor, allocates and registers a new one
                                ("keep": the caching allocator may hand back the same block;
                                "empty": torch.cuda.empty_cache() first, so the block goes back
                                to the driver); answers "ready <address> <size>" or "failed <why>"
    exit
"""

import argparse
import hashlib
import sys

import torch

import weft
import weft.mooncake as mc


class Buffer:
    def __init__(self, size: int, offset: int):
        self.whole = torch.empty(offset + size, dtype=torch.uint8, device="cuda")
        self.t = self.whole[offset:]
        self.t.fill_(0x5A)
        torch.cuda.synchronize()

    @property
    def addr(self) -> int:
        return self.t.data_ptr()

    def sha(self, off: int, n: int) -> str:
        return hashlib.sha256(self.t[off:off + n].cpu().numpy().tobytes()).hexdigest()


def pieces(a, buf: Buffer):
    """The tensors registered: the whole buffer, or (--split) its two halves, two registrations
    in one cudaMalloc block that a peer maps through the same IPC handle."""
    if not a.split:
        return [buf.t]
    half = buf.t.numel() // 2
    return [buf.t[:half], buf.t[half:]]


def register(a, te, buf: Buffer) -> str:
    """Registers the buffer; returns its location as the engine recorded it, or raises."""
    for t in pieces(a, buf):
        if a.api == "mooncake":
            if te.register_memory(t.data_ptr(), t.numel()) != 0:
                raise RuntimeError("register_memory returned an error (see the log)")
        else:
            te.register_memory(t)
    engine = te.get_engine() if a.api == "mooncake" else te
    return next(b.location for b in engine.local_buffers() if b.addr == buf.addr)


def unregister(a, te, buf: Buffer) -> None:
    for t in pieces(a, buf):
        if a.api == "mooncake":
            assert te.unregister_memory(t.data_ptr()) == 0
        else:
            te.unregister_memory(t.data_ptr())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", choices=("mooncake", "weft"), default="mooncake")
    ap.add_argument("--size", type=int, default=8 << 20)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--transports", default="auto")
    ap.add_argument("--split", action="store_true", help="register the buffer as two halves")
    a = ap.parse_args()

    if a.api == "mooncake":
        te = mc.TransferEngine()
        if te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
            print("init-failed", flush=True)
            return 2
        name = f"127.0.0.1:{te.get_rpc_port()}"
    else:
        te = weft.TransferEngine("127.0.0.1", allow_unauthenticated=True, transports=a.transports)
        name = te.name
    buf = Buffer(a.size, a.offset)
    try:
        location = register(a, te, buf)
    except Exception as e:  # the driver shows it
        print(f"register-failed {e}", flush=True)
        return 3
    print(f"ready {name} {buf.addr} {a.size} {location}", flush=True)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "sha":
            print("sha " + buf.sha(int(cmd[1]), int(cmd[2])), flush=True)
        elif cmd[0] == "fill":
            off, n, byte = int(cmd[1]), int(cmd[2]), int(cmd[3])
            buf.t[off:off + n].fill_(byte)
            torch.cuda.synchronize()
            print("ok", flush=True)
        elif cmd[0] == "random":
            off, n = int(cmd[1]), int(cmd[2])
            buf.t[off:off + n].copy_(torch.randint(0, 256, (n,), dtype=torch.uint8, device="cuda"))
            torch.cuda.synchronize()
            print("sha " + buf.sha(off, n), flush=True)
        elif cmd[0] == "realloc":
            unregister(a, te, buf)
            del buf
            if cmd[1] == "empty":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            buf = Buffer(a.size, a.offset)
            try:
                register(a, te, buf)
                print(f"ready {buf.addr} {a.size}", flush=True)
            except Exception as e:
                print(f"failed {e}", flush=True)
        elif cmd[0] == "exit":
            break
        else:
            print(f"unknown {cmd[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
