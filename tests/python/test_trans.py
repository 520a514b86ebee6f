"""weft.TransferEngine, weft's native Python API of the transfer engine: buffers of every kind,
batches with per-request results, typed exceptions for bad input, notifications, probes, the
metadata server; against a target process (tests/python/trans_peer.py) and in-process peers."""

from __future__ import annotations

import ctypes
import os
from array import array
import warnings
import urllib.error
import urllib.request
import subprocess
import sys
import time

import numpy as np
import pytest

import weft
from fake_tensors import TorchLike
from trans_util import MetadataProcess, Peer, sha

SIZE = 8 << 20


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for key in ("WEFT_CLUSTER_SECRET", "WEFT_PROTOCOL_FALLBACK", "MC_FORCE_TCP"):
        monkeypatch.delenv(key, raising=False)


def open_engine(**kw) -> weft.TransferEngine:
    kw.setdefault("allow_unauthenticated", True)  # the target peer runs without a secret, as Mooncake does
    kw.setdefault("local_name", "127.0.0.1")
    kw.setdefault("metadata", "P2PHANDSHAKE")
    return weft.TransferEngine(**kw)


def await_notifications(engine: weft.TransferEngine, count: int = 1) -> list:
    """The notifications that arrived once `count` have (or all there are after 100 s)."""
    got = []
    for _ in range(100000):
        got += engine.take_notifications()
        if len(got) >= count:
            break
        time.sleep(0.001)
    return got


@pytest.fixture
def peer():
    p = Peer(size=SIZE)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def te():
    e = open_engine()
    try:
        yield e
    finally:
        e.close()


def test_buffer_objects_round_trip(peer, te):
    handle = te.open_segment(peer.name)
    assert te.open_segment(peer.name) == handle  # the same name gives the same handle
    [remote] = te.remote_buffers(handle)
    assert (remote.addr, remote.length, remote.remote_accessible) == (peer.addr, SIZE, True)
    assert te.remote_buffers(peer.name, refresh=True) == [remote]

    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    arr = rng.integers(0, 255, size=(1 << 20) + 3, dtype=np.uint8)
    ba = bytearray(os.urandom(65537))
    f32 = rng.standard_normal(4097).astype(np.float32)
    torch_like = TorchLike(f32)
    for obj in (arr, ba, torch_like):
        addr = te.register_memory(obj)
        assert addr in [b.addr for b in te.local_buffers()]
    assert len(te.local_buffers()) == 3

    peer.fill(0, SIZE, 0xA5)
    results = te.transfer([("write", arr, handle, peer.addr),
                           (weft.trans.WRITE, ba, peer.name, peer.addr + (2 << 20)),
                           (1, torch_like, handle, peer.addr + (3 << 20), f32.nbytes)])
    assert results == [None, None, None]
    assert peer.sha(0, arr.nbytes) == sha(arr.tobytes())
    assert peer.sha(2 << 20, len(ba)) == sha(bytes(ba))
    assert peer.sha(3 << 20, f32.nbytes) == sha(f32.tobytes())

    expect = (arr.copy(), bytes(ba), f32.copy())
    arr[:] = 0xA5
    ba[:] = b"\xa5" * len(ba)
    f32[:] = 0
    te.read(handle, peer.addr, arr)
    te.read(peer.name, peer.addr + (2 << 20), ba)
    te.read(handle, peer.addr + (3 << 20), torch_like)
    assert np.array_equal(arr, expect[0]) and bytes(ba) == expect[1] and f32.tobytes() == expect[2].tobytes()
    # A part of a registered buffer, by address.
    te.write(handle, peer.addr + 7, arr.ctypes.data + 5, 1000)
    assert peer.sha(7, 1000) == sha(arr.tobytes()[5:1005])

    for obj in (arr, ba, torch_like):
        te.unregister_memory(obj)
    assert te.local_buffers() == []
    with pytest.raises(weft.NotRegistered):
        te.write(handle, peer.addr, arr)  # no longer registered


