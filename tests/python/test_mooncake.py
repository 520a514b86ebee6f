"""weft.mooncake (Mooncake's Python TransferEngine API on weft) between two processes: this one
drives, tests/python/trans_peer.py is the target. Fresh random payloads, poisoned destinations,
every byte compared (on the target through sha256 of its buffer, here byte for byte); batches,
async batches, submit + check_status, notifications checked by the receiver on arrival, p2p and
metadata-server modes, bad input, a peer stopped / killed / restarted, and the `mooncake` shim."""

from __future__ import annotations

import ctypes
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest

import weft
import weft.mooncake as mc
from trans_util import SHIM, MetadataProcess, Peer, env_without_secret, free_port, sha

SIZE = 8 << 20


@pytest.fixture(autouse=True)
def no_secret(monkeypatch):
    """Mooncake deployments have no secret: both sides run unauthenticated unless a test sets one."""
    for key in ("WEFT_CLUSTER_SECRET", "WEFT_PROTOCOL_FALLBACK", "MC_FORCE_TCP", "MC_TRANSFER_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)


class Local:
    """A registered local buffer of the driving engine."""

    def __init__(self, te: mc.TransferEngine, size: int):
        self.buf = ctypes.create_string_buffer(size)
        self.addr = ctypes.addressof(self.buf)
        self.size = size
        assert te.register_memory(self.addr, size) == 0

    def put(self, offset: int, data: bytes) -> None:
        ctypes.memmove(self.addr + offset, data, len(data))

    def get(self, offset: int, length: int) -> bytes:
        return ctypes.string_at(self.addr + offset, length)

    def poison(self, byte: int = 0xA5) -> None:
        ctypes.memset(self.addr, byte, self.size)


def engine(metadata: str = "P2PHANDSHAKE", hostname: str = "127.0.0.1") -> mc.TransferEngine:
    te = mc.TransferEngine()
    assert te.initialize(hostname, metadata, "tcp", "") == 0
    return te


@pytest.fixture
def peer():
    p = Peer(size=SIZE)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def driver():
    te = engine()
    local = Local(te, SIZE)
    try:
        yield te, local
    finally:
        te.close()


# ---- data between two processes ---------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 4096, 65537, (3 << 20) + 7])
def test_write_then_read_back(peer, driver, size):
    te, local = driver
    for offset in (0, 1 + size % 4093):
        payload = os.urandom(size)
        local.put(0, payload)
        peer.fill(0, SIZE, 0xA5)  # poison the target
        assert te.transfer_sync_write(peer.name, local.addr, peer.addr + offset, size) == 0
        assert peer.sha(offset, size) == sha(payload)  # the bytes landed where they were sent
        assert peer.sha(offset + size, 64) == sha(b"\xa5" * 64)  # and nothing after them
        local.poison()
        assert te.transfer_sync_read(peer.name, local.addr + 5, peer.addr + offset, size) == 0
        assert local.get(5, size) == payload
        assert local.get(0, 5) == b"\xa5" * 5 and local.get(5 + size, 16) == b"\xa5" * 16
        # transfer_sync with an opcode, both ways.
        fresh = os.urandom(size)
        local.put(0, fresh)
        assert te.transfer_sync(peer.name, local.addr, peer.addr + offset, size, mc.TransferOpcode.Write) == 0
        local.poison()
        assert te.transfer_sync(peer.name, local.addr, peer.addr + offset, size, mc.Read) == 0
        assert local.get(0, size) == fresh


def test_batch_sync(peer, driver):
    te, local = driver
    n = 64
    sizes = [int.from_bytes(os.urandom(2), "little") % 20000 + 1 for _ in range(n)]
    stride = 20480
    chunks = [os.urandom(s) for s in sizes]
    for i, c in enumerate(chunks):
        local.put(i * stride, c)
    peer.fill(0, SIZE, 0xA5)
    # Chunk i lands in slot n-1-i: reversed, so a request mixed up with another shows.
    remotes = [peer.addr + (n - 1 - i) * stride for i in range(n)]
    locals_ = [local.addr + i * stride for i in range(n)]
    assert te.batch_transfer_sync_write(peer.name, locals_, remotes, sizes) == 0
    for i, c in enumerate(chunks):
        assert peer.sha((n - 1 - i) * stride, len(c)) == sha(c), f"chunk {i}"
    local.poison()
    assert te.batch_transfer_sync_read(peer.name, locals_, remotes, sizes) == 0
    for i, c in enumerate(chunks):
        assert local.get(i * stride, len(c)) == c, f"chunk {i}"
    # A zero-length request in a batch is skipped (Mooncake completes it without moving anything).
    local.poison()
    assert te.batch_transfer_sync_read(peer.name, [local.addr, local.addr + stride], [remotes[0], remotes[1]],
                                       [sizes[0], 0]) == 0
    assert local.get(0, sizes[0]) == chunks[0] and local.get(stride, 16) == b"\xa5" * 16
    # The general form with an opcode.
    local.poison()
    assert te.batch_transfer_sync(peer.name, locals_, remotes, sizes, mc.TransferOpcode.Read) == 0
    assert all(local.get(i * stride, len(c)) == c for i, c in enumerate(chunks))
    # Arrays of 8-byte integers instead of lists (no Python object per request); zero-length
    # requests still skipped; an array of another item size is refused (-1), nothing moved.
    import numpy as np
    local.poison()
    arrays = [np.array(v, dtype=np.uint64) for v in (locals_, remotes, sizes[:-1] + [0])]
    assert te.batch_transfer_sync_read(peer.name, *arrays) == 0
    assert all(local.get(i * stride, len(c)) == c for i, c in enumerate(chunks[:-1]))
    assert local.get((n - 1) * stride, 16) == b"\xa5" * 16
    local.poison()
    assert te.batch_transfer_sync_read(peer.name, arrays[0], arrays[1], np.array(sizes, dtype=np.int32)) == -1
    assert local.get(0, 16) == b"\xa5" * 16


def test_batch_async_and_get_batch_transfer_status(peer, driver):
    te, local = driver
    piece, per_batch, batches = 16 << 10, 32, 4
    payload = os.urandom(piece * per_batch * batches)
    local.put(0, payload)
    peer.fill(0, SIZE, 0xA5)
    ids = []
    for b in range(batches):
        offs = [(b * per_batch + i) * piece for i in range(per_batch)]
        bid = te.batch_transfer_async_write(peer.name, [local.addr + o for o in offs], [peer.addr + o for o in offs],
                                            [piece] * per_batch)
        assert bid != 0
        ids.append(bid)
    assert len(set(ids)) == batches
    assert te.get_batch_transfer_status(ids) == 0
    assert peer.sha(0, len(payload)) == sha(payload)
    # The batches were freed: asking again is a failure, not a hang.
    assert te.transfer_check_status(ids[0]) == -1
    assert te.get_batch_transfer_status(ids[:1]) == -1

    local.poison()
    offs = [i * piece for i in range(per_batch * batches)]
    bid = te.batch_transfer_async_read(peer.name, [local.addr + o for o in offs], [peer.addr + o for o in offs],
                                       [piece] * len(offs))
    assert bid != 0
    assert te.get_batch_transfer_status([bid]) == 0
    assert local.get(0, len(payload)) == payload
    bid = te.batch_transfer_async(peer.name, [local.addr], [peer.addr], [4096], mc.TransferOpcode.Write)
    assert bid != 0 and te.get_batch_transfer_status([bid]) == 0


def test_transfer_submit_write_and_check_status(peer, driver):
    te, local = driver
    size = (2 << 20) + 3
    payload = os.urandom(size)
    local.put(0, payload)
    peer.fill(0, SIZE, 0xA5)
    bid = te.transfer_submit_write(peer.name, local.addr, peer.addr + 17, size)
    assert bid != 0
    seen = set()
    for _ in range(1_000_000):
        status = te.transfer_check_status(bid)
        seen.add(status)
        if status != 0:
            break
        threading.Event().wait(0.0005)
    assert status == 1, seen
    assert peer.sha(17, size) == sha(payload)
    assert te.transfer_check_status(bid) == -1  # freed once it reported completion


def test_notification_arrives_after_the_data(peer, driver):
    te, local = driver
    for round_ in range(3):
        size = (1 << 20) * (round_ + 1) + round_
        payload = os.urandom(size)
        local.put(0, payload)
        peer.fill(0, SIZE, 0xA5)
        note = mc.TransferNotify(f"kv-{round_}", f"{round_ * 4096} {size} {sha(payload)}")
        peer.send("await-notify 60")  # the peer polls get_notifies and checks the bytes on arrival
        if round_ == 0:
            rc = te.transfer_sync(peer.name, local.addr, peer.addr + round_ * 4096, size, mc.Write, note)
        else:
            half = size // 2
            rc = te.batch_transfer_sync(peer.name, [local.addr, local.addr + half],
                                        [peer.addr + round_ * 4096, peer.addr + round_ * 4096 + half],
                                        [half, size - half], mc.TransferOpcode.Write, note)
        assert rc == 0
        assert peer.readline() == f"notify kv-{round_} ok 1"


def test_notifications_in_process():
    a, b = engine(), engine()
    try:
        la, lb = Local(a, 1 << 16), Local(b, 1 << 16)
        name_b = f"127.0.0.1:{b.get_rpc_port()}"
        assert a.transfer_sync(name_b, la.addr, lb.addr, 100, mc.Write, mc.TransferNotify("n1", "hello")) == 0
        assert a.transfer_sync(name_b, la.addr, lb.addr, 100, mc.Write, mc.TransferNotify("n2", "wörld")) == 0
        got = []
        for _ in range(100000):
            got += b.get_notifies()
            if len(got) >= 2:
                break
            threading.Event().wait(0.001)
        # Nothing to move, only the notification.
        assert a.batch_transfer_sync(name_b, [], [], [], mc.Write, mc.TransferNotify("n3", "")) == 0
        for _ in range(100000):
            got += b.get_notifies()
            if len(got) >= 3:
                break
            threading.Event().wait(0.001)
        assert got == [mc.TransferNotify("n1", "hello"), mc.TransferNotify("n2", "wörld"), mc.TransferNotify("n3", "")]
        assert b.get_notifies() == []
        assert a.get_notifies() == []
    finally:
        a.close()
        b.close()


# ---- metadata server mode ------------------------------------------------------------------


def test_with_a_metadata_server():
    meta = MetadataProcess()
    peer = None
    te = None
    try:
        name = f"127.0.0.1:{free_port()}"
        peer = Peer(hostname=name, metadata=meta.url, size=SIZE)
        assert peer.name == name
        te = mc.TransferEngine()
        # initialize_ext puts the type in front of a server without a scheme.
        assert te.initialize_ext(f"127.0.0.1:{free_port()}", f"127.0.0.1:{meta.port}/metadata", "tcp", "",
                                 "http") == 0
        local = Local(te, SIZE)
        payload = os.urandom((1 << 20) + 99)
        local.put(0, payload)
        peer.fill(0, SIZE, 0xA5)
        assert te.transfer_sync_write(name, local.addr, peer.addr + 8, len(payload)) == 0
        assert peer.sha(8, len(payload)) == sha(payload)
        local.poison()
        assert te.transfer_sync_read(name, local.addr, peer.addr + 8, len(payload)) == 0
        assert local.get(0, len(payload)) == payload
        # The descriptor is in the directory under Mooncake's key, readable with Mooncake's protocol.
        with urllib.request.urlopen(f"{meta.url}?key=mooncake/ram/{name}", timeout=30) as r:
            desc = json.loads(r.read())
        assert any(b["addr"] == peer.addr and b["length"] == SIZE for b in desc["buffers"]), desc
        assert te.get_first_buffer_address(name) == peer.addr
        assert te.send_probe(name) == 0
        assert te.transfer_sync_write(f"nobody-{uuid.uuid4().hex[:6]}", local.addr, peer.addr, 8) == -1
    finally:
        if te is not None:
            te.close()
        if peer is not None:
            peer.close()
        meta.close()


# ---- bad input -------------------------------------------------------------------------------


def test_bad_input(peer, driver, caplog):
    te, local = driver
    caplog.set_level(logging.ERROR, logger="weft.mooncake")
    n = 4096
    peer.fill(0, SIZE, 0x11)
    before = peer.sha(0, SIZE)
    # Unknown peer (nothing listens on port 1).
    assert te.transfer_sync_write("127.0.0.1:1", local.addr, peer.addr, n) == -1
    assert te.batch_transfer_async_write("127.0.0.1:1", [local.addr], [peer.addr], [n]) == 0
    assert te.send_probe("127.0.0.1:1") != 0
    assert te.get_first_buffer_address("127.0.0.1:1") == 0
    # Local address not registered.
    stray = ctypes.create_string_buffer(n)
    assert te.transfer_sync_write(peer.name, ctypes.addressof(stray), peer.addr, n) == -3
    assert te.transfer_sync_read(peer.name, local.addr + SIZE - 10, peer.addr, n) == -3  # runs past it
    # Remote address outside the peer's registered buffer, or running past its end.
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr + SIZE, n) == -1
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr + SIZE - 10, n) == -1
    assert te.transfer_sync_write(peer.name, local.addr, 4096, n) == -1
    assert peer.sha(0, SIZE) == before  # nothing was written
    # Mismatched list lengths, zero length, empty.
    assert te.batch_transfer_sync_write(peer.name, [local.addr, local.addr], [peer.addr], [8, 8]) == -1
    assert te.batch_transfer_sync_read(peer.name, [local.addr], [peer.addr], [8, 8]) == -1
    assert te.batch_transfer_async_write(peer.name, [local.addr], [peer.addr, peer.addr], [8]) == 0
    # Zero lengths move nothing and succeed, as in Mooncake (weft's native API refuses them).
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 0) == 0
    assert te.batch_transfer_sync_write(peer.name, [], [], []) == 0
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr, -5) == -1
    # Registration errors.
    assert te.register_memory(local.addr + 100, 10) == -7  # overlaps
    assert te.unregister_memory(local.addr + 100) == -3
    assert te.register_memory(0, 100) == -1
    assert te.batch_register_memory([local.addr], [1, 2]) == -1
    # Unknown batches.
    assert te.transfer_check_status(987654321) == -1
    assert te.get_batch_transfer_status([987654321]) == -1
    # Bad opcode / types never raise.
    assert te.transfer_sync(peer.name, local.addr, peer.addr, 8, 7) == -1
    assert te.transfer_sync_write(peer.name, "not an address", peer.addr, 8) == -1
    assert peer.sha(0, SIZE) == before
    assert any(r.name == "weft.mooncake" and r.levelno == logging.ERROR for r in caplog.records)
    # The engine still works afterwards.
    payload = os.urandom(n)
    local.put(0, payload)
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr, n) == 0
    assert peer.sha(0, n) == sha(payload)


