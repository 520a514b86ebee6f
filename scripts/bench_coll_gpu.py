#!/usr/bin/env python3
"""weft's collectives on device heaps against NCCL (through torch.distributed), same tensors, same run.

    python3 scripts/bench_coll_gpu.py [--ranks N] [--iters 50] [--json out.json]

One process per rank, rank r on GPU r mod the GPUs present. Each makes a weft pool with a device
slice and a team with a device heap, and (when every rank has a GPU of its own) an NCCL process
group. For allreduce (bf16 sum), allgather and reduce-scatter at each size per rank, it times
`iters` calls of each library, each call followed by a stream synchronisation (so both are
measured as latency per blocking call), after a warm-up, and checks that weft's result equals
NCCL's (allgather bit for bit; the reductions to bf16 rounding). Prints a table (median µs per
call, weft/NCCL, bus bandwidth) and, with --json, the rows. `--device-async`: weft's team returns
once each kernel is launched (TeamOptions::device_async), as NCCL's calls do, so both are timed
as launch + stream synchronisation; the launches' outcomes are checked with device_synchronize.

With fewer GPUs than ranks NCCL cannot run (it refuses two ranks on one GPU) and the weft
figures are of processes time-sliced on one GPU: printed for completeness, not a performance
figure. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")

SIZES = (8 << 10, 64 << 10, 256 << 10, 1 << 20, 8 << 20, 64 << 20)  # bytes per rank
COLLECTIVES = ("allreduce", "allgather", "reduce_scatter")


def bus_factor(name: str, n: int) -> float:
    """NCCL's bus-bandwidth factor (nccl-tests): what each rank moves per byte of the call's size."""
    return 2 * (n - 1) / n if name == "allreduce" else (n - 1) / n


def timed(call, sync, iters: int) -> float:
    for _ in range(3):
        call()
        sync()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def rank_main(rank: int, ranks: int, gpus: int, pool_name: str, port: int, iters: int, device_async: bool,
              queue) -> None:
    import torch
    import weft
    from weft.symm import Team

    device = rank % gpus
    torch.cuda.set_device(device)
    top = max(SIZES)
    slice_bytes = str((2 + ranks) * top + (64 << 20))  # a device slice may not exceed rank_size
    pool = weft.Pool(pool_name=pool_name, rank_size=slice_bytes, device_size=slice_bytes, device=device,
                     mode="host" if rank == 0 else "join")
    for attempt in range(600):  # rank 0's coordinator may not listen yet
        try:
            pool.join()
            break
        except weft.Unavailable:
            if rank == 0 or attempt == 599:
                raise
            time.sleep(0.05)
    pool.wait_for_peers(ranks, timeout=120)
    team = Team(pool, heap_bytes=1 << 20, device_heap_bytes=(2 + ranks) * top + (1 << 20), device_async=device_async)
    nccl = gpus >= ranks
    if nccl:
        import torch.distributed as dist
        dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    stream = torch.cuda.current_stream()
    team.set_stream(stream)
    sync = torch.cuda.synchronize
    blocks = []

    def heap(nbytes: int):
        blocks.append(team.device_malloc(nbytes))
        return torch.as_tensor(blocks[-1], device="cuda").view(torch.bfloat16)

    rows = []
    for size in SIZES:
        n = size // 2
        send = heap(size)
        recv = heap(size * ranks)
        work = heap(size)
        send.copy_(torch.randint(-8, 9, (n,), device="cuda").to(torch.bfloat16) / 4)
        for name in COLLECTIVES:
            if name == "allreduce":
                weft_call = lambda: team.allreduce(send, work)  # noqa: E731
                out, ref = work, torch.empty_like(send)
                nccl_call = lambda: dist.all_reduce(ref)  # noqa: E731  (in place: the values are not checked)
                check = lambda: (ref.copy_(send), dist.all_reduce(ref))  # noqa: E731
            elif name == "allgather":
                weft_call = lambda: team.allgather(send, recv)  # noqa: E731
                out, ref = recv, torch.empty_like(recv)
                nccl_call = check = lambda: dist.all_gather_into_tensor(ref, send)  # noqa: E731
            else:
                elems = n // ranks // 8 * 8
                if elems == 0:
                    continue
                whole, out = send[: elems * ranks], work[:elems]
                weft_call = lambda: team.reduce_scatter(whole, out)  # noqa: E731
                ref = torch.empty_like(out)
                nccl_call = check = lambda: dist.reduce_scatter_tensor(ref, whole)  # noqa: E731
            weft_us = timed(weft_call, sync, iters)
            team.device_synchronize()  # raises what an asynchronous launch ran into
            row = {"collective": name, "bytes": size, "ranks": ranks, "weft_us": weft_us, "device_async": device_async}
            if nccl:
                nccl_us = timed(nccl_call, sync, iters)
                weft_call()
                check()
                sync()
                same = torch.equal(out, ref) if name == "allgather" else torch.allclose(out.float(), ref.float())
                row.update(nccl_us=nccl_us, ratio=weft_us / nccl_us, same_result=bool(same))
            row["weft_busbw_gbs"] = bus_factor(name, ranks) * size / (weft_us * 1e-6) / 1e9
            rows.append(row)
        del send, recv, work, out, ref
        for block in blocks:
            team.device_free(block)
        blocks.clear()
    team.barrier()
    if nccl:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(rows)
    # No pool.leave(): the closures above still hold tensors of the device heap, which hold the
    # team; the pool leaves when the last of them goes, at exit.


def main() -> int:
    import torch
    import torch.multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=0, help="ranks (default: the GPUs, at least 2)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--device-async", action="store_true",
                    help="weft's device collectives return once launched (TeamOptions::device_async)")
    a = ap.parse_args()
    gpus = torch.cuda.device_count()
    if gpus == 0:
        print("bench_coll_gpu: no CUDA GPU", file=sys.stderr)
        return 2
    ranks = a.ranks or max(2, min(gpus, 8))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    pool_name = "bench-coll-gpu-" + uuid.uuid4().hex[:8]
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=rank_main, args=(r, ranks, gpus, pool_name, port, a.iters, a.device_async, queue))
             for r in range(ranks)]
    for p in procs:
        p.start()
    rows = None
    while rows is None:  # until rank 0 reports, or a rank fails (never wait on a dead one)
        try:
            rows = queue.get(timeout=1)
        except Exception:
            if any(p.exitcode not in (None, 0) for p in procs) or all(p.exitcode is not None for p in procs):
                for p in procs:
                    p.kill()
                print("bench_coll_gpu: a rank failed (its error is above)", file=sys.stderr)
                return 1
    for p in procs:
        p.join()
    name = torch.cuda.get_device_name(0)
    mode = "weft launches asynchronous" if a.device_async else "weft calls synchronous"
    print(f"# {ranks} ranks on {gpus} GPU(s) ({name}); median µs per blocking call, {a.iters} calls; {mode}")
    if gpus < ranks:
        print("# fewer GPUs than ranks: no NCCL, and the weft figures are of time-sliced processes (not a result)")
    print(f"{'collective':<15} {'bytes/rank':>10} {'weft µs':>9} {'NCCL µs':>9} {'weft/NCCL':>9} "
          f"{'weft busbw GB/s':>15} {'same':>5}")
    for r in rows:
        print(f"{r['collective']:<15} {r['bytes']:>10} {r['weft_us']:>9.1f} {r.get('nccl_us', float('nan')):>9.1f} "
              f"{r.get('ratio', float('nan')):>9.2f} {r['weft_busbw_gbs']:>15.1f} {str(r.get('same_result', '-')):>5}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpus": gpus, "gpu": name, "ranks": ranks, "device_async": a.device_async, "rows": rows}, f,
                      indent=1)
    return 0 if all(r.get("same_result", True) for r in rows) and all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