def test_submit_poll_wait_free(peer, te):
    local = np.frombuffer(os.urandom(4 << 20), dtype=np.uint8).copy()
    te.register_memory(local)
    peer.fill(0, SIZE, 0xA5)
    piece = 64 << 10
    reqs = [("write", local.ctypes.data + i * piece, peer.name, peer.addr + i * piece, piece) for i in range(64)]
    batch = te.submit(reqs, notify=None, timeout=60)
    assert batch != 0
    status = te.wait(batch, timeout=120)
    assert status.done and status.ok and status.states == ["completed"] * 64 and status.results == [None] * 64
    assert te.poll(batch).done and te.poll_done(batch) is True
    te.free_batch(batch)
    with pytest.raises(weft.NotFound):
        te.poll(batch)
    with pytest.raises(weft.NotFound):
        te.free_batch(batch)
    with pytest.raises(weft.NotFound):
        te.poll_done(batch)
    assert peer.sha(0, 4 << 20) == sha(local.tobytes())

    # One bad request fails alone, with its own result.
    reqs[7] = ("write", local.ctypes.data, peer.name, peer.addr + SIZE - 100, piece)  # runs past the peer's buffer
    batch = te.submit(reqs)
    status = te.wait(batch)
    assert status.done and not status.ok and te.poll_done(batch) is False
    assert [i for i, r in enumerate(status.results) if r is not None] == [7]
    assert isinstance(status.results[7], weft.Error) and status.states[7] == "failed"
    assert "request 7" in str(status.results[7])
    te.free_batch(batch)
    with pytest.raises(weft.Error) as info:
        te.transfer(reqs)
    assert [i for i, r in enumerate(info.value.results) if r is not None] == [7]
    results = te.transfer(reqs, check=False)
    assert results[7] is not None and results.count(None) == 63


def test_submit_spans_takes_arrays_and_lists(peer, te):
    local = np.frombuffer(os.urandom(1 << 20), dtype=np.uint8).copy()
    te.register_memory(local)
    piece, n = 4096, 256
    order = np.random.default_rng(int.from_bytes(os.urandom(8), "little")).permutation(n)  # scattered
    locals_ = array("Q", (local.ctypes.data + int(i) * piece for i in order))
    remotes = np.array([peer.addr + k * piece for k in range(n)], dtype=np.uint64)
    peer.fill(0, SIZE, 0xA5)
    batch = te.submit_spans("write", peer.name, locals_, remotes, [piece] * n, notify=None, timeout=60)
    status = te.wait(batch)
    assert status.ok and status.results == [None] * n
    te.free_batch(batch)
    expect = b"".join(local.tobytes()[int(i) * piece:(int(i) + 1) * piece] for i in order)
    assert peer.sha(0, n * piece) == sha(expect)
    assert peer.sha(n * piece, 4096) == sha(b"\xa5" * 4096)  # nothing past the batch

    back = np.full(n * piece, 0x5A, dtype=np.uint8)
    te.register_memory(back)
    batch = te.submit_spans(weft.trans.READ, te.open_segment(peer.name),
                            np.array([back.ctypes.data + k * piece for k in range(n)], dtype=np.uint64),
                            list(int(r) for r in remotes), array("Q", [piece] * n))
    assert te.wait(batch).ok
    te.free_batch(batch)
    assert back.tobytes() == expect

    with pytest.raises(weft.InvalidArgument):  # the three sequences must be of one length
        te.submit_spans("write", peer.name, locals_, remotes[:-1], [piece] * n)
    with pytest.raises(TypeError):  # 4-byte items would be read as something else
        te.submit_spans("write", peer.name, array("I", [1]), remotes[:1], [piece])


def test_busy_batch_and_timeout(te):
    peer = Peer(size=SIZE)
    try:
        local = bytearray(SIZE)
        te.register_memory(local)
        te.write(peer.name, peer.addr, local, 4096)
        peer.pause()  # the batch below cannot finish while the target is stopped
        batch = te.submit([("write", local, peer.name, peer.addr)] * 8, timeout=2.0)
        with pytest.raises(weft.Error) as info:
            te.free_batch(batch)  # still running
        assert isinstance(info.value, weft.Busy) and info.value.name == "BUSY"
        assert te.poll_done(batch) is None
        with pytest.raises(weft.Timeout):
            te.wait(batch, timeout=0.05)
        status = te.wait(batch)  # ends at the batch's own deadline
        assert status.done and "timeout" in status.states
        assert any(isinstance(r, weft.Timeout) for r in status.results)
        te.free_batch(batch)
    finally:
        peer.close()