def test_not_initialized_and_double_initialize(caplog):
    te = mc.TransferEngine()
    assert te.get_rpc_port() == -1
    assert te.register_memory(1 << 20, 10) == -1
    assert te.transfer_sync_write("127.0.0.1:1", 1, 1, 1) == -1
    assert te.batch_transfer_async_write("127.0.0.1:1", [1], [1], [1]) == 0
    assert te.get_notifies() == []
    assert te.get_engine() is None and te.get_engine_ptr() == 0
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == -1
    te.close()


def test_peer_killed_mid_batch(driver):
    te, local = driver
    peer = Peer(size=SIZE)
    try:
        assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 4096) == 0  # connected
        peer.pause()  # stops serving: the batch below cannot finish while it is stopped
        n = 16
        bid = te.batch_transfer_async_write(peer.name, [local.addr] * n, [peer.addr] * n, [SIZE] * n)
        assert bid != 0
        assert te.transfer_check_status(bid) == 0  # still running
        peer.kill()
        assert te.get_batch_transfer_status([bid]) == -1  # returns, and reports the failure
        assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 4096) == -1
        assert te.send_probe(peer.name) != 0
    finally:
        peer.close()


def test_timeout_reported_by_check_status(driver, monkeypatch):
    monkeypatch.setenv("MC_TRANSFER_TIMEOUT", "5")  # Mooncake's minimum
    te = engine()
    local = Local(te, 1 << 20)
    peer = Peer(size=SIZE)
    try:
        assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 4096) == 0
        peer.pause()
        bid = te.batch_transfer_async_write(peer.name, [local.addr] * 64, [peer.addr] * 64, [1 << 20] * 64)
        assert bid != 0
        status = 0
        while status == 0:
            status = te.transfer_check_status(bid)
            threading.Event().wait(0.01)
        assert status == -2
    finally:
        peer.close()
        te.close()


