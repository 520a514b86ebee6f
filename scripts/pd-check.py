#!/usr/bin/env python3
"""The prefill -> decode KV path, as vLLM's Mooncake connector drives it, without vLLM.

Two processes, prefill and decode, each hold a paged KV cache: one torch CUDA tensor per layer,
[num_blocks, block_size, num_heads, head_dim] in bf16. For each request the decoder picks free
blocks (a random block table), publishes their addresses, and the prefiller writes its blocks
of that request into them with weft.mooncake's batch_transfer_sync_write (one call per request:
every layer's blocks). The decoder compares every byte of every written block with what the
prefiller meant to send, and checks that no other block changed.

Baselines in the same run:
  * cudaMemcpyPeer: the same bytes as one large device-to-device copy (torch's copy_ between
    the two devices; on one GPU, within it), timed with CUDA events;
  * torch moving the blocks itself: gather the request's blocks into one buffer, one NCCL
    send/recv, scatter them (two GPUs only: NCCL wants a GPU per rank).

    python3 scripts/pd-check.py                 # one GPU: both processes on cuda:0
    python3 scripts/pd-check.py --gpus 2        # prefill on cuda:0, decode on cuda:1
    python3 scripts/pd-check.py --json out.json --layers 32 --blocks-per-request 32
    python3 scripts/pd-check.py --via pd        # the decoder pulls with weft.pd (weft.vllm's path)

Exit status 0 only when every byte matched. Needs torch with CUDA and the weft package.
"""
import argparse
import json
import multiprocessing as mp
import os
import sys
import time

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off: it can take GPUs out of service


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=0, help="1 or 2 (default: 2 when two are visible)")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--num-blocks", type=int, default=2048, help="blocks per layer in each cache")
    p.add_argument("--block-size", type=int, default=16, help="tokens per block")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--blocks-per-request", type=int, default=32)
    p.add_argument("--requests", type=int, default=20, help="timed requests (after 3 untimed ones)")
    p.add_argument("--seed", type=int, default=0, help="0: fresh from the clock")
    p.add_argument("--hot", type=int, default=20,
                   help="after the checked requests, time the last one again this many times back to back "
                        "(no decoder work in between: the host-side cost of the call alone)")
    p.add_argument("--json", default="", help="also write the results here")
    p.add_argument("--via", choices=("mooncake", "pd"), default="mooncake",
                   help="mooncake: the prefiller writes with weft.mooncake (vLLM's MooncakeConnector); "
                        "pd: the decoder reads with weft.pd (weft.vllm's connector)")
    return p.parse_args(argv)


def block_bytes(a):
    return a.block_size * a.heads * a.head_dim * 2  # bf16


def make_cache(a, device):
    import torch
    return [torch.empty((a.num_blocks, a.block_size, a.heads, a.head_dim), dtype=torch.bfloat16, device=device)
            for _ in range(a.layers)]


def request_plan(a, seed, r):
    """The source and destination block tables of request r: distinct random blocks."""
    import torch
    g = torch.Generator().manual_seed(seed * 1000003 + r)
    src = torch.randperm(a.num_blocks, generator=g)[: a.blocks_per_request].tolist()
    dst = torch.randperm(a.num_blocks, generator=g)[: a.blocks_per_request].tolist()
    return src, dst


def request_data(a, seed, r, device):
    """What request r's blocks hold, [layers, blocks, ...] as raw int16 (bf16 bits, all patterns)."""
    import torch
    g = torch.Generator().manual_seed(seed * 7919 + r + 1)
    shape = (a.layers, a.blocks_per_request, a.block_size, a.heads, a.head_dim)
    return torch.randint(-32768, 32767, shape, dtype=torch.int16, generator=g).to(device)


POISON = -21846  # 0xAAAA: a bf16 NaN pattern nobody writes by chance


def fill_request(a, seed, r, cache, dev):
    """The prefiller's side of request r: its source blocks hold the request's data. Returns (src, dst)."""
    import torch
    src, dst = request_plan(a, seed, r)
    data = request_data(a, seed, r, dev)
    idx = torch.tensor(src, device=dev)
    for layer, t in enumerate(cache):
        t.view(torch.int16).index_copy_(0, idx, data[layer])
    torch.cuda.synchronize()
    return src, dst