def test_typed_errors(peer, te):
    with pytest.raises(weft.InvalidArgument, match="no_such_option"):
        open_engine(no_such_option=1)
    with pytest.raises(weft.NotSupported):
        open_engine(protocol="nvlink")
    os.environ["WEFT_UCX_LIBRARY"] = "/nonexistent/libucp.so.0"  # rdma cannot run here
    try:
        with pytest.raises(weft.NotSupported, match="ucx"):
            open_engine(protocol="rdma")
        e = open_engine(protocol="rdma", protocol_fallback="tcp")
        assert e.protocol == "tcp"
        e.close()
    finally:
        del os.environ["WEFT_UCX_LIBRARY"]
    with pytest.raises(weft.Unauthenticated):
        weft.TransferEngine("127.0.0.1")  # no secret, not allowed
    with pytest.raises(weft.InvalidArgument):
        open_engine(metadata="foo://bar")
    e.close()  # idempotent
    with pytest.raises(weft.Cancelled):
        e.local_buffers()

    local = bytearray(1 << 16)
    addr = te.register_memory(local)
    with pytest.raises(weft.AlreadyExists):
        te.register_memory(addr + 10, 10)
    with pytest.raises(weft.NotFound):
        te.unregister_memory(addr + 10)
    with pytest.raises(weft.InvalidArgument):
        te.register_memory(0, 10)
    with pytest.raises(weft.InvalidArgument):
        te.register_memory(12345)  # an address needs a length
    with pytest.raises(TypeError):
        te.register_memory("text")
    with pytest.raises((weft.NotFound, weft.Unavailable, weft.PeerDown)):
        te.open_segment("127.0.0.1:1")
    handle = te.open_segment(peer.name)
    with pytest.raises(weft.InvalidArgument):
        te.submit([])
    with pytest.raises(weft.InvalidArgument):
        te.submit([("write", addr, handle, peer.addr, 0)])  # zero length
    with pytest.raises(weft.NotRegistered):
        te.submit([("write", bytearray(64), handle, peer.addr)])
    with pytest.raises(weft.NotFound):
        te.submit([("write", addr, 987654, peer.addr, 8)])  # unknown handle
    with pytest.raises(weft.InvalidArgument):
        te.submit([("sideways", addr, handle, peer.addr, 8)])
    with pytest.raises(weft.InvalidArgument):
        te.submit([("write", addr, handle)])
    with pytest.raises(weft.OutOfRange):
        te.submit([("write", local, handle, peer.addr, len(local) + 1)])
    with pytest.raises(weft.NotFound):
        te.wait(987654321)
    with pytest.raises(weft.InvalidAddress):
        te.write(handle, peer.addr + SIZE, addr, 8)  # outside the peer's buffer
    with pytest.raises(weft.InvalidArgument):
        te.notify(handle, "n", b"x" * (weft._weft.max_notification_bytes + 1))
    assert issubclass(weft.InvalidArgument, ValueError)


def test_notifications_and_probe():
    a, b = open_engine(), open_engine()
    try:
        local = bytearray(os.urandom(4096))
        a.register_memory(local)
        sink = bytearray(4096)
        sink_addr = b.register_memory(sink)
        a.notify(b.name, "alone", b"\x00\xffbinary")
        a.transfer([("write", local, b.name, sink_addr)], notify=("after-data", "text"))
        got = await_notifications(b, 2)
        assert got == [weft.Notification("alone", b"\x00\xffbinary"), weft.Notification("after-data", b"text")]
        assert bytes(sink) == bytes(local)  # the data was in place before the notification was seen
        assert b.take_notifications() == []
        a.probe(b.name, timeout=10)
        with pytest.raises(weft.Error):
            a.probe("127.0.0.1:1", timeout=10)
        with pytest.raises(weft.Error):
            a.notify("127.0.0.1:1", "x")
        # No notification when a request to that target failed.
        with pytest.raises(weft.InvalidAddress):
            a.transfer([("write", local, b.name, sink_addr + 4000)], notify=("never", ""))
        a.notify(b.name, "marker")
        got = await_notifications(b)
        assert [n.name for n in got] == ["marker"]
    finally:
        a.close()
        b.close()


