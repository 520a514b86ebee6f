"""GPU memory through weft's Python transfer engines, between two processes on a GPU machine:
torch CUDA tensors registered with weft.mooncake (int addresses, device detected) and with
weft.TransferEngine (the tensors themselves), scattered blocks written and read with every byte
compared, the *_on_cuda methods ordered on a torch stream, a peer killed mid-batch (an error,
never a hang), and a tensor freed, its block reused and registered again (no stale mapping
served). The target is tests/python/gpu_trans_peer.py.

Skipped, with the reason, where torch, a GPU or a CUDA build of weft is missing."""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading

import pytest

import weft
import weft.mooncake as mc
from weft import trans
from trans_util import HERE, Process, env_without_secret, require_gpu

torch = require_gpu("test_gpu_trans")

PEER = os.path.join(HERE, "gpu_trans_peer.py")
SIZE = 16 << 20
OFFSET = 3 * 4096 + 512  # the registered slice starts inside its cudaMalloc block
HANG = 180.0  # seconds after which a call counts as hung


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    for key in ("WEFT_CLUSTER_SECRET", "WEFT_PROTOCOL_FALLBACK", "MC_FORCE_TCP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MC_TRANSFER_TIMEOUT", "5")


class GpuPeer(Process):
    def __init__(self, api: str, transports: str = "auto", size: int = SIZE, offset: int = OFFSET,
                 split: bool = False):
        super().__init__([sys.executable, PEER, "--api", api, "--size", str(size), "--offset", str(offset),
                          "--transports", transports] + (["--split"] if split else []),
                         env=env_without_secret({"MC_TRANSFER_TIMEOUT": "5"}))
        line = self.readline()
        assert line.startswith("ready "), f"the GPU peer did not start: {line!r} {self.stderr()}"
        _, self.name, addr, n, self.location = line.split()
        self.addr, self.size = int(addr), int(n)

    def ask(self, text: str) -> str:
        self.send(text)
        return self.readline()

    def sha(self, offset: int, length: int) -> str:
        answer = self.ask(f"sha {offset} {length}")
        assert answer.startswith("sha "), answer
        return answer.split()[1]

    def random(self, offset: int, length: int) -> str:
        answer = self.ask(f"random {offset} {length}")
        assert answer.startswith("sha "), answer
        return answer.split()[1]

    def close(self) -> None:
        self.exit()


@pytest.fixture
def peers():
    made = []

    def make(*args, **kw):
        p = GpuPeer(*args, **kw)
        made.append(p)
        return p

    try:
        yield make
    finally:
        for p in made:
            p.close()


def sha(t) -> str:
    return hashlib.sha256(t.cpu().numpy().tobytes()).hexdigest()


def random_bytes(n: int):
    return torch.randint(0, 256, (n,), dtype=torch.uint8, device="cuda")


def scattered(count: int, size: int, seed: int):
    """`count` non-overlapping (offset, length) blocks in [0, size), in random order, lengths from
    1 byte to 256 KiB with odd ends, as KV-cache blocks of different layers land."""
    rng = random.Random(seed)
    slot = size // count
    blocks = []
    for i in range(count):
        n = rng.randint(1, min(slot, 256 << 10))
        blocks.append((i * slot + rng.randint(0, slot - n), n))
    rng.shuffle(blocks)
    return blocks


def expect_bytes(base_byte: int, size: int, writes):
    """The host image of a buffer filled with base_byte and then written with (offset, bytes)."""
    img = bytearray([base_byte]) * size
    for off, data in writes:
        img[off:off + len(data)] = data
    return hashlib.sha256(bytes(img)).hexdigest()