def check_request(a, seed, r, cache, dev):
    """The decoder's side of request r: the elements of its destination blocks that differ from the
    request's data, plus every element elsewhere that is not poison; its blocks are poisoned again."""
    import torch
    _, dst = request_plan(a, seed, r)
    want = request_data(a, seed, r, dev)
    idx = torch.tensor(dst, device=dev)
    mismatches = 0
    for layer, t in enumerate(cache):
        mismatches += int((t.view(torch.int16).index_select(0, idx) != want[layer]).sum().item())
        t.view(torch.int16).index_fill_(0, idx, POISON)  # poisoned again for the next request
    for t in cache:
        mismatches += int((t.view(torch.int16) != POISON).sum().item())
    return mismatches


def decode(a, seed, device_index, conn, results):
    """The decoder: owns the destination caches, publishes block addresses, checks every byte."""
    import torch
    import weft.mooncake as mc
    torch.cuda.set_device(device_index)
    cache = make_cache(a, f"cuda:{device_index}")
    for t in cache:
        t.view(torch.int16).fill_(POISON)
    te = mc.TransferEngine()
    if te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
        raise RuntimeError("decode: initialize failed")
    if te.batch_register_memory([t.data_ptr() for t in cache], [t.numel() * 2 for t in cache]) != 0:
        raise RuntimeError("decode: batch_register_memory of the KV cache failed")
    conn.send({"session": f"127.0.0.1:{te.get_rpc_port()}", "bases": [t.data_ptr() for t in cache],
               "block_bytes": block_bytes(a)})
    mismatches = 0
    while True:
        msg = conn.recv()
        if msg == "done":
            break
        r = msg["request"]
        mismatches += check_request(a, seed, r, cache, f"cuda:{device_index}")
        conn.send({"request": r, "mismatched_elements": mismatches})
    te.close()


def pd_decode(a, seed, device_index, conn, results):
    """--via pd: the decoder pulls each request's blocks with weft.pd (what weft.vllm's connector
    does), times start_read to finished, and checks every byte as decode() does."""
    import torch
    from weft.pd import KVPeer
    torch.cuda.set_device(device_index)
    dev = f"cuda:{device_index}"
    cache = make_cache(a, dev)
    for t in cache:
        t.view(torch.int16).fill_(POISON)
    torch.cuda.synchronize()
    peer = KVPeer(cache, num_blocks=a.num_blocks, local_name="127.0.0.1", allow_unauthenticated=True)
    remote = conn.recv()["name"]
    times, mismatches, failures = [], 0, []
    while True:
        msg = conn.recv()
        if msg == "done":
            break
        r = msg["request"]
        src, dst = request_plan(a, seed, r)
        t0 = time.perf_counter()
        peer.start_read(f"r{r}", remote, f"r{r}", dst, src)
        received, failed = set(), set()
        while f"r{r}" not in received:
            _, got, bad = peer.finished()
            received |= got
            failed |= bad
        elapsed = time.perf_counter() - t0
        if failed:
            failures.append(peer.errors())
        mismatches += check_request(a, seed, r, cache, dev)
        if r >= 3:
            times.append(elapsed)
        conn.send({"request": r})
    peer.close()
    results.put({"times": times, "mismatched_elements": mismatches, "failures": failures})


def pd_prefill(a, seed, device_index, conn, results):
    """--via pd: the prefiller fills each request's blocks, holds them and waits until they are read."""
    import torch
    from weft.pd import KVPeer
    torch.cuda.set_device(device_index)
    dev = f"cuda:{device_index}"
    cache = make_cache(a, dev)
    peer = KVPeer(cache, num_blocks=a.num_blocks, local_name="127.0.0.1", allow_unauthenticated=True)
    conn.send({"name": peer.name})
    for r in range(3 + a.requests):
        fill_request(a, seed, r, cache, dev)
        peer.expect_read(f"r{r}", 60)
        conn.send({"request": r})
        conn.recv()
        deadline, sent = time.monotonic() + 60, set()
        while f"r{r}" not in sent and time.monotonic() < deadline:
            sent |= peer.finished()[0]
        if f"r{r}" not in sent:
            raise RuntimeError(f"request {r}: the prefiller never heard that its blocks were read")
    conn.send("done")
    peer.close()


