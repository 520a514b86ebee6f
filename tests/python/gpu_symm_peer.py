"""A rank of tests/python/test_gpu_symm.py: joins a pool with a device slice, makes a team with a
device heap and runs the collectives on torch CUDA tensors in it, checking each result against
torch computed here from every rank's input (each rank derives every input from the seed).
Prints "gpu symm ok" at the end; any failure raises (exit status 1)."""

from __future__ import annotations

import sys
import time

import torch

import weft
from weft.symm import Team

N = 5000  # elements per rank: not a multiple of the rank count, 16-byte packs for every dtype here


def inputs(seed: int, salt: int, ranks: int, count: int, dtype: torch.dtype) -> list:
    out = []
    for r in range(ranks):
        g = torch.Generator().manual_seed(seed * 1000 + salt * 10 + r)
        x = (torch.randint(-16, 17, (count,), generator=g).float() / 4)  # exact in bf16 and f16
        out.append(x.to(dtype))
    return out


def reference_sum(xs: list) -> torch.Tensor:
    acc = xs[0].float()
    for x in xs[1:]:
        acc = acc + x.float()  # in rank order, in f32, rounded once: as weft reduces
    return acc.to(xs[0].dtype)


def main() -> int:
    pool_name, seed, ranks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    asynchronous = sys.argv[5] == "async"
    mode = "host" if sys.argv[4] == "0" else "join"
    pool = weft.Pool(pool_name=pool_name, rank_size="64MiB", device_size="64MiB", device=0, mode=mode)
    for attempt in range(600):  # the host's coordinator may not listen yet
        try:
            pool.join()
            break
        except weft.Unavailable:
            if mode == "host" or attempt == 599:
                raise
            time.sleep(0.05)
    pool.wait_for_peers(ranks, timeout=60)
    team = Team(pool, heap_bytes=1 << 20, device_heap_bytes=32 << 20, device_async=asynchronous)
    me, n = team.rank, team.size
    stream = torch.cuda.Stream()
    team.set_stream(stream)

    def done() -> None:
        # Asynchronous calls return once launched on `stream`: wait for it before reading.
        if asynchronous:
            stream.synchronize()
    for salt, dtype in enumerate((torch.bfloat16, torch.float16, torch.float32)):
        es = torch.tensor([], dtype=dtype).element_size()
        send = torch.as_tensor(team.device_malloc(N * es), device="cuda").view(dtype)
        recv = torch.as_tensor(team.device_malloc(N * n * es), device="cuda").view(dtype)
        xs = inputs(seed, salt, n, N, dtype)
        with torch.cuda.stream(stream):
            send.copy_(xs[me].cuda())
            outside = torch.full((N,), 7, dtype=dtype, device="cuda")  # torch's allocator, not the heap
        team.allreduce(send, outside)
        done()
        assert torch.equal(outside.cpu(), reference_sum(xs)), f"allreduce {dtype} into a torch tensor"
        team.allgather(send, recv)
        done()
        assert torch.equal(recv.cpu(), torch.cat(xs)), f"allgather {dtype}"
        team.allreduce(send)  # in place
        done()
        assert torch.equal(send.cpu(), reference_sum(xs)), f"allreduce in place {dtype}"
    team.device_synchronize()
    stats = team.stats()
    assert stats["device_path"] == stats["collectives"] == 9, stats
    # A host array next to a device tensor: this rank's error, the others' Mismatch.
    import numpy as np
    host = np.zeros(N, np.float32)
    dev = torch.as_tensor(team.device_malloc(N * 4), device="cuda").view(torch.float32)
    try:
        team.allreduce(dev, host if me == 0 else dev)
        if asynchronous and me != 0:
            team.device_synchronize()  # the others learn of it from their kernel
        raise AssertionError("a host recv next to a device send was accepted")
    except (weft.InvalidArgument, weft.Mismatch) as e:
        assert isinstance(e, weft.InvalidArgument if me == 0 else weft.Mismatch), repr(e)
    team.device_synchronize()  # nothing left to report
    team.barrier()
    print("gpu symm ok", flush=True)
    # No pool.leave(): the tensors above hold their DeviceSymmBuffers, which hold the team; the
    # pool leaves when the last of them goes, at exit.
    return 0


if __name__ == "__main__":
    sys.exit(main())
