"""The KV store from Python: weft.store (typed) and weft.mooncake_store (Mooncake's ints) across
two processes. This process hosts the pool and its master (a unix-socket master: the first client
hosts it); tests/python/store_peer.py joins and writes or reads on request. Every value is fresh
random data and every byte read is compared, destinations poisoned first. Also the argument
translation of mooncake_master and setup's dict/env parsing, which need no store."""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

import weft
from weft import mooncake_master
from weft import mooncake_store as mcs
from weft.mooncake_store import MooncakeDistributedStore, ReplicateConfig
from weft.store import Store

SEGMENT = 32 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "store_peer.py")
SHIM = os.path.join(HERE, "..", "..", "python", "shim")
POISON = 0xA5
SIZES = [1, 100, 4096, 65537, (1 << 20) + 3]


def unique(what: str) -> str:
    return f"{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fresh_rng() -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(os.urandom(8), "little"))


class StorePair:
    """This process's MooncakeDistributedStore (hosting the master) and a peer process's."""

    def __init__(self, tmp_path, master=None):
        self.tmp = tmp_path
        self.master = master or str(tmp_path / "master.sock")
        self.mc = MooncakeDistributedStore()
        code = self.mc.setup({"local_hostname": "127.0.0.1", "global_segment_size": str(SEGMENT),
                              "master_server_addr": self.master, "protocol": "tcp"})
        assert code == 0, f"setup returned {code}"
        self.store = self.mc.weft_store
        self.proc = subprocess.Popen([sys.executable, PEER, self.master, str(SEGMENT)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), f"the peer did not start: {line!r} {self.proc.stderr.read()}"
        self.peer_rank = int(line.split()[1])
        assert self.peer_rank != self.store.rank

    def ask(self, **request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the peer died: {self.proc.stderr.read()}"
        reply = json.loads(line)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def files(self, values):
        paths = []
        for value in values:
            path = self.tmp / unique("value")
            path.write_bytes(value)
            paths.append(str(path))
        return paths

    def peer_writes(self, api, call, keys, values):
        return self.ask(op="write", api=api, call=call, keys=keys, files=self.files(values))

    def peer_checks(self, keys, values):
        return self.ask(op="check", keys=keys, files=self.files(values))

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                out, err = self.proc.communicate(timeout=60)
                assert self.proc.returncode == 0, f"peer failed: {out} {err}"
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.mc.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    two = StorePair(tmp_path_factory.mktemp("store"))
    try:
        yield two
    finally:
        two.close()


def random_values(sizes):
    return [os.urandom(n) for n in sizes]


def keys_for(what, count):
    prefix = unique(what)
    return [f"{prefix}/{i}" for i in range(count)]


def poisoned(n, extra=0):
    return np.full(n + extra, POISON, dtype=np.uint8)


# ---- the peer writes, this process reads through every call ----------------------------------

MC_WRITES = ["put", "upsert", "put_parts", "upsert_parts", "put_batch", "upsert_batch", "put_from", "upsert_from",
             "batch_put_from", "batch_upsert_from", "put_from_with_metadata"]


def read_every_way(mc, keys, values):
    """Reads every key through each read call of both APIs; every byte compared."""
    store = mc.weft_store
    assert mc.get_batch(keys) == values
    assert store.get_batch(keys) == values
    assert mc.batch_is_exist(keys) == [1] * len(keys)
    sizes = [len(v) for v in values]
    arena = poisoned(sum(sizes) + 64 * len(keys))
    store.register_buffer(arena)
    try:
        base, offsets, offset = arena.ctypes.data, [], 0
        for n in sizes:
            offsets.append(offset)
            offset += n + 64
        assert mc.batch_get_into(keys, [base + o for o in offsets], sizes) == sizes
        for key, value, o in zip(keys, values, offsets):
            assert arena[o:o + len(value)].tobytes() == value
            assert (arena[o + len(value):o + len(value) + 64] == POISON).all(), "written past the value"
        for key, value in zip(keys, values):
            assert mc.get(key) == value
            assert store.get(key) == value
            assert mc.get_size(key) == len(value) == store.size(key)
            assert mc.is_exist(key) == 1 and store.exists(key)
            arena[:] = POISON
            assert mc.get_into(key, base, len(value) + 10) == len(value)
            assert arena[:len(value)].tobytes() == value and (arena[len(value):len(value) + 10] == POISON).all()
            arena[:] = POISON
            view = arena[:len(value)]
            assert store.get_into(key, view) == len(value) and view.tobytes() == value
        arena[:] = POISON
        results = store.batch_get_into(keys, [arena[o:o + n] for o, n in zip(offsets, sizes)])
        assert results == sizes
        for value, o in zip(values, offsets):
            assert arena[o:o + len(value)].tobytes() == value
    finally:
        store.unregister_buffer(arena)


@pytest.mark.parametrize("call", MC_WRITES)
def test_peer_writes_through_mooncake_this_process_reads(pair, call):
    keys = keys_for(call, len(SIZES))
    values = random_values(SIZES)
    codes = pair.peer_writes("mc", call, keys, values)
    assert codes == (0 if call.endswith("_batch") else [0] * len(keys))
    read_every_way(pair.mc, keys, values)


@pytest.mark.parametrize("call", ["put", "upsert", "put_parts", "put_batch", "batch_put_from"])
def test_peer_writes_through_weft_this_process_reads(pair, call):
    keys = keys_for("weft-" + call, len(SIZES))
    values = random_values(SIZES)
    assert pair.peer_writes("weft", call, keys, values) == [None] * len(keys)
    read_every_way(pair.mc, keys, values)


def test_this_process_writes_the_peer_reads(pair):
    store, mc = pair.store, pair.mc
    rng = fresh_rng()
    keys = keys_for("here", 6)
    values = [rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for n in (3, 777, 4096, 100003, 1 << 20, 9)]
    store.put(keys[0], values[0])
    store.put_parts(keys[1], [values[1][:5], np.frombuffer(values[1][5:], dtype=np.uint8)])
    assert store.put_batch(keys[2:4], [bytearray(values[2]), memoryview(values[3])]) == [None, None]
    arena = np.frombuffer(values[4] + values[5], dtype=np.uint8).copy()
    store.register_buffer(arena)
    try:
        store.put_from(keys[4], arena[:len(values[4])])
        assert mc.put_from(keys[5], arena.ctypes.data + len(values[4]), len(values[5])) == 0
    finally:
        store.unregister_buffer(arena)
    assert pair.peer_checks(keys, values) == ["ok"] * len(keys)


# ---- put-if-absent and upsert ----------------------------------------------------------------


def test_put_keeps_the_first_value_upsert_overwrites(pair):
    mc, store = pair.mc, pair.store
    key = keys_for("absent", 1)[0]
    first, second, third = random_values([5000, 7000, 3000])
    assert pair.peer_writes("mc", "put", [key], [first]) == [0]
    assert mc.put(key, second) == 0  # Mooncake: an existing key is success, the value stays
    assert mc.get(key) == first
    with pytest.raises(weft.AlreadyExists):
        store.put(key, second)
    assert store.get(key) == first
    assert pair.peer_writes("mc", "put", [key], [second]) == [0]
    assert pair.peer_checks([key], [first]) == ["ok"]
    assert mc.upsert(key, second) == 0
    assert mc.get(key) == second and mc.get_size(key) == len(second)
    assert pair.peer_checks([key], [second]) == ["ok"]
    assert pair.peer_writes("mc", "upsert", [key], [third]) == [0]
    assert mc.get(key) == third and store.get(key) == third
    store.upsert(key, first)
    assert pair.peer_checks([key], [first]) == ["ok"]
    # put_batch: existing keys count as stored; new ones are written.
    new_key = keys_for("absent-batch", 1)[0]
    assert mc.put_batch([key, new_key], [second, third]) == 0
    assert mc.get_batch([key, new_key]) == [first, third]


# ---- misses ----------------------------------------------------------------------------------


def test_misses(pair):
    mc, store = pair.mc, pair.store
    key = keys_for("miss", 1)[0]
    buf = poisoned(4096)
    store.register_buffer(buf)
    try:
        assert mc.get(key) == b""
        assert mc.get_batch([key]) == [b""]
        assert mc.get_into(key, buf.ctypes.data, buf.nbytes) == mcs.ERR_OBJECT_NOT_FOUND == -704
        assert (buf == POISON).all()
        assert mc.get_size(key) == -704
        assert mc.is_exist(key) == 0 and store.exists(key) is False
        assert mc.remove(key) == -704
        with pytest.raises(weft.NotFound):
            store.get(key)
        with pytest.raises(weft.NotFound):
            store.get_into(key, buf)
        with pytest.raises(weft.NotFound):
            store.size(key)
        with pytest.raises(weft.NotFound):
            store.remove(key)
    finally:
        store.unregister_buffer(buf)


def test_batch_with_a_miss_in_the_middle(pair):
    mc, store = pair.mc, pair.store
    keys = keys_for("hole", 3)
    values = random_values([4096, 65537, 333])
    assert pair.peer_writes("mc", "put", [keys[0], keys[2]], [values[0], values[2]]) == [0, 0]
    assert mc.batch_is_exist(keys) == [1, 0, 1]
    assert mc.get_batch(keys) == [values[0], b"", values[2]]
    handles = mc.batch_get_buffer(keys)
    assert handles[1] is None and mc.get_buffer(keys[1]) is None
    for handle, value in ((handles[0], values[0]), (handles[2], values[2]), (mc.get_buffer(keys[0]), values[0])):
        assert handle.size() == len(value) and bytes(handle) == value and memoryview(handle).nbytes == len(value)
        assert ctypes.string_at(handle.ptr(), handle.size()) == value
    got = store.get_batch(keys)
    assert got[0] == values[0] and isinstance(got[1], weft.NotFound) and got[2] == values[2]
    bufs = [poisoned(len(v)) for v in values]
    for b in bufs:
        store.register_buffer(b)
    try:
        counts = mc.batch_get_into(keys, [b.ctypes.data for b in bufs], [b.nbytes for b in bufs])
        assert counts == [len(values[0]), -704, len(values[2])]
        assert bufs[0].tobytes() == values[0] and bufs[2].tobytes() == values[2]
        assert (bufs[1] == POISON).all()
        results = store.batch_get_into(keys, bufs)
        assert results[0] == len(values[0]) and results[2] == len(values[2])
        assert isinstance(results[1], weft.NotFound)
        exists = store.batch_exists(keys)
        assert exists == [True, False, True]
    finally:
        for b in bufs:
            store.unregister_buffer(b)
    assert mc.batch_remove(keys, force=True) == [0, -704, 0]
    assert mc.batch_is_exist(keys) == [0, 0, 0]


# ---- zero-copy buffers and bad arguments -----------------------------------------------------


def test_zero_copy_buffers_and_bad_arguments(pair):
    mc, store = pair.mc, pair.store
    key = keys_for("zc", 1)[0]
    value = fresh_rng().integers(0, 256, size=100000, dtype=np.uint8).tobytes()
    assert pair.peer_writes("mc", "put", [key], [value]) == [0]

    # A numpy array and a bytearray, registered: one copy straight in.
    array, raw = poisoned(len(value)), bytearray(b"\x3c" * len(value))
    assert mc.register_buffer(array.ctypes.data, array.nbytes) == 0
    assert mc.register_buffer(raw, len(raw)) == 0
    assert mc.get_into(key, array.ctypes.data, array.nbytes) == len(value) and array.tobytes() == value
    assert mc.get_into(key, raw, len(raw)) == len(value) and bytes(raw) == value

    # A buffer smaller than the value: -600 and nothing written.
    array[:] = POISON
    assert mc.get_into(key, array.ctypes.data, len(value) - 1) == -600
    assert (array == POISON).all()
    with pytest.raises(weft.InvalidArgument):
        store.get_into(key, array[: len(value) - 1])
    assert (array == POISON).all()

    # Unregistered memory: -600 (NOT_REGISTERED underneath).
    stray = poisoned(len(value))
    assert mc.get_into(key, stray.ctypes.data, stray.nbytes) == -600
    assert (stray == POISON).all()
    with pytest.raises(weft.NotRegistered):
        store.get_into(key, stray)
    assert mc.put_from(keys_for("zc-stray", 1)[0], stray.ctypes.data, stray.nbytes) == -600
    assert mc.unregister_buffer(stray.ctypes.data) == -600
    assert mc.unregister_buffer(array.ctypes.data) == 0
    assert mc.get_into(key, array.ctypes.data, array.nbytes) == -600  # no longer registered
    assert mc.unregister_buffer(raw) == 0

    # Empty and oversized keys.
    for bad in ("", "k" * 4097):
        assert mc.put(bad, value) == -600
        assert mc.get(bad) == b""
        assert mc.get_into(bad, raw, len(raw)) == -600
        assert mc.get_size(bad) == -600
        assert mc.is_exist(bad) == -1
        with pytest.raises(weft.InvalidArgument):
            store.put(bad, value)
    longest = "k" * 4096
    assert mc.put(longest, value[:10]) == 0 and mc.get(longest) == value[:10]
    assert mc.remove(longest, force=True) == 0

    # An empty value, a bad placement, mismatched lists.
    assert mc.put(keys_for("zc-empty", 1)[0], b"") == -600
    assert mc.batch_get_into([key, key], [0], [1]) == [-600, -600]
    assert mc.batch_put_from([key], [1, 2], [1]) == [-600]


def test_multi_buffer_calls(pair):
    """vLLM's store connector: each key's value from / into several registered buffers."""
    mc, store = pair.mc, pair.store
    keys = keys_for("multi", 3)
    piece_sizes = [[1000, 1, 4096], [65537], [7, 7, 7, 7]]
    arena = poisoned(sum(map(sum, piece_sizes)) + 64 * 8)
    assert mc.register_buffer(arena.ctypes.data, arena.nbytes) == 0
    try:
        base, offset, all_ptrs = arena.ctypes.data, 0, []
        for sizes in piece_sizes:
            ptrs = []
            for n in sizes:
                ptrs.append(base + offset)
                offset += n + 64
            all_ptrs.append(ptrs)
        values = [os.urandom(sum(sizes)) for sizes in piece_sizes]
        for ptrs, sizes, value in zip(all_ptrs, piece_sizes, values):
            done = 0
            for p, n in zip(ptrs, sizes):
                arena[p - base:p - base + n] = np.frombuffer(value[done:done + n], dtype=np.uint8)
                done += n
        assert mc.batch_put_from_multi_buffers(keys, all_ptrs, piece_sizes) == [0, 0, 0]
        assert pair.peer_checks(keys, values) == ["ok"] * 3

        # The peer's values, spread over poisoned pieces; one key missing in the middle.
        theirs = keys_for("multi-theirs", 3)
        their_values = [os.urandom(sum(sizes)) for sizes in piece_sizes]
        assert pair.peer_writes("mc", "put", [theirs[0], theirs[2]], [their_values[0], their_values[2]]) == [0, 0]
        arena[:] = POISON
        assert mc.batch_get_into_multi_buffers(theirs, all_ptrs, piece_sizes) == [len(their_values[0]), -704,
                                                                                 len(their_values[2])]
        for i in (0, 2):
            done = 0
            for p, n in zip(all_ptrs[i], piece_sizes[i]):
                assert arena[p - base:p - base + n].tobytes() == their_values[i][done:done + n]
                assert (arena[p - base + n:p - base + n + 64] == POISON).all()
                done += n
        assert all((arena[p - base:p - base + n] == POISON).all() for p, n in zip(all_ptrs[1], piece_sizes[1]))

        # Pieces too small: -600 and nothing written; unregistered pieces: -600.
        arena[:] = POISON
        short = [[n for n in sizes[:-1]] + [sizes[-1] - 1] for sizes in piece_sizes]
        assert mc.batch_get_into_multi_buffers(keys, all_ptrs, short) == [-600, -600, -600]
        assert (arena == POISON).all()
        stray = poisoned(70000)
        assert mc.batch_get_into_multi_buffers(keys[1:2], [[stray.ctypes.data]], [[stray.nbytes]]) == [-600]
        assert mc.batch_put_from_multi_buffers(keys_for("multi-stray", 1), [[stray.ctypes.data]], [[10]]) == [-600]
        with pytest.raises(weft.NotRegistered):
            store.get_into_parts(keys[1], [stray])
        assert (stray == POISON).all()
        assert mc.batch_get_into_multi_buffers(keys, all_ptrs, piece_sizes[:2]) == [-600, -600, -600]
        # Objects as pieces, through weft's API.
        pieces = [arena[:10], arena[100:100 + len(values[1]) - 10]]
        assert store.get_into_parts(keys[1], pieces) == len(values[1])
        assert pieces[0].tobytes() + pieces[1].tobytes() == values[1]
    finally:
        assert mc.unregister_buffer(arena.ctypes.data) == 0


# ---- replica descriptors, ranged reads, put with metadata -------------------------------------


def memory_places(descs):
    """[(transport_endpoint, buffer_address, size)] of the memory replicas, checked for shape."""
    places = []
    for d in descs:
        assert d.status == mcs.ReplicaStatus.COMPLETE and d.status.name == "COMPLETE"
        assert d.is_memory_replica() and not d.is_disk_replica() and not d.is_local_disk_replica()
        b = d.get_memory_descriptor().buffer_descriptor
        assert d.get_memory_descriptor().buffer_descriptors == [b]
        places.append((b.transport_endpoint, b.buffer_address, b.size))
    return places


def test_replica_descriptors_name_each_copy(pair):
    mc, store = pair.mc, pair.store
    keys = keys_for("desc", 2)
    values = random_values([70001, 4096])
    assert pair.peer_writes("mc", "put", keys[:1], values[:1]) == [0]
    assert mc.put(keys[1], values[1], ReplicateConfig(replica_num=2)) == 0
    one, two = mc.get_replica_desc(keys[0]), mc.get_replica_desc(keys[1])
    [(endpoint, address, size)] = memory_places(one)
    assert endpoint == f"rank:{pair.peer_rank}" and size == len(values[0])
    assert one[0].get_memory_descriptor().buffer_descriptor.protocol != ""
    with pytest.raises(RuntimeError):
        one[0].get_disk_descriptor()
    places = memory_places(two)
    assert [p[0] for p in places] == [f"rank:{store.rank}", f"rank:{pair.peer_rank}"]  # the writer's own first
    assert all(p[2] == len(values[1]) for p in places) and places[0][1] != places[1][1]
    # weft's typed view and the peer's Mooncake view name the same places.
    desc = store.describe(keys[0])
    assert (desc.size, desc.disk_rank) == (len(values[0]), -1)
    assert [(r.rank, r.gva) for r in desc.replicas] == [(pair.peer_rank, address)]
    assert pair.ask(op="describe", keys=keys) == {keys[0]: [list(p) for p in memory_places(one)],
                                                  keys[1]: [list(p) for p in places]}
    # A describe takes no lease (keys[0] was only ever described, never read): an unforced
    # remove works right after it; then it is gone. A read leases keys[1]: that one is BUSY.
    assert mc.remove(keys[0]) == 0
    assert mc.get_replica_desc(keys[0]) == []
    with pytest.raises(weft.NotFound):
        store.describe(keys[0])
    assert mc.get(keys[1]) == values[1]
    assert mc.remove(keys[1]) == mcs.ERR_OBJECT_HAS_LEASE
    assert mc.remove(keys[1], force=True) == 0


def test_batch_get_replica_desc_leaves_out_missing_and_bad_keys(pair):
    mc, store = pair.mc, pair.store
    keys = keys_for("desc-batch", 3)
    values = random_values([100, 200, 300])
    assert pair.peer_writes("mc", "put_batch", keys, values) == 0
    missing = keys_for("desc-missing", 1)[0]
    asked = [keys[0], missing, "", keys[1], "k" * 5000, keys[2]]
    found = mc.batch_get_replica_desc(asked)
    assert isinstance(found, dict) and sorted(found) == sorted(keys)
    for key, value in zip(keys, values):
        [(endpoint, _, size)] = memory_places(found[key])
        assert (endpoint, size) == (f"rank:{pair.peer_rank}", len(value))
    typed = store.batch_describe(asked)
    assert isinstance(typed[1], weft.NotFound)
    assert isinstance(typed[2], weft.InvalidArgument) and isinstance(typed[4], weft.InvalidArgument)
    assert [d.size for d in (typed[0], typed[3], typed[5])] == [100, 200, 300]
    assert mc.get_replica_desc(missing) == [] and mc.get_replica_desc("") == []
    assert mc.batch_get_replica_desc([]) == {} and mc.batch_get_replica_desc(None) == {}
    assert mc.batch_remove(keys) == [0, 0, 0]
    assert mc.batch_get_replica_desc(keys) == {}


def test_get_into_ranges(pair):
    mc, store = pair.mc, pair.store
    keys = keys_for("ranges", 2)
    values = random_values([40000, 333])
    assert pair.peer_writes("mc", "put_batch", keys, values) == 0
    bufs = [poisoned(1 << 16), poisoned(1 << 12)]
    for b in bufs:
        assert mc.register_buffer(b.ctypes.data, b.nbytes) == 0
    loose = poisoned(64)
    missing = keys_for("ranges-missing", 1)[0]
    try:
        ptrs = [b.ctypes.data for b in bufs]
        results = mc.get_into_ranges(
            ptrs,
            [[keys[0], keys[1], missing], [keys[1], keys[0]]],
            [[[0, 30000], [25000], [35000]], [[0], [1000]]],
            [[[5, 39000], [0], [0]], [[300], [39990]]],
            [[[20000, 1000], [333], [8]], [[33], [10]]],
        )
        assert results == [[[20000, 1000], [333], [-704]], [[33], [10]]]
        want0 = poisoned(1 << 16)
        want0[0:20000] = np.frombuffer(values[0][5:20005], np.uint8)
        want0[30000:31000] = np.frombuffer(values[0][39000:40000], np.uint8)
        want0[25000:25333] = np.frombuffer(values[1], np.uint8)
        want1 = poisoned(1 << 12)
        want1[0:33] = np.frombuffer(values[1][300:333], np.uint8)
        want1[1000:1010] = np.frombuffer(values[0][39990:40000], np.uint8)
        assert (bufs[0] == want0).all() and (bufs[1] == want1).all()
        # Failures, each alone: past the value's end, an unregistered destination, a negative
        # offset, a key whose fragment lists differ, a buffer whose key list is short.
        bufs[0][:] = POISON
        results = mc.get_into_ranges(
            [ptrs[0], loose.ctypes.data, ptrs[1]],
            [[keys[1], keys[0], keys[0]], [keys[0]], [keys[0], keys[1]]],
            [[[0], [0, 10], [50]], [[0]], [[0], [0]]],
            [[[300], [-1, 0], [0, 1]], [[0]], [[0], [0]]],
            [[[34], [4, 4], [1]], [[8]], [[8]]],
        )
        assert results == [[[-600], [-600, 4], [-600]], [[-600]], [[-600], [-600]]]
        assert bytes(bufs[0][10:14]) == values[0][:4] and (bufs[0][:10] == POISON).all()
        assert (bufs[0][14:] == POISON).all() and (loose == POISON).all()
        # Top-level lists of other lengths: every entry -600, in all_keys' shape.
        assert mc.get_into_ranges(ptrs, [[keys[0]]], [[[0]]], [[[0]]], [[[8]]]) == [[[-600]]]
        assert mc.get_into_ranges([], [], [], [], []) == []
        # weft's typed call names each failure.
        got = store.get_ranges([keys[0], missing], [(0, 100, 64, ptrs[1]), (1, 0, 8, ptrs[1]), (0, 39999, 2, ptrs[1]),
                                                    (0, 0, 8, loose.ctypes.data), (5, 0, 8, ptrs[1])])
        assert got[0] == 64 and bytes(bufs[1][:64]) == values[0][100:164]
        assert isinstance(got[1], weft.NotFound) and isinstance(got[2], weft.OutOfRange)
        assert isinstance(got[3], weft.NotRegistered) and isinstance(got[4], weft.InvalidArgument)
    finally:
        for b in bufs:
            assert mc.unregister_buffer(b.ctypes.data) == 0
    mc.batch_remove(keys, force=True)


def test_put_from_with_metadata(pair):
    mc = pair.mc
    keys = keys_for("meta", 4)
    meta, data = random_values([304, 50000])
    arena = np.frombuffer(meta + data, dtype=np.uint8).copy()
    assert mc.register_buffer(arena.ctypes.data, arena.nbytes) == 0
    try:
        m, d = arena.ctypes.data, arena.ctypes.data + len(meta)
        assert mc.put_from_with_metadata(keys[0], d, m, len(data), len(meta)) == 0
        assert mc.put_from_with_metadata(keys[1], d, m, len(data), 0) == 0
        assert mc.put_from_with_metadata(keys[2], d, m, 0, len(meta), ReplicateConfig(replica_num=2)) == 0
        assert mc.put_from_with_metadata(keys[3], d, m, 0, 0) == mcs.ERR_INVALID_PARAMS
        assert mc.put_from_with_metadata(keys[3], poisoned(8).ctypes.data, m, 8, 8) == mcs.ERR_INVALID_PARAMS
        assert mc.put_from_with_metadata(keys[0], m, d, 10, 10) == 0  # put-if-absent: the first value stays
    finally:
        assert mc.unregister_buffer(arena.ctypes.data) == 0
    assert pair.peer_checks(keys[:3], [meta + data, data, meta]) == ["ok"] * 3
    assert mc.is_exist(keys[3]) == 0
    assert len(mc.get_replica_desc(keys[2])) == 2
    mc.batch_remove(keys[:3], force=True)


def test_leases_removal_and_regex(pair):
    mc, store = pair.mc, pair.store
    prefix = unique("rm")
    keys = [f"{prefix}/a{i}" for i in range(4)] + [f"{prefix}/b{i}" for i in range(3)]
    values = random_values([100] * len(keys))
    assert pair.peer_writes("mc", "put_batch", keys, values) == 0
    assert mc.get(keys[0]) == values[0]  # a read lease
    assert mc.remove(keys[0]) == mcs.ERR_OBJECT_HAS_LEASE == -706
    with pytest.raises(weft.Busy):
        store.remove(keys[0])
    assert mc.remove(keys[0], force=True) == 0
    assert mc.get(keys[0]) == b""
    assert mc.remove_by_regex("([") == -600
    assert mc.remove_by_regex(prefix + "/a.*", force=True) == 3
    assert mc.batch_is_exist(keys) == [0, 0, 0, 0, 1, 1, 1]
    assert store.remove_by_regex(prefix + "/b[01]", force=True) == 2
    assert mc.is_exist(keys[-1]) == 1
    assert mc.remove_all(force=True) >= 1
    assert mc.is_exist(keys[-1]) == 0


def test_replicate_config_and_placement(pair):
    mc = pair.mc
    keys = keys_for("replicas", 3)
    values = random_values([1000, 2000, 3000])
    config = ReplicateConfig(replica_num=2, preferred_segment=mc.get_hostname())
    assert mc.put(keys[0], values[0], config) == 0
    assert mc.put(keys[1], values[1], config=ReplicateConfig(with_soft_pin=True)) == 0
    assert mc.put(keys[2], values[2], ReplicateConfig(with_hard_pin=True, soft_pin_ttl_ms=5)) == 0
    assert pair.peer_checks(keys, values) == ["ok"] * 3
    assert mc.put(keys_for("replicas-bad", 1)[0], values[0], ReplicateConfig(replica_num=0)) == -600
    assert mc.batch_remove(keys, force=True) == [0, 0, 0]


def test_health_and_life(tmp_path):
    mc = MooncakeDistributedStore()
    assert mc.health_check() == 1
    assert mc.put("k", b"v") == -1 and mc.get("k") == b"" and mc.batch_is_exist(["k"]) == [-1]
    master = str(tmp_path / "solo.sock")
    assert mc.setup("127.0.0.1", "P2PHANDSHAKE", 8 << 20, 16 << 20, "tcp", "", master) == 0
    assert mc.get_hostname() == "127.0.0.1"
    assert mc.health_check() == 0
    assert mc.setup("127.0.0.1", "P2PHANDSHAKE", 8 << 20, 16 << 20, "tcp", "", master) == -600
    value = os.urandom(1234)
    assert mc.put("solo", value) == 0 and mc.get("solo") == value
    stats = mc.weft_store.stats()
    assert stats.objects == 1 and stats.bytes == len(value) and stats.capacity >= 8 << 20
    assert stats.used >= len(value) and stats.pending_puts == 0
    # The master runs in this process and the value is small: it wrote it itself, one round trip.
    assert stats.inline_puts == 1 and stats.inline_deferred == 0, stats
    assert mc.close() == 0
    assert mc.health_check() == 1
    assert mc.get("solo") == b""
    with Store(coordinator=str(tmp_path / "typed.sock"), rank_size="8MiB") as store:
        store.health()
        store.put(b"bytes-key", value)
        assert store.get("bytes-key") == value
    assert store.closed
    with pytest.raises(weft.Cancelled):
        store.get("bytes-key")


def test_ssd_offload_is_weft_ssd_tier(tmp_path):
    ssd = tmp_path / "ssd"
    mc = MooncakeDistributedStore()
    assert mc.setup({"master_server_addr": str(tmp_path / "ssd.sock"), "global_segment_size": "8MB",
                     "enable_ssd_offload": True, "ssd_offload_path": str(ssd)}) == 0
    try:
        value = os.urandom(20000)
        assert mc.put("on-disk-too", value) == 0
        assert ssd.is_dir() and any(ssd.iterdir()), "the writer keeps no copy in its SSD tier"
        # Described: its memory copy, then the writer's disk copy (a local-disk replica).
        rank = mc.weft_store.rank
        memory, disk = mc.get_replica_desc("on-disk-too")
        assert memory.is_memory_replica() and not disk.is_memory_replica() and disk.is_local_disk_replica()
        d = disk.get_local_disk_descriptor()
        assert (d.client_id, d.object_size, d.transport_endpoint) == (rank, len(value), f"rank:{rank}")
        with pytest.raises(RuntimeError):
            disk.get_memory_descriptor()
        # Evicted by a fill (it was never read, so no lease holds it): on disk only, which a
        # ranged read cannot use (-1) and a get serves.
        for i in range(12):
            assert mc.put(f"fill/{i}", os.urandom(1 << 20)) == 0
        [disk] = mc.get_replica_desc("on-disk-too")
        assert disk.is_local_disk_replica()
        buf = np.full(64, POISON, dtype=np.uint8)
        assert mc.register_buffer(buf.ctypes.data, buf.nbytes) == 0
        assert mc.get_into_ranges([buf.ctypes.data], [["on-disk-too"]], [[[0]]], [[[0]]], [[[64]]]) == [[[-1]]]
        assert (buf == POISON).all()
        assert mc.get("on-disk-too") == value
    finally:
        assert mc.close() == 0
    # Enabled without a path: memory only (a warning), as before.
    mc = MooncakeDistributedStore()
    assert mc.setup(str("127.0.0.1"), "P2PHANDSHAKE", "8MB", "16MB", "tcp", "", str(tmp_path / "mem.sock"),
                    enable_ssd_offload=True) == 0
    assert mc.close() == 0


def test_a_tcp_master_that_does_not_answer_is_rpc_fail(monkeypatch):
    mc = MooncakeDistributedStore()
    monkeypatch.setenv("WEFT_CLUSTER_SECRET", "test-secret")
    code = mc.setup({"master_server_addr": "127.0.0.1:1", "global_segment_size": "8MB"})
    assert code == mcs.ERR_RPC_FAIL, code
    assert mc.health_check() == 1


def test_error_codes_and_no_call_raises(pair):
    expected = {weft.PoolFull: -200, weft.InvalidArgument: -600, weft.NotRegistered: -600, weft.OutOfRange: -600,
                weft.InvalidAddress: -600, weft.Mismatch: -600, weft.NotFound: -704, weft.AlreadyExists: -705,
                weft.Busy: -706, weft.Timeout: -900, weft.PeerDown: -800, weft.Io: -800, weft.Unavailable: -900,
                weft.Internal: -1, weft.Protocol: -1, weft.Cancelled: -1}
    for cls, code in expected.items():
        assert mcs.error_code(cls("x")) == code, cls
    # TIMEOUT of a zero-copy read: the copy outlived its lease.
    assert mcs.error_code(weft.Timeout("x"), reading=True) == mcs.ERR_LEASE_EXPIRED == -707
    assert mcs.error_code(weft.NotFound("x"), reading=True) == -704
    assert mcs.error_code(TypeError("x")) == -600 and mcs.error_code(RuntimeError("x")) == -1
    # Arguments of the wrong type are codes too, never exceptions.
    mc = pair.mc
    assert mc.put(123, b"x") == -600
    assert mc.put("k-bad-value", object()) == -600
    assert mc.get(None) == b""
    assert mc.get_batch(None) == [] and mc.get_batch(["", "k" * 5000]) == [b"", b""]
    assert mc.get_into("k", "not a buffer", 10) == -600
    assert mc.is_exist(3.5) == -1
    assert mc.batch_get_into(None, [], []) == []
    assert mc.batch_put_from(["a"], None, [1]) == [-600]
    assert mc.batch_is_exist(7) == []
    assert mc.put_batch(None, None) == 0  # nothing to put, as for an empty batch
    assert mc.register_buffer(object(), 10) == -600
    assert mc.remove_by_regex(None) == -600


# ---- setup's configuration (no store needed) -------------------------------------------------


def test_parse_size():
    assert mcs.parse_size("16MB") == 16 << 20
    assert mcs.parse_size("16mb") == 16 << 20
    assert mcs.parse_size("1.5GB") == 3 << 29
    assert mcs.parse_size("512KiB") == 512 << 10
    assert mcs.parse_size("4096") == 4096
    assert mcs.parse_size(4096) == 4096
    assert mcs.parse_size("2 G") == 2 << 30
    for bad in ("", "MB", "16XB", "-1", True):
        with pytest.raises(ValueError):
            mcs.parse_size(bad)


def test_setup_mapping():
    settings, mode = mcs.weft_settings("10.0.0.1:12345", "1GB", "tcp", "", "10.0.0.9:50051")
    assert mode == "join"
    assert settings == {"rank_size": str(1 << 30), "coordinator": "tcp://10.0.0.9:50051", "transport": "tcp",
                        "data_address": "10.0.0.1:0"}
    settings, mode = mcs.weft_settings("node7", 4096, "rdma", "mlx5_0", "/tmp/kv.sock")
    assert mode == "auto"
    assert settings == {"rank_size": "4096", "coordinator": "/tmp/kv.sock", "transport": "ucx",
                        "data_address": "node7:0"}
    settings, _ = mcs.weft_settings("::1", "8MB", "tcp", "", "unix:/tmp/a.sock")
    assert settings["coordinator"] == "/tmp/a.sock" and "transport" not in settings
    assert settings["data_address"] == "[::1]:0"
    assert mcs.weft_settings("h", "8MB", "tcp", "", "tcp://h:7")[0]["coordinator"] == "tcp://h:7"
    assert mcs.weft_settings("h", "8MB", "tcp", "", "h:7", "/ssd/kv")[0]["store_ssd_path"] == "/ssd/kv"
    assert "store_ssd_path" not in mcs.weft_settings("h", "8MB", "tcp", "", "h:7")[0]
    # HA masters elected through etcd: the etcd address is the coordinator, resolved at join.
    settings, mode = mcs.weft_settings("h", "8MB", "tcp", "", "etcd://a:2379;b:2379")
    assert mode == "join"
    assert settings["coordinator"] == "etcd://a:2379;b:2379" and settings["transport"] == "tcp"
    for master in ("redis://r:6379", "k8s://ns/lease", "nohost", "h:port"):
        with pytest.raises(ValueError):
            mcs.weft_settings("h", "8MB", "tcp", "", master)
    with pytest.raises(ValueError):
        mcs.weft_settings("h", "8MB", "nvlink", "", "h:1")
    mc = MooncakeDistributedStore()
    assert mc.setup({"master_server_addr": "redis://a:6379"}) == -600
    assert mc.setup({"protocol": "carrier-pigeon"}) == -600
    assert mc.health_check() == 1


def test_setup_dict_defaults():
    c = mcs._config_from_dict({"local_hostname": "h", "global_segment_size": 1 << 30})
    assert c["global_segment_size"] == str(1 << 30)
    assert c["local_buffer_size"] == str(16 << 20)
    assert c["protocol"] == "tcp" and c["master_server_addr"] == "127.0.0.1:50051"
    assert mcs._config_from_dict({})["global_segment_size"] == str(16 << 20)
    assert mcs._config_from_dict({"master_server_address": "m:1"})["master_server_addr"] == "m:1"
    assert mcs._config_from_dict({"device_name": "mlx5_1"})["rdma_devices"] == "mlx5_1"
    c = mcs._config_from_dict({"enable_ssd_offload": True, "ssd_offload_path": "/ssd"})
    assert c["enable_ssd_offload"] == "True" and c["ssd_offload_path"] == "/ssd"


def test_load_config_from_env(tmp_path):
    path = tmp_path / "mooncake.json"
    path.write_text(json.dumps({"local_hostname": "h1", "metadata_server": "P2PHANDSHAKE",
                                "global_segment_size": "3GB", "local_buffer_size": "1GB", "protocol": "rdma",
                                "device_name": "mlx5_0", "master_server_address": "m:50051"}))
    config = mcs.load_config_from_env({"MOONCAKE_CONFIG_PATH": str(path), "MOONCAKE_MASTER": "ignored:1"})
    assert config["master_server_address"] == "m:50051" and config["global_segment_size"] == "3GB"
    c = mcs._config_from_dict(config)
    assert c["rdma_devices"] == "mlx5_0" and c["protocol"] == "rdma"
    config = mcs.load_config_from_env({"MOONCAKE_MASTER": "m:2", "MOONCAKE_LOCAL_HOSTNAME": "h2",
                                       "MOONCAKE_GLOBAL_SEGMENT_SIZE": "64MB", "MOONCAKE_PROTOCOL": "tcp",
                                       "MOONCAKE_DEVICE": "", "MOONCAKE_TE_META_DATA_SERVER": "P2PHANDSHAKE"})
    assert config == {"master_server_address": "m:2", "local_hostname": "h2", "global_segment_size": "64MB",
                      "protocol": "tcp", "metadata_server": "P2PHANDSHAKE"}
    with pytest.raises(ValueError):
        mcs.load_config_from_env({})
    with pytest.raises(ValueError):
        mcs.load_config_from_env({"MOONCAKE_CONFIG_PATH": str(tmp_path / "missing.json")})
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError):
        mcs.load_config_from_env({"MOONCAKE_CONFIG_PATH": str(tmp_path / "list.json")})
    assert MooncakeDistributedStore().setup_from_env({}) == -600


def test_setup_from_env_opens_a_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MOONCAKE_MASTER", str(tmp_path / "env.sock"))
    monkeypatch.setenv("MOONCAKE_GLOBAL_SEGMENT_SIZE", "8MB")
    monkeypatch.delenv("MOONCAKE_CONFIG_PATH", raising=False)
    mc = MooncakeDistributedStore()
    assert mc.setup_from_env() == 0
    value = os.urandom(999)
    assert mc.put("env", value) == 0 and mc.get("env") == value
    assert mc.close() == 0


# ---- mooncake_master's flags (translated, not run) -------------------------------------------


def sets(args):
    assert args[0] == "store-master"
    pairs = args[1:]
    assert pairs[0::2] == ["--set"] * (len(pairs) // 2)
    return pairs[1::2]


def test_mooncake_master_translation():
    assert sets(mooncake_master.translate([])) == ["coordinator=tcp://0.0.0.0:50051"]
    notes, warnings = [], []
    args = mooncake_master.translate(
        ["--rpc_port=50052", "--rpc_address", "10.0.0.9", "--default_kv_lease_ttl=500",
         "--eviction_high_watermark_ratio=0.95", "--eviction_ratio", "0.1", "--client_ttl=20",
         "--enable_http_metadata_server", "--http_metadata_server_port=8081", "--metrics_port=9003",
         "--max_kv_soft_pin_ttl=5", "--bogus", "7", "--set", "rank_size=1GiB"],
        warn=warnings.append, note=notes.append)
    assert args[-2:] == ["--directory", "10.0.0.9:8081"]  # Mooncake's HTTP metadata, served by weft's directory
    assert sets(args[:-2]) == ["coordinator=tcp://10.0.0.9:50052", "store_lease_ttl_ms=500",
                               "store_high_watermark_pct=95", "store_eviction_pct=10", "peer_timeout_ms=20000",
                               "rank_size=1GiB"]
    assert len(notes) == 1 and "--metrics_port" in notes[0] and "not supported" in notes[0]
    assert any("max_kv_soft_pin_ttl" in w for w in warnings) and any("bogus" in w for w in warnings)
    assert mooncake_master.translate(["--enable_http_metadata_server=1"])[-2:] == ["--directory", "0.0.0.0:8080"]
    warnings.clear()
    assert "--directory" not in mooncake_master.translate(["--http_metadata_server_port=9"], warn=warnings.append)
    assert any("http_metadata_server_port" in w for w in warnings)
    assert sets(mooncake_master.translate(["--port", "6000"])) == ["coordinator=tcp://0.0.0.0:6000"]
    assert sets(mooncake_master.translate(["-port=6001", "--rpc_address=::1"])) == ["coordinator=tcp://[::1]:6001"]
    notes.clear()
    args = mooncake_master.translate(["--noenable_ha", "--enable_http_metadata_server=false"], note=notes.append)
    assert notes == [] and "--directory" not in args
    for bad in (["--rpc_port=0"], ["--rpc_port=x"], ["--eviction_ratio=1.5"], ["--client_ttl=-1"],
                ["--default_kv_lease_ttl"], ["--enable_ha=maybe"],
                ["--enable_http_metadata_server", "--http_metadata_server_port=70000"]):
        with pytest.raises(ValueError):
            mooncake_master.translate(bad)


def test_mooncake_master_ha_flags():
    # An address of this host: published as given, with --ha and the etcd endpoints.
    args = mooncake_master.translate(["--rpc_address=10.0.0.9", "--enable_ha",
                                      "--ha_backend_connstring=etcd://h1:2379;h2:2379"])
    assert args[-2:] == ["--ha", "etcd://h1:2379;h2:2379"]
    assert sets(args[:-2]) == ["coordinator=tcp://10.0.0.9:50051"]
    # Mooncake's endpoints without a scheme are etcd's; --etcd_endpoints is the older spelling.
    for flag in ("--ha_backend_connstring=h1:2379;h2:2379", "--etcd_endpoints=h1:2379;h2:2379"):
        args = mooncake_master.translate(["--rpc_address=10.0.0.9", "--enable_ha=true", flag])
        assert args[-2:] == ["--ha", "etcd://h1:2379;h2:2379"], flag
    # The wildcard address is bound, and this host's name published: peers elsewhere dial it.
    notes = []
    args = mooncake_master.translate(["--port=6000", "--enable_ha", "--ha_backend_connstring=etcd://e:2379"],
                                     note=notes.append)
    assert sets(args[:-2]) == [f"coordinator=tcp://{socket.gethostname()}:6000", "coordinator_listen=0.0.0.0:6000"]
    assert len(notes) == 1 and "published" in notes[0]
    # Without --enable_ha the connstring is only warned about.
    warnings = []
    args = mooncake_master.translate(["--ha_backend_connstring=etcd://e:2379"], warn=warnings.append)
    assert "--ha" not in args and any("ha_backend_connstring" in w for w in warnings)
    for bad in (["--enable_ha"], ["--enable_ha", "--ha_backend_connstring=redis://r:6379"],
                ["--enable_ha", "--ha_backend_connstring=k8s://ns/lease"]):
        with pytest.raises(ValueError):
            mooncake_master.translate(bad)


def test_mooncake_master_main_execs_weft(tmp_path, monkeypatch):
    # A stand-in `weft` that prints its arguments: main() execs it in a child process.
    fake = tmp_path / "weft"
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
    fake.chmod(0o755)
    env = dict(os.environ, WEFT_BIN=str(fake))
    out = subprocess.run([sys.executable, "-m", "weft.mooncake_master", "--port=7000", "--eviction_ratio=0.2"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["store-master", "--set", "coordinator=tcp://0.0.0.0:7000", "--set",
                                  "store_eviction_pct=20"]
    env["WEFT_BIN"] = ""
    env["PATH"] = str(tmp_path / "empty")
    out = subprocess.run([sys.executable, "-m", "weft.mooncake_master"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 127 and "weft" in out.stderr
    out = subprocess.run([sys.executable, "-m", "weft.mooncake_master", "--eviction_ratio=2"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_gil_released_while_the_master_is_stopped(mc, master):
    """A call blocked on a master that does not answer lets other Python threads run, and ends
    as Mooncake's "master unreachable" (health_check 2)."""
    master.send_signal(signal.SIGSTOP)
    try:
        started, outcome = threading.Event(), {}

        def blocked():
            started.set()
            outcome["health"] = mc.health_check()

        t = threading.Thread(target=blocked)
        t.start()
        started.wait()
        total = sum(range(200000))  # runs while the other thread waits inside weft
        still_waiting = t.is_alive()
        t.join()
        assert total > 0 and still_waiting and outcome["health"] == 2
    finally:
        master.send_signal(signal.SIGCONT)


def test_mooncake_master_runs_weft_store_master(tmp_path, monkeypatch):
    """mooncake_master execs a real `weft store-master` (WEFT_BIN or `weft` on PATH; pip builds
    only the extension, so the CLI comes from the C++ build); two clients reach it over tcp."""
    weft_bin = os.environ.get("WEFT_BIN") or shutil.which("weft")
    if not weft_bin:
        pytest.skip("no weft CLI: set WEFT_BIN to the C++ build's weft (cmake --build build) to run this test")
    port = free_port()
    monkeypatch.setenv("WEFT_CLUSTER_SECRET", "store-" + uuid.uuid4().hex)
    monkeypatch.setenv("WEFT_BIN", weft_bin)
    monkeypatch.setenv("WEFT_DEADLINE_MS", "3000")  # a call to a stopped master gives up after this
    master = subprocess.Popen(
        [sys.executable, "-m", "weft.mooncake_master", f"--rpc_port={port}", "--rpc_address=127.0.0.1",
         "--default_kv_lease_ttl=60000", "--eviction_high_watermark_ratio=0.9", "--eviction_ratio=0.05",
         "--client_ttl=60", "--metrics_port=9003", "--set", f"rank_size={SEGMENT}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The master is up once a client can set up against it (bounded wait, nothing timed).
        address = f"127.0.0.1:{port}"
        probe = MooncakeDistributedStore()
        for _ in range(300):
            assert master.poll() is None, f"the master exited: {master.communicate()}"
            if probe.setup("127.0.0.1", "P2PHANDSHAKE", SEGMENT, 16 << 20, "tcp", "", address) == 0:
                break
            time.sleep(0.1)
        assert probe.health_check() == 0, "the master never answered"
        assert probe.close() == 0
        pair = StorePair(tmp_path, master=address)
        try:
            keys = keys_for("tcp", len(SIZES))
            values = random_values(SIZES)
            assert pair.peer_writes("mc", "batch_put_from", keys, values) == [0] * len(keys)
            read_every_way(pair.mc, keys, values)
            assert pair.mc.remove(keys[0]) == -706  # leased by the reads above (60 s)
            mine = keys_for("tcp-here", 2)
            assert pair.mc.put_batch(mine, values[:2]) == 0
            assert pair.peer_checks(mine, values[:2]) == ["ok", "ok"]
            check_gil_released_while_the_master_is_stopped(pair.mc, master)
            assert pair.mc.health_check() == 0 and pair.mc.get(mine[0]) == values[0]
        finally:
            pair.close()
    finally:
        master.send_signal(signal.SIGTERM)
        out, err = master.communicate(timeout=60)
    assert "store-master" in err and "--set store_lease_ttl_ms=60000" in err
    assert "--metrics_port" in err and "not supported" in err


# ---- the shim --------------------------------------------------------------------------------


def test_shim_declares_the_mooncake_master_command():
    with open(os.path.join(SHIM, "pyproject.toml")) as f:
        text = f.read()
    assert 'mooncake_master = "weft.mooncake_master:main"' in text
    assert callable(mooncake_master.main)


def test_shim_exports_the_store():
    code = ("import mooncake.store as s, weft.mooncake_store as w; "
            "assert s.MooncakeDistributedStore is w.MooncakeDistributedStore; "
            "assert s.ReplicateConfig is w.ReplicateConfig and s.BufferHandle is w.BufferHandle; "
            "assert s.ReplicaDescriptor is w.ReplicaDescriptor and s.ReplicaStatus.COMPLETE.name == 'COMPLETE'; "
            "print('ok')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(SHIM), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