def request_lists(a, cache, bases, src, dst):
    """The address lists of one request, every layer's blocks, as a connector builds them."""
    bb = block_bytes(a)
    buffers, peers = [], []
    for layer, t in enumerate(cache):
        base = t.data_ptr()
        for s, d in zip(src, dst):
            buffers.append(base + s * bb)
            peers.append(bases[layer] + d * bb)
    return buffers, peers, [bb] * len(buffers)


def prefill(a, seed, device_index, conn, results):
    import torch
    import weft.mooncake as mc
    torch.cuda.set_device(device_index)
    dev = f"cuda:{device_index}"
    cache = make_cache(a, dev)
    te = mc.TransferEngine()
    if te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
        raise RuntimeError("prefill: initialize failed")
    if te.batch_register_memory([t.data_ptr() for t in cache], [t.numel() * 2 for t in cache]) != 0:
        raise RuntimeError("prefill: batch_register_memory of the KV cache failed")
    peer = conn.recv()
    times, calls, bad = [], [], 0
    for r in range(3 + a.requests):
        src, dst = fill_request(a, seed, r, cache, dev)
        t0 = time.perf_counter()
        buffers, peers, lengths = request_lists(a, cache, peer["bases"], src, dst)
        t1 = time.perf_counter()
        rc = te.batch_transfer_sync_write(peer["session"], buffers, peers, lengths)
        elapsed = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"request {r}: batch_transfer_sync_write returned {rc}")
        conn.send({"request": r})
        bad = conn.recv()["mismatched_elements"]
        if r >= 3:
            times.append(elapsed)
            calls.append(elapsed - (t1 - t0))
    # The same lists again, back to back: every byte of them was just checked, and the decoder is
    # idle, so this is the call's own cost with warm caches.
    hot = []
    before = stage_totals(te._te.metrics_text())
    for _ in range(a.hot):
        t0 = time.perf_counter()
        rc = te.batch_transfer_sync_write(peer["session"], buffers, peers, lengths)
        hot.append(time.perf_counter() - t0)
        if rc != 0:
            raise RuntimeError(f"back-to-back call: batch_transfer_sync_write returned {rc}")
    # The same through the native binding alone (what weft.mooncake calls: its own layer excluded).
    hot_stages = stage_means(before, stage_totals(te._te.metrics_text()))
    native = []
    handle = te._segment(te._te, peer["session"])
    before = stage_totals(te._te.metrics_text())
    for _ in range(a.hot):
        t0 = time.perf_counter()
        res = te._te._native.transfer_lists(1, handle, buffers, peers, lengths, None, 30.0, False)
        native.append(time.perf_counter() - t0)
        if res.count(None) != len(res):
            raise RuntimeError(f"back-to-back native call failed: {[r for r in res if r is not None][:1]}")
    native_stages = stage_means(before, stage_totals(te._te.metrics_text()))
    conn.send("done")
    paths = path_counters(te._te.metrics_text())
    te.close()
    results.put({"times": times, "calls": calls, "hot": hot, "native": native, "mismatched_elements": bad,
                 "paths": paths, "hot_stages": hot_stages, "native_stages": native_stages})


# Where one call's time goes: the transfer engine's and the engine's stage histograms (sums and
# counts in nanoseconds; docs/ops.md), as `weft bench-trans` prints them for the C++ call.
STAGES = (("call", "weft_trans_sync_call_ns"), ("validate", "weft_trans_validate_ns"),
          ("plan", "weft_remote_batch_plan_ns"), ("copy", "weft_remote_batch_copy_ns"),
          ("finish", "weft_remote_batch_finish_ns"))


def stage_totals(metrics_text):
    values = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name.endswith(("_sum", "_count")):
            values[name] = float(value)
    return {stage: (values.get(h + "_sum", 0.0), values.get(h + "_count", 0.0)) for stage, h in STAGES}