def test_rdma_protocol_runs_on_ucx(monkeypatch):
    monkeypatch.setenv("UCX_TLS", "tcp")  # what UCX may use on this machine
    try:
        a = open_engine(protocol="rdma")
    except weft.NotSupported as e:
        pytest.skip(f"no UCX here: {e}")
    b = open_engine(protocol="rdma")
    try:
        assert a.protocol == "rdma" and b.protocol == "rdma"
        local = bytearray(os.urandom(1 << 20))
        back = bytearray(len(local))
        a.register_memory(local)
        a.register_memory(back)
        sink = bytearray(len(local))
        sink_addr = b.register_memory(sink)
        assert "via ucx" in a.route(("write", local, b.name, sink_addr))
        a.transfer([("write", local, b.name, sink_addr)], notify=("rdma", "done"))
        assert bytes(sink) == bytes(local)
        a.transfer([("read", back, b.name, sink_addr)])
        assert bytes(back) == bytes(local)
        got = await_notifications(b)
        assert [n.name for n in got] == ["rdma"]  # tcp still carries notifications
    finally:
        a.close()
        b.close()


# PyPI's UCX wheel (libucx-cu13: UCX with CUDA, no InfiniBand) as the UCX found when the dynamic
# loader has none: weft._ucx loads it and points the engine at it. A fresh process, since a
# process holds one UCX; the loader's own libucp is hidden from weft._ucx by its probe argument.
_WHEEL_UCX_SCRIPT = r"""
import os, sys
import weft
from weft import _ucx
print(_ucx.prepare(loader_finds=lambda: False))
a = weft.TransferEngine("127.0.0.1", protocol="rdma", cluster_secret="wheel")
b = weft.TransferEngine("127.0.0.1", protocol="rdma", cluster_secret="wheel")
local = bytearray(os.urandom(3 << 20)); back = bytearray(len(local)); sink = bytearray(len(local))
a.register_memory(local); a.register_memory(back)
sink_addr = b.register_memory(sink)
print(a.route(("write", local, b.name, sink_addr)))
a.transfer([("write", local, b.name, sink_addr)])
a.transfer([("read", back, b.name, sink_addr)])
assert bytes(sink) == bytes(local) and bytes(back) == bytes(local), "bytes differ"
a.close(); b.close()
print("EXACT")
"""