def test_peer_restart_reopens_the_segment(driver):
    te, local = driver
    hostname = f"127.0.0.1:{free_port()}"  # p2p with a fixed rpc port: the same session name
    first = Peer(hostname=hostname, size=SIZE)
    try:
        assert first.name == hostname
        assert te.transfer_sync_write(hostname, local.addr, first.addr, 4096) == 0
    finally:
        first.close()
    second = Peer(hostname=hostname, size=SIZE)
    try:
        payload = os.urandom(100000)
        local.put(0, payload)
        # The cached handle describes the dead engine: the call reopens it once and succeeds.
        assert te.transfer_sync_write(hostname, local.addr, second.addr + 3, len(payload)) == 0
        assert second.sha(3, len(payload)) == sha(payload)
    finally:
        second.close()


class FailingOnce:
    """Stands in for the native engine: the first transfer fails as if the peer had restarted."""

    def __init__(self, native):
        self.native = native
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.native, name)

    def transfer_lists_mooncake(self, *args):
        self.calls.append(("transfer", args[1]))
        if len(self.calls) == 1:
            return [weft.PeerDown("the connection was reset (test)", weft.codes["PEER_DOWN"])]
        return self.native.transfer_lists_mooncake(*args)

    def close_segment(self, handle):
        self.calls.append(("close", handle))
        return self.native.close_segment(handle)