def stage_means(before, after):
    """Microseconds per call of each stage between two stage_totals (0 where none ran)."""
    out = {}
    for stage, _ in STAGES:
        n = after[stage][1] - before[stage][1]
        out[stage] = (after[stage][0] - before[stage][0]) / n / 1e3 if n > 0 else 0.0
    return out


def stage_line(means):
    return "stages, us/call: " + " ".join(f"{k} {v:.1f}" for k, v in means.items())


def path_counters(metrics_text):
    """The prefiller's counters that say which path carried the bytes (copies by path and end
    kinds, kernel launches and copy-engine copies on the GPU)."""
    keep = ("weft_copy_path_", "weft_cuda_")
    return [line for line in metrics_text.splitlines() if line.startswith(keep)]


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def memcpy_peer_baseline(a, src_dev, dst_dev):
    """Seconds for one copy of one request's bytes between the two devices (median of 20)."""
    import torch
    n = a.layers * a.blocks_per_request * block_bytes(a)
    src = torch.empty(n, dtype=torch.uint8, device=src_dev).random_(0, 255)
    dst = torch.empty(n, dtype=torch.uint8, device=dst_dev)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return median(times)


def nccl_worker(rank, a, seed, port, results):
    """torch moving one request itself: gather, one NCCL send/recv, scatter (wall time, rank 1)."""
    import torch
    import torch.distributed as dist
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    cache = make_cache(a, f"cuda:{rank}")
    times = []
    for r in range(3 + a.requests):
        src, dst = request_plan(a, seed, r)
        idx = torch.tensor(src if rank == 0 else dst, device=f"cuda:{rank}")
        shape = (a.layers, a.blocks_per_request, a.block_size, a.heads, a.head_dim)
        buf = torch.empty(shape, dtype=torch.bfloat16, device=f"cuda:{rank}")
        dist.barrier()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if rank == 0:
            for layer, t in enumerate(cache):
                torch.index_select(t, 0, idx, out=buf[layer])
            dist.send(buf, 1)
        else:
            dist.recv(buf, 0)
            for layer, t in enumerate(cache):
                t.index_copy_(0, idx, buf[layer])
        torch.cuda.synchronize()
        if r >= 3:
            times.append(time.perf_counter() - t0)
    dist.destroy_process_group()
    if rank == 1:
        results.put(median(times))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pair(ctx, a, seed, gpus, decode_fn=None, prefill_fn=None):
    """Runs a decoder and a prefiller process; one of them puts its results on the queue."""
    parent, child = ctx.Pipe()
    results = ctx.Queue()
    dec = ctx.Process(target=decode_fn or decode, args=(a, seed, 1 if gpus == 2 else 0, child, results))
    pre = ctx.Process(target=prefill_fn or prefill, args=(a, seed, 0, parent, results))
    dec.start()
    pre.start()
    out = results.get(timeout=600)
    pre.join(60)
    dec.join(60)
    if pre.exitcode != 0 or dec.exitcode != 0:
        raise RuntimeError(f"prefill exited {pre.exitcode}, decode {dec.exitcode}")
    return out


def run_nccl(ctx, a, seed):
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=nccl_worker, args=(r, a, seed, port, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    out = results.get(timeout=600)
    for p in procs:
        p.join(60)
    return out


def main_pd(ctx, a, seed, gpus, per_request):
    """--via pd: weft.pd's pull against cudaMemcpyPeer of the same bytes."""
    import torch
    run = run_pair(ctx, a, seed, gpus, pd_decode, pd_prefill)
    t_pd = median(run["times"])
    t_peer = memcpy_peer_baseline(a, "cuda:0", "cuda:1" if gpus == 2 else "cuda:0")
    print(f"{'case':44} {'ms/request':>10} {'GB/s':>8} {'weft vs it':>10}")
    for name, t, ratio in (("weft.pd read (decoder pulls, start to done)", t_pd, None),
                           ("cudaMemcpyPeer, one large copy", t_peer, t_peer / t_pd)):
        print(f"{name:44} {t * 1e3:10.3f} {per_request / t / 1e9:8.2f} {'' if ratio is None else f'{ratio:10.3f}x'}")
    ok = run["mismatched_elements"] == 0 and not run["failures"]
    print(f"bytes: {'every byte matched' if ok else str(run['mismatched_elements']) + ' elements differ'} "
          f"({a.requests + 3} requests, untouched blocks still poison){'; failures: ' + str(run['failures'][:2]) if run['failures'] else ''}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"via": "pd", "gpus": gpus, "device": torch.cuda.get_device_name(0),
                       "bytes_per_request": per_request, "pd_s": t_pd, "memcpy_peer_s": t_peer, "exact": ok,
                       "seed": seed}, f, indent=1)
    return 0 if ok else 1