def test_ucx_wheel_is_used_when_the_loader_has_no_libucp():
    try:
        import libucx  # noqa: F401
    except ImportError:
        pytest.skip("the libucx-cu13 wheel is not installed (scripts/test.sh installs it)")
    env = dict(os.environ, UCX_TLS="tcp")
    env.pop("WEFT_UCX_LIBRARY", None)
    run = subprocess.run([sys.executable, "-c", _WHEEL_UCX_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("libucx wheel: ") and lines[0].endswith("libucx/lib/libucp.so.0"), lines
    assert "via ucx" in lines[1] and "libucx/lib/libucp.so.0" in lines[1], lines[1]
    assert lines[-1] == "EXACT"


def test_ucx_library_choice_order(monkeypatch):
    from weft import _ucx
    monkeypatch.setenv("WEFT_UCX_LIBRARY", "/opt/hpcx/ucx/lib/libucp.so.0")
    assert _ucx.prepare(lambda: True, lambda: "/wheel/libucp.so.0") == "WEFT_UCX_LIBRARY=/opt/hpcx/ucx/lib/libucp.so.0"
    monkeypatch.delenv("WEFT_UCX_LIBRARY")
    assert _ucx.prepare(lambda: True, lambda: "/wheel/libucp.so.0") == "libucp.so.0 (dynamic loader)"
    assert "WEFT_UCX_LIBRARY" not in os.environ
    assert _ucx.prepare(lambda: False, lambda: None).startswith("none found")
    assert "WEFT_UCX_LIBRARY" not in os.environ
    assert _ucx.prepare(lambda: False, lambda: "/wheel/libucp.so.0") == "libucx wheel: /wheel/libucp.so.0"
    assert os.environ["WEFT_UCX_LIBRARY"] == "/wheel/libucp.so.0"
    assert _ucx.wants_ucx(protocol="rdma") and _ucx.wants_ucx(transports="ucx,tcp") and _ucx.wants_ucx(transport="ucx")
    assert not _ucx.wants_ucx(protocol="tcp", transports="auto") and not _ucx.wants_ucx(transport="tcp")


def test_authentication_between_engines():
    a = weft.TransferEngine("127.0.0.1", cluster_secret="one")
    b = weft.TransferEngine("127.0.0.1", cluster_secret="one")
    c = weft.TransferEngine("127.0.0.1", cluster_secret="two")
    try:
        local = bytearray(os.urandom(1000))
        a.register_memory(local)
        c.register_memory(bytearray(10))
        sink = bytearray(1000)
        sink_addr = b.register_memory(sink)
        a.write(b.name, sink_addr, local)
        assert sink == local
        with pytest.raises(weft.Unauthenticated):
            c.probe(b.name, timeout=10)
    finally:
        for e in (a, b, c):
            e.close()


def test_metadata_server_with_a_secret_refuses_unsigned_writes():
    secret = "meta-" + os.urandom(8).hex()
    with weft.MetadataServer(cluster_secret=secret) as server:
        a = open_engine(local_name="127.0.0.1:40011", metadata=server.url, cluster_secret=secret)
        b = open_engine(local_name="127.0.0.1:40012", metadata=server.url, cluster_secret=secret)
        try:
            sink = np.zeros(1 << 16, np.uint8)
            sink_addr = b.register_memory(sink)
            src = np.frombuffer(os.urandom(1 << 16), np.uint8).copy()
            a.register_memory(src)
            a.write(b.name, sink_addr, src)
            assert np.array_equal(sink, src)
            # Reads stay open; an unsigned write is refused and changes nothing.
            before = urllib.request.urlopen(f"{server.url}?key=mooncake/ram/127.0.0.1:40012", timeout=10).read()
            put = urllib.request.Request(f"{server.url}?key=mooncake/ram/127.0.0.1:40012", data=b"{}", method="PUT")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(put, timeout=10)
            assert refused.value.code == 401
            after = urllib.request.urlopen(f"{server.url}?key=mooncake/ram/127.0.0.1:40012", timeout=10).read()
            assert after == before
            # An engine with another secret cannot publish its descriptor there.
            with pytest.raises(weft.Unauthenticated):
                open_engine(local_name="127.0.0.1:40013", metadata=server.url, cluster_secret="not-" + secret)
        finally:
            a.close()
            b.close()


def test_metadata_server_without_a_secret_warns_unless_told():
    with pytest.warns(UserWarning, match="cluster_secret"):
        weft.MetadataServer(cluster_secret="").stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weft.MetadataServer(cluster_secret="", allow_unauthenticated=True).stop()


def test_metadata_server_in_process_and_as_process():
    with weft.MetadataServer(allow_unauthenticated=True) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/metadata"
        a = open_engine(local_name="127.0.0.1:40001", metadata=server.url)
        b = open_engine(local_name="127.0.0.1:40002", metadata=server.url)
        try:
            assert (a.name, b.name) == ("127.0.0.1:40001", "127.0.0.1:40002")
            sink = np.zeros(1 << 20, np.uint8)
            sink_addr = b.register_memory(sink)
            src = np.frombuffer(os.urandom(1 << 20), np.uint8).copy()
            a.register_memory(src)
            a.write(b.name, sink_addr, src)
            assert np.array_equal(sink, src)
            with pytest.raises(weft.NotFound):
                a.open_segment("127.0.0.1:40003")
        finally:
            a.close()
            b.close()
    meta = MetadataProcess()
    try:
        e = open_engine(local_name="127.0.0.1:40004", metadata=meta.url)
        e.close()
    finally:
        meta.close()


def test_close_while_another_thread_is_blocked():
    import threading

    e = open_engine()
    peer = Peer(size=SIZE)
    try:
        local = bytearray(SIZE)
        e.register_memory(local)
        e.write(peer.name, peer.addr, local, 4096)
        peer.pause()  # the transfer below blocks
        outcome = {}

        def blocked():
            try:
                e.transfer([("write", local, peer.name, peer.addr)] * 4)
                outcome["result"] = "ok"
            except weft.Error as err:
                outcome["result"] = err

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.2)  # let it block (if it has not, close simply finds no call to wait for)
        assert t.is_alive()
        closer = threading.Thread(target=e.close)
        closer.start()
        closer.join(timeout=0.5)
        assert closer.is_alive()  # close waits for the blocked call instead of destroying the engine under it
        assert e.closed
        with pytest.raises(weft.Cancelled):
            e.local_buffers()  # no new calls meanwhile
        peer.kill()  # the blocked call fails, then close finishes
        t.join(timeout=120)
        closer.join(timeout=120)
        assert not t.is_alive() and not closer.is_alive()
        assert isinstance(outcome["result"], weft.Error)
    finally:
        peer.close()
        e.close()


# ---- paths: managed buffers go over shm between engines on this host ------------------------


def test_managed_buffers_take_shm_and_route_says_why():
    a, b = open_engine(), open_engine()
    try:
        size = 3 << 20
        ma, mb = a.allocate_managed_buffer(size), b.allocate_managed_buffer(size)
        payload = os.urandom(size)
        ctypes_buf = (ctypes.c_char * size).from_address(ma)
        ctypes_buf[:] = payload
        target = a.open_segment(b.name)
        route = a.route((weft.trans.WRITE, ma, target, mb, size))
        assert " via shm" in route, route
        a.transfer([(weft.trans.WRITE, ma, target, mb, size)])
        assert bytes((ctypes.c_char * size).from_address(mb)) == payload
        ctypes_buf[:] = b"\x5a" * size  # poisoned before reading back
        a.transfer([(weft.trans.READ, ma, target, mb, size)])
        assert bytes(ctypes_buf) == payload
        # Plain memory of b is reached over tcp, and the route says why shm was passed over.
        plain = bytearray(4096)
        plain_addr = b.register_memory(plain)
        route = a.route((weft.trans.READ, ma, target, plain_addr, 4096))
        assert " via tcp" in route and "shm: the region is not advertised" in route, route
        a.free_managed_buffer(ma)
        with pytest.raises(weft.NotFound):
            a.free_managed_buffer(ma)
    finally:
        a.close()
        b.close()


def test_transports_option():
    with pytest.raises(weft.NotSupported, match="shm"):
        open_engine(transports="rdma")
    a, b = open_engine(transports="tcp"), open_engine()
    try:
        mb = b.allocate_managed_buffer(1 << 16)
        src = bytearray(os.urandom(1 << 16))
        a.register_memory(src)
        target = a.open_segment(b.name)
        assert " via tcp" in a.route((weft.trans.WRITE, src, target, mb, 1 << 16))
        a.transfer([(weft.trans.WRITE, src, target, mb, 1 << 16)])
        assert bytes((ctypes.c_char * (1 << 16)).from_address(mb)) == bytes(src)
    finally:
        a.close()
        b.close()


# Runs in a child process, so that a wild int that were dereferenced would fail this test rather
# than kill pytest: the engine checks an int local address against registered memory.
WILD_LOCAL_SCRIPT = r"""
import weft

a = weft.TransferEngine("127.0.0.1", metadata="P2PHANDSHAKE", allow_unauthenticated=True)
b = weft.TransferEngine("127.0.0.1", metadata="P2PHANDSHAKE", allow_unauthenticated=True)
local = bytearray(4096)
a.register_memory(local)
sink = bytearray(4096)
sink_addr = b.register_memory(sink)
handle = a.open_segment(b.name)
for op in ("write", "read"):
    for wild in (0x200000000000 + (1 << 40), 0x7F0000001000, 0x1000):
        try:
            a.transfer([(op, wild, handle, sink_addr, 8)])
            print("ACCEPTED", op, hex(wild), flush=True)
        except (weft.NotRegistered, weft.InvalidAddress) as e:
            print("REFUSED", op, hex(wild), type(e).__name__, flush=True)
a.transfer([("write", local, handle, sink_addr)])  # a registered buffer still works
a.close()
b.close()
print("DONE", flush=True)
"""


def test_a_wild_int_local_address_is_refused_not_dereferenced():
    proc = subprocess.run([sys.executable, "-c", WILD_LOCAL_SCRIPT], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "WEFT_CLUSTER_SECRET"})
    assert proc.returncode == 0, f"the child died ({proc.returncode}): {proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("ACCEPTED")] == [], proc.stdout
    assert sum(line.startswith("REFUSED") for line in lines) == 6, proc.stdout
    assert lines[-1] == "DONE", proc.stdout