def test_stale_segment_is_evicted_and_reopened_once(peer, driver):
    te, local = driver
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 64) == 0
    handle = te._handles[peer.name]
    fake = FailingOnce(te.get_engine()._native)
    te.get_engine()._native = fake
    payload = os.urandom(5000)
    local.put(0, payload)
    assert te.transfer_sync_write(peer.name, local.addr, peer.addr + 1, len(payload)) == 0
    assert fake.calls[:2] == [("transfer", handle), ("close", handle)]
    assert fake.calls[2][0] == "transfer" and len(fake.calls) == 3  # one retry on a reopened handle
    assert peer.sha(1, len(payload)) == sha(payload)


def test_authentication(monkeypatch):
    env = env_without_secret({"WEFT_CLUSTER_SECRET": "right-secret"})
    peer = Peer(size=SIZE, env=env)
    try:
        for secret, expect in (("right-secret", 0), ("wrong-secret", -1), (None, -1)):
            if secret is None:
                monkeypatch.delenv("WEFT_CLUSTER_SECRET", raising=False)
            else:
                monkeypatch.setenv("WEFT_CLUSTER_SECRET", secret)
            te = engine()
            local = Local(te, 4096)
            payload = os.urandom(4096)
            local.put(0, payload)
            assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 4096) == expect, secret
            if expect == 0:
                assert peer.sha(0, 4096) == sha(payload)
            te.close()
    finally:
        peer.close()


