#!/usr/bin/env python3
"""NCCL baselines on two GPUs of one host (run by scripts/gpu-check.sh when 2 GPUs are present).

Prints rows in the bench-gpu table format: send/recv bandwidth by size, and all-reduce bus
bandwidth, for comparison with weft's GPU->GPU copies in the same run. NVLink multicast stays
off (NCCL_NVLS_ENABLE=0): it can take the host's GPUs out of service.
"""
import os
import sys

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")


def worker(rank, port, queue):
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = []
    for size in (4 << 10, 1 << 20, 8 << 20, 64 << 20, 256 << 20):
        buf = torch.empty(size, dtype=torch.uint8, device="cuda").random_(0, 255)
        for _ in range(3):  # warm-up
            if rank == 0:
                dist.send(buf, 1)
            else:
                dist.recv(buf, 0)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if rank == 0:
                dist.send(buf, 1)
            else:
                dist.recv(buf, 0)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e6)  # ns
        times.sort()
        ns = times[len(times) // 2]
        rows.append(("nccl", f"send/recv {size >> 10} KiB", size / ns, ns / 1000))
    for size in (1 << 20, 8 << 20, 64 << 20):
        x = torch.randn(size // 2, dtype=torch.bfloat16, device="cuda")
        for _ in range(3):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dist.all_reduce(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) * 1e6)
        times.sort()
        ns = times[len(times) // 2]
        rows.append(("nccl", f"all-reduce bf16 {size >> 20} MiB busbw", size / ns, ns / 1000))  # busbw = algbw for 2 ranks
    if rank == 0:
        queue.put(rows)
    dist.destroy_process_group()


def main():
    import torch
    import torch.multiprocessing as mp

    if torch.cuda.device_count() < 2:
        print("nccl baseline: skipped, fewer than 2 GPUs")
        return 0
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    rows = queue.get(timeout=240)
    for p in procs:
        p.join(60)
    for group, name, gbps, us in rows:
        print(f"{group:<10} {name:<34} {gbps:>10.2f} {us:>10.2f} GB/s (and us per op)")
    return 0 if all(p.exitcode == 0 for p in procs) else 1


if __name__ == "__main__":
    sys.exit(main())