def main(argv=None):
    a = parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("pd-check: no CUDA GPU visible to torch; nothing to check", file=sys.stderr)
        return 2
    gpus = a.gpus or min(torch.cuda.device_count(), 2)
    if gpus == 2 and torch.cuda.device_count() < 2:
        print("pd-check: --gpus 2 needs two visible GPUs", file=sys.stderr)
        return 2
    seed = a.seed or time.time_ns() % (1 << 31)
    ctx = mp.get_context("spawn")
    per_request = a.layers * a.blocks_per_request * block_bytes(a)
    print(f"pd-check: {gpus} GPU(s) ({torch.cuda.get_device_name(0)}), {a.layers} layers, "
          f"{a.blocks_per_request} blocks of {block_bytes(a) >> 10} KiB per layer per request "
          f"({per_request / 2**20:.1f} MiB, {a.layers * a.blocks_per_request} blocks), seed {seed}", flush=True)
    if a.via == "pd":
        return main_pd(ctx, a, seed, gpus, per_request)
    weft_run = run_pair(ctx, a, seed, gpus)
    t_weft = median(weft_run["times"])
    t_peer = memcpy_peer_baseline(a, "cuda:0", "cuda:1" if gpus == 2 else "cuda:0")
    t_nccl = run_nccl(ctx, a, seed) if gpus == 2 else None
    t_call = median(weft_run["calls"])
    rows = [("weft.mooncake batch_transfer_sync_write", t_weft, None),
            ("  of which the call (lists built)", t_call, None)]
    if weft_run["hot"]:
        rows.append((f"  the call again, back to back (x{len(weft_run['hot'])})", median(weft_run["hot"]), None))
        rows.append(("  the same, native transfer_lists", median(weft_run["native"]), None))
    rows += [
            ("cudaMemcpyPeer, one large copy", t_peer, t_peer / t_weft)]
    if t_nccl is not None:
        rows.append(("torch: gather + NCCL send/recv + scatter", t_nccl, t_nccl / t_weft))
    print(f"{'case':44} {'ms/request':>10} {'GB/s':>8} {'weft vs it':>10}")
    for name, t, ratio in rows:
        print(f"{name:44} {t * 1e3:10.3f} {per_request / t / 1e9:8.2f} {'' if ratio is None else f'{ratio:10.3f}x'}")
    ok = weft_run["mismatched_elements"] == 0
    print(f"bytes: {'every byte matched' if ok else str(weft_run['mismatched_elements']) + ' elements differ'} "
          f"({a.requests + 3} requests, untouched blocks still poison)")
    if weft_run["hot"]:
        print(f"back to back through weft.mooncake, {stage_line(weft_run['hot_stages'])}")
        print(f"back to back through transfer_lists, {stage_line(weft_run['native_stages'])}")
    print(f"paths of the prefiller ({a.requests + 3} requests):")
    for line in weft_run["paths"]:
        print(f"  {line}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"gpus": gpus, "device": torch.cuda.get_device_name(0), "bytes_per_request": per_request,
                       "blocks_per_request": a.layers * a.blocks_per_request, "block_bytes": block_bytes(a),
                       "weft_s": t_weft, "weft_call_s": t_call,
                       "weft_hot_call_s": median(weft_run["hot"]) if weft_run["hot"] else None, "memcpy_peer_s": t_peer, "nccl_s": t_nccl, "exact": ok,
                       "seed": seed, "paths": weft_run["paths"], "hot_stages_us": weft_run["hot_stages"],
                       "native_stages_us": weft_run["native_stages"]}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