def test_threads_share_an_engine(peer, driver):
    te, local = driver
    threads, piece = 8, 256 << 10
    payloads = [os.urandom(piece) for _ in range(threads)]
    for i, p in enumerate(payloads):
        local.put(i * piece, p)
    results = [None] * threads

    def work(i):
        results[i] = te.transfer_sync_write(peer.name, local.addr + i * piece, peer.addr + i * piece, piece)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == [0] * threads
    for i, p in enumerate(payloads):
        assert peer.sha(i * piece, piece) == sha(p)


def test_gil_released_while_blocked(driver):
    te, local = driver
    peer = Peer(size=SIZE)
    try:
        assert te.transfer_sync_write(peer.name, local.addr, peer.addr, 4096) == 0
        peer.pause()
        done = threading.Event()
        outcome = {}

        def blocked():
            outcome["rc"] = te.batch_transfer_sync_write(peer.name, [local.addr] * 8, [peer.addr] * 8, [SIZE] * 8)
            done.set()

        t = threading.Thread(target=blocked)
        t.start()
        spins = 0
        while not done.is_set() and spins < 200:  # Python runs while the call blocks
            spins += 1
            threading.Event().wait(0.001)
        assert spins == 200 and not done.is_set()
        peer.kill()
        t.join(timeout=120)
        assert done.is_set() and outcome["rc"] == -1
    finally:
        peer.close()