def bounded(fn, *args):
    """Runs fn in a thread; fails the test if it has not returned within HANG seconds."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # reported to the test
            out["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(HANG)
    assert not th.is_alive(), f"{getattr(fn, '__name__', fn)} hung for {HANG} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def mooncake_engine():
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    return te


class _CAI:
    def __init__(self, addr: int, nbytes: int):
        self.__cuda_array_interface__ = {"data": (addr, False), "shape": (nbytes,), "typestr": "|u1",
                                         "strides": None, "version": 3}


class _DLPack:
    def __init__(self, t):
        self.t = t

    def __dlpack__(self, *args, **kwargs):
        return self.t.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.t.__dlpack_device__()


def test_device_objects_register_as_their_device():
    """Each kind of device object in one process: the location comes from the object (or the
    driver), and host memory behind a device claim is refused."""
    dev = torch.cuda.current_device()
    with weft.TransferEngine("127.0.0.1", allow_unauthenticated=True) as te:
        block = torch.empty(4 << 20, dtype=torch.uint8, device="cuda")
        views = [block[:1 << 20], _CAI(block[1 << 20:].data_ptr(), 1 << 20), _DLPack(block[2 << 20:3 << 20])]
        for obj in views:
            addr = te.register_memory(obj)
            assert [b.location for b in te.local_buffers() if b.addr == addr] == [f"cuda:{dev}"], obj
        addr = te.register_memory(block[3 << 20:].data_ptr(), 1 << 20)  # an int with "*"
        assert [b.location for b in te.local_buffers() if b.addr == addr] == [f"cuda:{dev}"]
        assert trans.pointer_device(block.data_ptr()) == dev
        host = torch.zeros(4096, dtype=torch.uint8).numpy()
        with pytest.raises(weft.InvalidArgument, match="host memory"):
            te.register_memory(_CAI(host.ctypes.data, 4096))
        with pytest.raises(weft.InvalidArgument, match="location"):
            te.register_memory(torch.empty(4096, dtype=torch.uint8, device="cuda"), location="cpu:0")
        pinned = torch.empty(4096, dtype=torch.uint8).pin_memory()
        te.register_memory(_DLPack(pinned))  # kDLCUDAHost: host memory
        assert [b.location for b in te.local_buffers() if b.addr == pinned.data_ptr()] == ["*"]


def test_mooncake_device_buffers_both_directions(peers):
    peer = peers("mooncake")
    assert peer.location == "cuda:0"  # detected from the address, as Mooncake does
    te = mooncake_engine()
    try:
        whole = torch.empty(OFFSET + SIZE, dtype=torch.uint8, device="cuda")
        local = whole[OFFSET:]
        assert te.batch_register_memory([local.data_ptr()], [SIZE]) == 0
        assert te.get_engine().local_buffers()[0].location == "cuda:0"

        # Write: scattered blocks of random bytes; the peer's whole buffer is compared, gaps included.
        local.copy_(random_bytes(SIZE))
        torch.cuda.synchronize()
        local_host = local.cpu().numpy().tobytes()
        src_blocks = scattered(64, SIZE, 1)
        dst_blocks = scattered(64, SIZE, 2)
        pairs = [(s, d, min(sn, dn)) for (s, sn), (d, dn) in zip(src_blocks, dst_blocks)]
        rc = te.batch_transfer_sync_write(peer.name, [local.data_ptr() + s for s, _, _ in pairs],
                                          [peer.addr + d for _, d, _ in pairs], [n for _, _, n in pairs])
        assert rc == 0
        writes = [(d, local_host[s:s + n]) for s, d, n in pairs]
        assert peer.sha(0, SIZE) == expect_bytes(0x5A, SIZE, writes)

        # Read: the peer's bytes into a poisoned local buffer; every block and every gap checked.
        remote_sha = peer.random(0, SIZE)
        local.fill_(0xA5)
        torch.cuda.synchronize()
        rc = te.batch_transfer_sync_read(peer.name, [local.data_ptr() + d for _, d, _ in pairs],
                                         [peer.addr + s for s, _, _ in pairs], [n for _, _, n in pairs])
        assert rc == 0
        got = local.cpu().numpy().tobytes()
        for s, d, n in pairs:
            assert hashlib.sha256(got[d:d + n]).hexdigest() == peer.sha(s, n)
        assert remote_sha == peer.sha(0, SIZE)  # a read leaves the peer as it was
        assert expect_bytes(0xA5, SIZE, [(d, got[d:d + n]) for _, d, n in pairs]) == hashlib.sha256(got).hexdigest()
        assert te.unregister_memory(local.data_ptr()) == 0
    finally:
        te.close()


def test_two_registrations_in_one_allocation(peers):
    """The peer registers the two halves of one cudaMalloc block apart (one IPC handle, two
    offsets): one batch writes into both, every byte of the peer's buffer compared."""
    peer = peers("mooncake", split=True)
    half = SIZE // 2
    te = mooncake_engine()
    try:
        local = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        assert te.register_memory(local.data_ptr(), SIZE) == 0
        local.copy_(random_bytes(SIZE))
        torch.cuda.synchronize()
        host = local.cpu().numpy().tobytes()
        blocks = [(off, n) for off, n in scattered(32, half, 4)] + [(half + off, n) for off, n in scattered(32, half, 5)]
        rc = te.batch_transfer_sync_write(peer.name, [local.data_ptr() + off for off, _ in blocks],
                                          [peer.addr + off for off, _ in blocks], [n for _, n in blocks])
        assert rc == 0
        written = expect_bytes(0x5A, SIZE, [(off, host[off:off + n]) for off, n in blocks])
        assert peer.sha(0, SIZE) == written
        # A range across the two registrations lies in no one buffer: refused, nothing written.
        assert te.transfer_sync_write(peer.name, local.data_ptr(), peer.addr + half - 8, 16) < 0
        assert peer.sha(0, SIZE) == written
    finally:
        te.close()


