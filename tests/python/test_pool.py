"""The weft Python package: two peers as processes (this one hosts the pool, tests/python/pool_peer.py
joins it), fresh random payloads copied into the other rank and back with every byte compared,
batches, async copies, buffers of every kind, and typed exceptions for bad input."""

import os
import shutil
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest

import weft
from fake_tensors import TorchLike

RANK_SIZE = 32 << 20
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pool_peer.py")


def unique_name(what: str) -> str:
    return f"py-{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


class TwoPeers:
    """This process hosts a pool; a second process joins it."""

    def __init__(self, name: str):
        self.name = name
        self.pool = weft.Pool(pool_name=name, rank_size=RANK_SIZE, mode="host").join()
        self.proc = subprocess.Popen([sys.executable, PEER, name, str(RANK_SIZE)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("rank "), f"the peer did not join: {line!r} {self.proc.stderr.read()}"
        self.peer_rank = int(line.split()[1])
        assert self.peer_rank in self.pool.wait_for_peers(2, timeout=60)
        self.pool.barrier(timeout=120)  # 1
        self.finished = False

    def finish(self) -> None:
        """Releases the peer (barrier 2) and checks its exit status."""
        if self.finished:
            return
        self.finished = True
        self.pool.barrier(timeout=300)  # 2
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, f"peer failed ({self.proc.returncode}): {out} {err}"
        assert "peer check ok" in out

    def close(self) -> None:
        try:
            self.finish()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.pool.leave()


@pytest.fixture
def peers():
    two = TwoPeers(unique_name("two"))
    try:
        yield two
    finally:
        two.close()


@pytest.fixture
def solo():
    pool = weft.Pool(pool_name=unique_name("solo"), rank_size="8MiB", mode="host")
    with pool:
        yield pool


# ---- copies between two processes -----------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100, 4096, 65537, (3 << 20) + 7])
def test_round_trip_bytes_and_bytearray(peers, size):
    pool = peers.pool
    gva = pool.alloc(size + 64, placement="rank", rank=peers.peer_rank)
    assert pool.rank_of(gva) == peers.peer_rank
    for offset, direction in ((0, ("LH2GH", "GH2LH")), (1 + size % 61, ("auto", "auto"))):
        payload = random_bytes(size)
        pool.copy(gva + offset, payload, direction=direction[0])  # bytes: a read-only source
        back = bytearray(b"\xa5" * size)
        pool.copy(back, gva + offset, direction=direction[1])
        assert back == payload
    pool.free(gva)


def test_round_trip_numpy(peers):
    pool = peers.pool
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    for shape, dtype in (((1 << 20) + 3, np.uint8), ((257, 129), np.float64), ((4, 5, 6), np.int32)):
        src = rng.integers(0, 1 << 30, size=shape).astype(dtype)
        gva = pool.alloc(src.nbytes, placement="rank", rank=peers.peer_rank)
        pool.copy(gva, src)
        back = np.full_like(src, 0x5A)
        pool.copy(back, gva)
        assert np.array_equal(src, back)
        assert back.tobytes() == src.tobytes()  # every byte
        pool.free(gva)


def test_memoryview_and_int_addresses(peers):
    pool = peers.pool
    n = 10000
    gva = pool.alloc(n, placement="rank", rank=peers.peer_rank)
    payload = random_bytes(n)
    pool.copy(gva, memoryview(payload))
    # A memoryview slice as destination: only the middle changes.
    target = bytearray(b"\x11" * (n + 200))
    pool.copy(memoryview(target)[100:100 + n], gva)
    assert target[100:100 + n] == payload
    assert target[:100] == b"\x11" * 100 and target[100 + n:] == b"\x11" * 100
    # Plain addresses need a length.
    arr = np.zeros(n, dtype=np.uint8)
    pool.copy(arr.ctypes.data, gva, n)
    assert arr.tobytes() == payload
    with pytest.raises(weft.InvalidArgument):
        pool.copy(arr.ctypes.data, gva)
    # read/write helpers.
    fresh = random_bytes(n)
    pool.write(gva, fresh)
    assert pool.read(gva, n) == fresh
    pool.free(gva)


def test_spread_and_local_placement(peers):
    pool = peers.pool
    for placement in ("local", "spread"):
        gva = pool.alloc(123457, placement=placement)
        assert pool.rank_of(gva) in pool.live_ranks
        if placement == "local":
            assert pool.rank_of(gva) == pool.rank
        payload = random_bytes(123457)
        pool.write(gva, payload)
        assert pool.read(gva, len(payload)) == payload
        pool.free(gva)
    assert pool.slice_address(peers.peer_rank) <= pool.slice_address(peers.peer_rank) + 1


def test_batch(peers):
    pool = peers.pool
    pages, page = 32, 4096 + 3
    gva = pool.alloc(pages * page, placement="rank", rank=peers.peer_rank)
    chunks = [random_bytes(page) for _ in range(pages)]
    # Pages land in reverse order.
    results = pool.copy_batch([(gva + (pages - 1 - i) * page, chunks[i]) for i in range(pages)], direction="LH2GH")
    assert results == [None] * pages
    backs = [bytearray(page) for _ in range(pages)]
    pool.copy_batch([(backs[i], gva + (pages - 1 - i) * page, page) for i in range(pages)])
    assert [bytes(b) for b in backs] == chunks

    # One bad request: only it fails; raised with every result attached, or returned.
    requests = [(backs[i], gva + i * page) for i in range(pages)]
    requests[5] = (backs[5], pool.slice_address(peers.peer_rank) + RANK_SIZE - 10)
    with pytest.raises(weft.Error) as info:
        pool.copy_batch(requests, direction="GH2LH")
    assert "request 5" in str(info.value)
    assert [i for i, r in enumerate(info.value.results) if r is not None] == [5]
    results = pool.copy_batch(requests, direction="GH2LH", check=False)
    assert isinstance(results[5], weft.OutOfRange)
    assert all(r is None for i, r in enumerate(results) if i != 5)
    pool.free(gva)


def test_async(peers):
    pool = peers.pool
    n = (8 << 20) + 11
    gva = pool.alloc(n, placement="rank", rank=peers.peer_rank)
    src = np.frombuffer(random_bytes(n), dtype=np.uint8)
    put = pool.copy_async(gva, src)
    put.wait()
    assert put.poll() is True
    back = bytearray(n)
    get = pool.copy_async(back, gva)
    get.wait(timeout=60)
    assert bytes(back) == src.tobytes()
    # A failing async copy raises from wait() and poll().
    bad = pool.copy_async(back, pool.slice_address(peers.peer_rank) + RANK_SIZE - 1, 64, direction="GH2LH")
    with pytest.raises(weft.OutOfRange):
        bad.wait(timeout=30)
    assert bad.done()
    with pytest.raises(weft.OutOfRange):
        bad.poll()
    # Dropping a running copy waits for it: the buffer outlives the copy.
    pool.copy_async(gva, bytearray(random_bytes(n)))
    pool.free(gva)


def test_route(peers):
    pool = peers.pool
    gva = pool.alloc(64, placement="rank", rank=peers.peer_rank)
    route = pool.route(gva, bytearray(64))
    assert route.startswith("LH -> GH"), route
    assert "GH -> LH" in pool.route(bytearray(64), gva)
    pool.free(gva)


def test_peer_down_after_the_peer_leaves(peers):
    pool = peers.pool
    gva = pool.alloc(4096, placement="rank", rank=peers.peer_rank)
    peers.finish()  # the peer leaves
    deadline = 500
    err = None
    while deadline:
        try:
            pool.copy(gva, random_bytes(64))
        except weft.PeerDown as e:
            err = e
            break
        deadline -= 1
        threading.Event().wait(0.01)
    assert isinstance(err, weft.PeerDown)
    assert err.code == weft.codes["PEER_DOWN"] == 6 and err.name == "PEER_DOWN"
    with pytest.raises(weft.PeerDown):
        pool.free(gva)


# ---- buffers ---------------------------------------------------------------------------------


class ArrayInterfaceOnly:
    def __init__(self, arr):
        self.arr = arr
        self.__array_interface__ = arr.__array_interface__


class DLPackOnly:
    def __init__(self, arr):
        self.arr = arr

    def __dlpack__(self, *args, **kwargs):
        return self.arr.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()


def test_buffer_kinds(solo):
    pool = solo
    n = 4096
    gva = pool.alloc(n)
    for make in (TorchLike, ArrayInterfaceOnly, DLPackOnly):
        src = np.frombuffer(random_bytes(n), dtype=np.uint8).copy()
        dst = np.zeros(n // 4, dtype=np.float32)
        pool.copy(gva, make(src))
        pool.copy(make(dst), gva)
        assert dst.tobytes() == src.tobytes(), make.__name__
    with pytest.raises(weft.InvalidArgument):
        pool.copy(TorchLike(np.zeros(n, np.uint8), contiguous=False), gva)
    pool.free(gva)


def test_bad_buffers(solo):
    pool = solo
    gva = pool.alloc(4096)
    readonly = np.zeros(4096, dtype=np.uint8)
    readonly.flags.writeable = False
    with pytest.raises(weft.InvalidArgument, match="dst"):
        pool.copy(readonly, gva)
    with pytest.raises(weft.InvalidArgument, match="dst"):
        pool.copy(b"\x00" * 4096, gva)  # bytes are read-only
    with pytest.raises(weft.InvalidArgument):
        pool.copy(gva, np.zeros((64, 64), dtype=np.uint8)[:, ::2])  # not contiguous
    with pytest.raises(weft.OutOfRange):
        pool.copy(bytearray(16), gva, 32)  # longer than the destination
    with pytest.raises(weft.InvalidArgument):
        pool.copy(bytearray(16), bytearray(32))  # sizes differ, no length
    with pytest.raises(TypeError):
        pool.copy(gva, "a string")
    with pytest.raises(TypeError):
        pool.copy(gva, object(), 8)
    with pytest.raises(weft.InvalidArgument):
        pool.copy(gva, -1, 8)
    with pytest.raises(weft.InvalidArgument):
        pool.copy(gva, bytearray(8), direction="sideways")
    with pytest.raises(weft.InvalidArgument):
        pool.copy(bytearray(8), bytearray(8), direction="GH2GH")  # the addresses say otherwise
    pool.free(gva)


# ---- errors ----------------------------------------------------------------------------------


def test_typed_errors(solo):
    pool = solo
    gva = pool.alloc(1000)
    with pytest.raises(weft.InvalidAddress):
        pool.free(gva + 8)
    with pytest.raises(weft.InvalidAddress):
        pool.free(0x1234)
    with pytest.raises(weft.InvalidAddress):
        pool.rank_of(0x1234)
    pool.free(gva)
    with pytest.raises(weft.DoubleFree) as info:
        pool.free(gva)
    assert info.value.code == 4 and info.value.name == "DOUBLE_FREE"
    assert str(info.value).startswith("DOUBLE_FREE: ")
    with pytest.raises(weft.PoolFull):
        pool.alloc((8 << 20) + 1)
    with pytest.raises(MemoryError):  # PoolFull is also a MemoryError
        pool.alloc(9 << 20)
    big = pool.alloc(8 << 20)  # the whole slice
    with pytest.raises(weft.PoolFull):
        pool.alloc(64)
    pool.free(big)
    with pytest.raises(weft.InvalidArgument):
        pool.alloc(0)
    with pytest.raises(ValueError):  # InvalidArgument is also a ValueError
        pool.alloc(64, placement="nearby")
    with pytest.raises(weft.OutOfRange):
        pool.slice_address(1 << 30)
    with pytest.raises(weft.Timeout):
        pool.wait_for_peers(2, timeout=0.05)
    with pytest.raises(TimeoutError):  # Timeout is also a TimeoutError
        pool.wait_for_peers(2, timeout=0.01)
    assert weft.error_for_code(-5) is weft.PoolFull and weft.error_for_code(8) is weft.Mismatch
    assert issubclass(weft.PeerDown, weft.Error)
    assert {cls.code for cls in map(weft.error_for_code, range(1, 21))} == set(range(1, 21))


def test_join_errors(solo):
    name = solo.pool_name
    with pytest.raises(weft.Mismatch):
        weft.Pool(pool_name=name, rank_size="16MiB", mode="join").join()
    with pytest.raises(weft.AlreadyExists):
        weft.Pool(pool_name=name, rank_size="8MiB", mode="host").join()
    with pytest.raises(weft.Unavailable):
        weft.Pool(pool_name=unique_name("nobody"), rank_size="1MiB", mode="join", deadline_ms=2000).join()
    with pytest.raises(weft.InvalidArgument, match="no_such_key"):
        weft.Pool(pool_name=name, no_such_key=1)
    with pytest.raises(weft.InvalidArgument, match="rank_size"):
        weft.Pool(pool_name=name, rank_size="lots")
    with pytest.raises(weft.InvalidArgument):
        weft.Pool(pool_name=name, mode="visit")
    with pytest.raises(weft.AlreadyExists):
        solo.join()  # already joined


def test_device_region_without_a_device_slice(solo):
    # device_size is 0 here: the region has addresses but no memory, and asking for a device
    # slice on a machine without a GPU is refused with what to do.
    assert solo.device_size == 0
    assert solo.slice_address(solo.rank, medium="device") != solo.slice_address(solo.rank)
    with pytest.raises(weft.NotFound, match="device"):
        solo.alloc(4096, medium="device")
    with pytest.raises(weft.InvalidArgument, match="medium"):
        solo.alloc(4096, medium="hbm")
    src = bytes(range(256)) * 16
    with pytest.raises(weft.InvalidAddress, match="device slice"):
        solo.copy(solo.slice_address(solo.rank, medium="device"), src)
    # Page batches: bad indices are refused before anything runs; without a GPU the batch is
    # NOT_SUPPORTED with the advice to use copy_batch.
    base = solo.slice_address(solo.rank)
    with pytest.raises(weft.InvalidArgument, match="dst_pages"):
        solo.copy_pages(base + 4096, base, 64, [0, -1], [1, 0])
    with pytest.raises(weft.InvalidArgument, match="src_pages"):
        solo.copy_pages(base + 4096, base, 64, [0, 1], [1, "x"])
    with pytest.raises(weft.InvalidArgument):
        solo.copy_pages(base + 4096, base, 64, [0, 1], [1])
    if shutil.which("nvidia-smi") is None:
        with pytest.raises(weft.NotSupported, match="CopyBatch"):
            solo.copy_pages(base + 4096, base, 64, [0, 1], [1, 0])
        with pytest.raises(weft.NotSupported, match="device_size=0"):
            weft.Pool(pool_name=unique_name("gpu"), rank_size="4MiB", device_size="2MiB", mode="host").join()


def test_page_batch_streams_and_device_indexed_pairs(solo):
    # Streams: an int or an object with cuda_stream, as torch gives them; anything else is a
    # TypeError before anything runs. Device-indexed pairs: a whole number of uint32 pairs.
    base = solo.slice_address(solo.rank)

    class Stream:
        cuda_stream = 0

    with pytest.raises(TypeError, match="stream"):
        solo.copy_pages(base + 4096, base, 64, [0], [1], stream="s")
    with pytest.raises(weft.InvalidArgument, match="stream"):
        solo.copy_pages(base + 4096, base, 64, [0], [1], stream=-1)
    pairs = np.array([[0, 1], [1, 0]], dtype=np.uint32)
    with pytest.raises(weft.InvalidArgument, match="pairs"):
        solo.copy_pages_device_indexed(base + 4096, base, 64, np.zeros(6, dtype=np.uint8), 1, 1)
    with pytest.raises(weft.InvalidArgument, match="bare address"):
        solo.copy_pages_device_indexed(base + 4096, base, 64, 12345, 1, 1)
    if weft.cuda_available() if hasattr(weft, "cuda_available") else shutil.which("nvidia-smi") is not None:
        return  # the GPU machine runs these for real (tests/gpu)
    with pytest.raises(weft.NotSupported):
        solo.copy_pages(base + 4096, base, 64, [0, 1], [1, 0], stream=Stream())
    # Host pairs are refused: the kernel reads them on the GPU.
    with pytest.raises((weft.NotSupported, weft.InvalidArgument)):
        solo.copy_pages_device_indexed(base + 4096, base, 64, pairs, 1, 1)


def test_second_peer_in_this_process(solo):
    other = weft.Pool(pool_name=solo.pool_name, rank_size="8MiB", mode="auto")
    with other:
        assert other.rank != solo.rank
        assert sorted(solo.wait_for_peers(2, timeout=30)) == sorted([solo.rank, other.rank])
        gva = solo.alloc(100000, placement="rank", rank=other.rank)
        payload = random_bytes(100000)
        solo.copy(gva, payload)
        assert other.read(gva, 100000) == payload
        other.free(gva)
    assert not other.joined
    with pytest.raises(weft.Cancelled):
        other.alloc(64)
    with pytest.raises(weft.Cancelled):
        other.copy(bytearray(8), bytearray(8))
    with pytest.raises(weft.Cancelled):
        other.copy_async(bytearray(8), bytearray(8))
    other.leave()  # idempotent


def test_not_joined():
    pool = weft.Pool(pool_name=unique_name("idle"), rank_size="1MiB")
    assert not pool.joined
    with pytest.raises(weft.InvalidArgument, match="not joined"):
        pool.alloc(64)
    assert "not joined" in repr(pool)


def test_gil_is_released_while_blocked(solo):
    started = threading.Event()
    outcome = {}

    def blocked():
        started.set()
        try:
            solo.wait_for_peers(3, timeout=5)
        except weft.Timeout:
            outcome["timeout"] = True

    t = threading.Thread(target=blocked)
    t.start()
    started.wait()
    # Python code runs while the other thread waits inside weft.
    total = sum(range(200000))
    still_waiting = t.is_alive()
    t.join()
    assert total > 0 and still_waiting and outcome.get("timeout")


def test_module_tables():
    assert weft.codes["OK"] == 0 and weft.codes["INTERNAL"] == 20
    assert weft.DIRECTIONS[:4] == ("AUTO", "LH2LH", "LH2GH", "GH2LH")
    assert len(weft.DIRECTIONS) == 17


# ---- ints that are neither GVAs nor local memory -----------------------------------------------

# Runs in a child process: before the fix, the first copy dereferenced the wild int and killed the
# interpreter (SIGSEGV), which must fail this test rather than end pytest.
WILD_INT_SCRIPT = r"""
import sys
import numpy as np
import weft

with weft.Pool(pool_name=sys.argv[1], rank_size="8MiB", mode="host") as pool:
    gva = pool.alloc(4096)
    buf = bytearray(b"x" * 4096)
    arr = np.zeros(4096, dtype=np.uint8)
    cases = [
        ("past the window as dst", lambda: pool.copy(gva + (1 << 40), buf)),
        ("past the window as src", lambda: pool.copy(buf, gva + (1 << 40))),
        ("in a batch", lambda: pool.copy_batch([(gva, gva + (1 << 40), 4096)])),
        ("async", lambda: pool.copy_async(gva + (1 << 40), buf).wait()),
        ("a local range running off its mapping", lambda: pool.copy(gva, arr.ctypes.data, 1 << 40)),
    ]
    for what, call in cases:
        try:
            call()
            print("ACCEPTED", what, flush=True)
        except weft.InvalidAddress as e:
            assert "neither inside this pool's window" in str(e) and "pass the buffer" in str(e), str(e)
            print("REFUSED", what, flush=True)
    # What is right still works: a GVA, and an int that is a mapped local pointer.
    pool.copy(gva, buf)
    back = np.zeros(4096, dtype=np.uint8)
    pool.copy(back.ctypes.data, gva, 4096)
    assert bytes(back) == bytes(buf)
    pool.free(gva)
print("DONE", flush=True)
"""


def test_a_wild_int_is_invalid_address_not_a_crash():
    proc = subprocess.run([sys.executable, "-c", WILD_INT_SCRIPT, unique_name("wild")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"the child died ({proc.returncode}): {proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert [line for line in lines if line.startswith("ACCEPTED")] == [], proc.stdout
    assert sum(line.startswith("REFUSED") for line in lines) == 5, proc.stdout
    assert lines[-1] == "DONE", proc.stdout