# ---- managed buffers, byte helpers, the rest of the surface ---------------------------------


def test_managed_buffer(peer):
    te = engine()
    try:
        size = (1 << 20) + 3
        addr = te.allocate_managed_buffer(size)
        assert addr != 0
        payload = os.urandom(size)
        assert te.write_bytes_to_buffer(addr, payload, size) == 0
        assert te.read_bytes_from_buffer(addr, size) == payload
        assert isinstance(te.read_bytes_from_buffer(addr, 4), bytes)
        assert te.transfer_sync_write(peer.name, addr, peer.addr, size) == 0
        assert peer.sha(0, size) == sha(payload)
        assert te.write_bytes_to_buffer(addr, b"\x00" * size, size) == 0
        assert te.transfer_sync_read(peer.name, addr, peer.addr, size) == 0
        assert te.read_bytes_from_buffer(addr, size) == payload
        assert te.get_first_buffer_address(f"127.0.0.1:{te.get_rpc_port()}") == addr  # local: our buffer
        assert te.get_first_buffer_address(peer.name) == peer.addr
        assert te.free_managed_buffer(addr, size) == 0
        assert te.free_managed_buffer(addr, size) == -1
        assert te.allocate_managed_buffer(0) == 0
        assert te.write_bytes_to_buffer(0, b"x", 1) == -1
        assert te.write_bytes_to_buffer(1, b"x", 2) == -1  # longer than the data
    finally:
        te.close()