@pytest.mark.parametrize("transports", ["auto", "tcp"])
def test_native_engine_tensors(peers, transports):
    """weft.TransferEngine with the tensors themselves: the CUDA IPC path ("auto", same host) and
    the tcp path (device memory staged through pinned bounce buffers)."""
    peer = peers("weft", transports=transports)
    assert peer.location == "cuda:0"
    with weft.TransferEngine("127.0.0.1", allow_unauthenticated=True, transports=transports) as te:
        local = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        assert te.register_memory(local) == local.data_ptr()
        assert te.local_buffers()[0].location == "cuda:0"
        route = te.route(("write", local.data_ptr(), peer.name, peer.addr, 4096))
        assert "LD" in route and ("via tcp" in route if transports == "tcp" else True), route
        local.copy_(random_bytes(SIZE))
        torch.cuda.synchronize()
        host = local.cpu().numpy().tobytes()
        blocks = scattered(32, SIZE, 3)
        te.transfer([("write", local.data_ptr() + off, peer.name, peer.addr + off, n) for off, n in blocks])
        assert peer.sha(0, SIZE) == expect_bytes(0x5A, SIZE, [(off, host[off:off + n]) for off, n in blocks])
        peer.random(0, SIZE)
        local.zero_()
        torch.cuda.synchronize()
        te.transfer([("read", local[off:off + n], peer.name, peer.addr + off) for off, n in blocks])
        got = local.cpu().numpy().tobytes()
        for off, n in blocks:
            assert hashlib.sha256(got[off:off + n]).hexdigest() == peer.sha(off, n)


def test_on_cuda_is_ordered_on_the_stream(peers):
    peer = peers("mooncake")
    te = mooncake_engine()
    try:
        local = torch.zeros(SIZE, dtype=torch.uint8, device="cuda")
        assert te.register_memory(local.data_ptr(), SIZE) == 0
        stream = torch.cuda.Stream()
        data = random_bytes(SIZE)
        torch.cuda.synchronize()
        n = 1 << 20
        with torch.cuda.stream(stream):
            if hasattr(torch.cuda, "_sleep"):
                torch.cuda._sleep(200_000_000)  # the stream is busy: a transfer that did not wait would miss the data
            local[:n].copy_(data[:n])
        # The stream object itself (weft takes .cuda_stream) and its int (Mooncake's stream_ptr).
        te.transfer_write_on_cuda(peer.name, local.data_ptr(), peer.addr, n, stream)
        assert peer.sha(0, n) == sha(data[:n])
        with torch.cuda.stream(stream):
            local[n:2 * n].copy_(data[n:2 * n])
        te.batch_transfer_write_on_cuda(peer.name, [local.data_ptr() + n], [peer.addr + n], [n], stream.cuda_stream)
        assert peer.sha(n, n) == sha(data[n:2 * n])

        # Read, then work queued on the stream after the call sees the bytes.
        remote = peer.random(4 * n, n)
        with torch.cuda.stream(stream):
            te.transfer_read_on_cuda(peer.name, local.data_ptr() + 4 * n, peer.addr + 4 * n, n,
                                     stream.cuda_stream)
            seen = local[4 * n:5 * n].clone()
        stream.synchronize()
        assert sha(seen) == remote
        peer.random(0, 2 * n)
        te.batch_transfer_read_on_cuda(peer.name, [local.data_ptr(), local.data_ptr() + n], [peer.addr, peer.addr + n],
                                       [n, n], stream)
        assert sha(local[:2 * n]) == peer.sha(0, 2 * n)

        # A failure raises (Mooncake ends the process): the peer address is outside its buffer.
        with pytest.raises(RuntimeError, match="transfer failed"):
            te.transfer_write_on_cuda(peer.name, local.data_ptr(), peer.addr + SIZE, 16, stream)
    finally:
        te.close()