# What the Mooncake wheel (mooncake-transfer-engine-non-cuda 0.3.13) declares, parameter names
# included; the *_on_cuda methods come from Mooncake's CUDA builds (docs: stream_ptr=0).
MOONCAKE_METHODS = {
    "initialize": 4, "initialize_ext": 5, "get_rpc_port": 0, "register_memory": 3, "unregister_memory": 1,
    "batch_register_memory": 3, "batch_unregister_memory": 1, "allocate_managed_buffer": 1,
    "free_managed_buffer": 2, "transfer_sync_write": 5, "transfer_sync_read": 5, "transfer_sync": 7,
    "batch_transfer_sync_write": 5, "batch_transfer_sync_read": 5, "batch_transfer_sync": 7,
    "batch_transfer_async_write": 5, "batch_transfer_async_read": 5, "batch_transfer_async": 6,
    "get_batch_transfer_status": 1, "transfer_submit_write": 5, "transfer_check_status": 1,
    "write_bytes_to_buffer": 3, "read_bytes_from_buffer": 2, "get_first_buffer_address": 1,
    "get_local_topology": 1, "get_notifies": 0, "send_probe": 1, "warmup_efa_segment": 1, "get_engine": 0,
    "get_engine_ptr": 0, "transfer_write_on_cuda": 6, "transfer_read_on_cuda": 6,
    "batch_transfer_write_on_cuda": 6, "batch_transfer_read_on_cuda": 6,
}
KEYWORDS = {
    "transfer_sync": ["target_hostname", "buffer", "peer_buffer_address", "length", "opcode", "notify",
                      "transport_hint"],
    "batch_transfer_sync_write": ["target_hostname", "buffers", "peer_buffer_addresses", "lengths", "transport_hint"],
    "register_memory": ["buffer_addr", "capacity", "location"],
    "batch_register_memory": ["buffer_addresses", "capacities", "location"],
    "send_probe": ["peer_server_name"],
    "get_local_topology": ["device_name"],
}


def test_module_surface(caplog):
    for name, count in MOONCAKE_METHODS.items():
        params = list(inspect.signature(getattr(mc.TransferEngine, name)).parameters)[1:]
        assert len(params) == count, (name, params)
    for name, params in KEYWORDS.items():
        assert list(inspect.signature(getattr(mc.TransferEngine, name)).parameters)[1:] == params
    sig = inspect.signature(mc.TransferEngine.transfer_sync)
    assert sig.parameters["notify"].default is None and sig.parameters["transport_hint"].default == ""
    assert inspect.signature(mc.TransferEngine.register_memory).parameters["location"].default == "*"
    assert mc.TransferOpcode.Read == 0 and mc.TransferOpcode.Write == 1
    assert mc.Read is mc.TransferOpcode.Read and mc.Write is mc.TransferOpcode.Write
    assert mc.TransferEngine.TransferOpcode is mc.TransferOpcode
    assert set(mc.TransferOpcode.__members__) == {"Read", "Write"}
    # SUPPORT_CUDA follows the GPU of the machine (test_cuda_package.py); the others are never True.
    for flag in ("SUPPORT_EFA", "SUPPORT_HIP", "SUPPORT_MNNVL", "SUPPORT_MUSA", "SUPPORT_INTRA_NVLINK"):
        assert getattr(mc, flag) is False
    note = mc.TransferNotify("a", "b")
    assert (note.name, note.msg) == ("a", "b") and mc.TransferNotify().name == ""

    caplog.set_level(logging.DEBUG, logger="weft.mooncake")
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "mlx5_0,mlx5_1") == 0
    try:
        assert any("WEFT_CLUSTER_SECRET" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        assert any("mlx5_0" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
        assert 0 < te.get_rpc_port() < 65536
        assert isinstance(te.get_engine(), weft.TransferEngine) and te.get_engine_ptr() != 0
        assert te.get_engine().name == f"127.0.0.1:{te.get_rpc_port()}"
        assert json.loads(te.get_local_topology()) == {}  # no NIC: Mooncake's answer without RDMA NICs
        assert json.loads(te.get_local_topology("mlx5_0")) == {}
        assert te.warmup_efa_segment("anything") == 0
        for name in ("transfer_write_on_cuda", "transfer_read_on_cuda"):
            with pytest.raises(RuntimeError, match="CUDA"):
                getattr(te, name)("127.0.0.1:1", 1, 1, 1)
        for name in ("batch_transfer_write_on_cuda", "batch_transfer_read_on_cuda"):
            with pytest.raises(RuntimeError, match="CUDA"):
                getattr(te, name)("127.0.0.1:1", [1], [1], [1], 0)
    finally:
        te.close()


def test_protocols(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="weft.mooncake")
    monkeypatch.setenv("WEFT_UCX_LIBRARY", "/nonexistent/libucp.so.0")  # rdma cannot run here
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == -1
    assert any("WEFT_PROTOCOL_FALLBACK" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "nvlink", "") == -1
    monkeypatch.setenv("WEFT_PROTOCOL_FALLBACK", "tcp")
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == 0
    assert te.get_engine().protocol == "tcp"
    te.close()
    monkeypatch.delenv("WEFT_PROTOCOL_FALLBACK")
    monkeypatch.setenv("MC_FORCE_TCP", "1")
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "rdma", "") == 0
    te.close()
    monkeypatch.delenv("MC_FORCE_TCP")
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "foo://bar", "tcp", "") == -1  # unknown scheme: -1, no abort
    assert te.initialize_ext("127.0.0.1", "bar:1", "tcp", "", "nosuchtype") == -1
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "", "") == 0  # "" means the default path, tcp
    te.close()