def test_peer_killed_mid_batch_is_an_error_not_a_hang(peers):
    peer = peers("weft", transports="tcp", size=64 << 20)
    with weft.TransferEngine("127.0.0.1", allow_unauthenticated=True, transports="tcp",
                             transfer_timeout_ms=20_000) as te:
        local = torch.empty(64 << 20, dtype=torch.uint8, device="cuda")
        te.register_memory(local)
        requests = [("write", local.data_ptr() + off, peer.name, peer.addr + off, 1 << 20)
                    for off in range(0, 64 << 20, 1 << 20)] * 4
        batch = te.submit(requests, timeout=20.0)
        peer.kill()
        status = bounded(te.wait, batch, 60.0)
        assert status.done
        # The requests that had not finished when the peer died failed with a reason.
        for r in status.results:
            assert r is None or isinstance(r, weft.Error)
        te.free_batch(batch)
        with pytest.raises(weft.Error):
            bounded(te.transfer, [("write", local.data_ptr(), peer.name, peer.addr, 4096)], None, 20.0)

    # The same through weft.mooncake, whose calls return codes: -1 within its timeout.
    peer2 = peers("mooncake", size=8 << 20)
    mte = mooncake_engine()
    try:
        src = torch.empty(8 << 20, dtype=torch.uint8, device="cuda")
        assert mte.register_memory(src.data_ptr(), 8 << 20) == 0
        assert mte.transfer_sync_write(peer2.name, src.data_ptr(), peer2.addr, 4096) == 0
        batch = mte.batch_transfer_async_write(peer2.name, [src.data_ptr()] * 64, [peer2.addr] * 64, [8 << 20] * 64)
        assert batch != 0
        peer2.kill()
        assert bounded(mte.get_batch_transfer_status, [batch]) in (0, -1)  # done before the kill, or failed
        assert bounded(mte.transfer_sync_write, peer2.name, src.data_ptr(), peer2.addr, 4096) < 0
    finally:
        mte.close()


@pytest.mark.parametrize("mode", ["keep", "empty"])
def test_freed_tensor_reregistered_no_stale_mapping(peers, mode):
    """The peer frees its tensor and registers a new one (the same block from torch's cache, or a
    block that went back to the driver and came again): a transfer reaches the new tensor, or fails
    with an error; it never lands in (or reads from) the freed one."""
    peer = peers("mooncake")
    te = mooncake_engine()
    try:
        local = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
        assert te.register_memory(local.data_ptr(), SIZE) == 0
        local.copy_(random_bytes(SIZE))
        torch.cuda.synchronize()
        assert te.transfer_sync_write(peer.name, local.data_ptr(), peer.addr, 1 << 20) == 0  # the mapping is cached
        answer = peer.ask(f"realloc {mode}")
        if answer.startswith("failed "):
            pytest.fail(f"re-registering the new tensor failed: {answer}")
        _, addr, size = answer.split()
        addr, size = int(addr), int(size)
        assert peer.sha(0, 1 << 20) == expect_bytes(0x5A, 1 << 20, [])  # a fresh tensor, not the old bytes
        local.copy_(random_bytes(SIZE))
        torch.cuda.synchronize()
        rc = te.transfer_sync_write(peer.name, local.data_ptr(), addr, 1 << 20)
        if rc == 0:
            assert peer.sha(0, 1 << 20) == sha(local[:1 << 20])
        else:
            assert rc < 0  # refused: acceptable, a stale mapping was not used
        assert te.transfer_sync_write(peer.name, local.data_ptr(), addr, 1 << 20) == 0  # retried after the refresh
        assert peer.sha(0, 1 << 20) == sha(local[:1 << 20])
    finally:
        te.close()