# ---- the `mooncake` shim ---------------------------------------------------------------------


SHIM_CLIENT = r"""
import ctypes, hashlib, os, sys
from mooncake.engine import TransferEngine, TransferOpcode, TransferNotify, Read, Write
import mooncake.engine
assert mooncake.engine.TransferEngine.__module__ == "weft.mooncake", mooncake.engine.TransferEngine.__module__
peer, remote = sys.argv[1], int(sys.argv[2])
te = TransferEngine()
assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
buf = ctypes.create_string_buffer(1 << 20)
addr = ctypes.addressof(buf)
assert te.register_memory(addr, 1 << 20) == 0
payload = os.urandom(1 << 20)
ctypes.memmove(addr, payload, len(payload))
assert te.batch_transfer_sync_write(peer, [addr], [remote], [len(payload)]) == 0
ctypes.memset(addr, 0xA5, 1 << 20)
assert te.transfer_sync_read(peer, addr, remote, 1 << 20) == 0
assert ctypes.string_at(addr, 1 << 20) == payload
print("shim ok", hashlib.sha256(payload).hexdigest())
"""


def _run_shim_client(path_entry: str, peer: Peer) -> str:
    env = env_without_secret({"PYTHONPATH": path_entry})
    out = subprocess.run([sys.executable, "-c", SHIM_CLIENT, peer.name, str(peer.addr)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("shim ok "), out.stdout
    return out.stdout.split()[2]


def test_shim_from_source_tree_both_sides():
    # The target imports mooncake.engine too (the shim on its path).
    peer = Peer(size=SIZE, module="mooncake.engine", env=env_without_secret({"PYTHONPATH": SHIM}))
    try:
        digest = _run_shim_client(SHIM, peer)
        assert peer.sha(0, 1 << 20) == digest
    finally:
        peer.close()


def test_shim_installed_by_the_module(tmp_path):
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "weft.mooncake", "--install-shim", "--target", str(target)],
                         capture_output=True, text=True, timeout=120, env=env_without_secret())
    assert out.returncode == 0, out.stderr
    # The files written are the files of python/shim.
    for rel, text in mc.SHIM_FILES.items():
        assert (target / rel).read_text() == text
        with open(os.path.join(SHIM, rel)) as f:
            assert f.read() == text, f"python/shim/{rel} differs from weft.mooncake.SHIM_FILES"
    assert (target / "weft_mooncake_shim-0.1.0.dist-info" / "RECORD").exists()
    peer = Peer(size=SIZE)
    try:
        digest = _run_shim_client(str(target), peer)
        assert peer.sha(0, 1 << 20) == digest
    finally:
        peer.close()
    # It refuses to overwrite a `mooncake` package that is not the shim.
    other = tmp_path / "other"
    (other / "mooncake").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-m", "weft.mooncake", "--install-shim", "--target", str(other)],
                         capture_output=True, text=True, timeout=120, env=env_without_secret())
    assert out.returncode != 0 and "uninstall" in out.stderr
