"""weft.pd: prefill -> decode KV block transfer between two processes (a prefill worker in
pd_peer.py, the decoder here), every requested block compared byte for byte in every layer, every
other block still poisoned; the prefiller frees what was read, and what nobody read at its deadline;
a dead prefiller, mismatched layouts and bad block ids finish the request as failed, never hang."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

import weft
from weft.pd import KVLayout, KVPeer, READ, block_runs, read_requests, regions_of
from pd_peer import kv_caches
from trans_util import Process, env_without_secret

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = "pd-test-secret"
POISON = 0xABAB


class Prefiller(Process):
    def __init__(self, layers: int, blocks: int, block_elems: int, seed: int, split_kv: bool = True):
        argv = [sys.executable, os.path.join(HERE, "pd_peer.py"), "--layers", str(layers), "--blocks", str(blocks),
                "--block-elems", str(block_elems), "--seed", str(seed), "--secret", SECRET]
        super().__init__(argv + (["--split-kv"] if split_kv else []), env=env_without_secret())
        line = self.readline()
        assert line.startswith("ready "), f"the prefill worker did not start: {line!r} {self.stderr()}"
        self.name = line.split()[1]
        self.caches = kv_caches(layers, blocks, block_elems, seed, split_kv)

    def ask(self, text: str) -> str:
        self.send(text)
        return self.readline()

    def expect(self, rid: str, seconds: float = 60) -> None:
        assert self.ask(f"expect {rid} {seconds}") == "ok"

    def sent(self, count: int, seconds: float = 60) -> set:
        answer = self.ask(f"await-sent {count} {seconds}")
        assert answer.startswith("sent"), answer
        return set(filter(None, answer[5:].split(",")))

    def close(self) -> None:
        self.exit()


def decoder(layers: int, blocks: int, block_elems: int, split_kv: bool = True, **kw) -> tuple:
    shape = (2, blocks, block_elems) if split_kv else (blocks, block_elems)
    caches = [np.full(shape, POISON, dtype=np.uint16) for _ in range(layers)]
    kw.setdefault("read_timeout", 20.0)
    kw.setdefault("handshake_timeout", 10.0)
    return caches, KVPeer(caches, num_blocks=blocks, local_name="127.0.0.1", cluster_secret=SECRET, **kw)


def wait_finished(peer: KVPeer, count: int, seconds: float = 60.0) -> tuple:
    received, failed = set(), set()
    deadline = time.monotonic() + seconds
    while len(received) < count and time.monotonic() < deadline:
        _, r, f = peer.finished()
        received |= r
        failed |= f
        time.sleep(0.005)
    return received, failed


def blocks_of(cache: np.ndarray, ids, split_kv: bool) -> np.ndarray:
    return cache[:, list(ids)] if split_kv else cache[list(ids)]


# -- layout and planning (no transfer) ------------------------------------------------------------

def test_regions_of_split_and_joined_layouts():
    kv = np.zeros((2, 10, 3, 4), dtype=np.float32)
    regions = regions_of(kv)
    assert len(regions) == 2
    assert regions[0].base == kv.ctypes.data and regions[1].base == kv.ctypes.data + kv.strides[0]
    assert regions[0].block_bytes == 3 * 4 * 4 and regions[0].block_stride == kv.strides[1]
    assert regions[0].num_blocks == 10
    joined = np.zeros((10, 2, 3, 4), dtype=np.float16)  # [num_blocks, 2, ...]: one region, K and V in a block
    (r,) = regions_of(joined, num_blocks=10)
    assert (r.block_bytes, r.block_stride, r.num_blocks) == (2 * 3 * 4 * 2, joined.strides[0], 10)


def test_a_block_that_is_not_contiguous_is_refused():
    kv = np.zeros((10, 4, 3), dtype=np.float32).transpose(0, 2, 1)  # inner dims swapped
    with pytest.raises(weft.NotSupported, match="not contiguous"):
        regions_of(kv)
    with pytest.raises(weft.InvalidArgument, match="num_blocks=7"):
        regions_of(np.zeros((10, 4)), num_blocks=7)
    with pytest.raises(weft.InvalidArgument, match="not a tensor"):
        regions_of(object())


def test_runs_coalesce_blocks_consecutive_on_both_sides():
    assert block_runs([5, 6, 7, 9], [1, 2, 3, 4]) == [(5, 1, 3), (9, 4, 1)]
    assert block_runs([1, 2], [4, 3]) == [(1, 4, 1), (2, 3, 1)]
    assert block_runs([], []) == []
    local = KVLayout.of([np.zeros((2, 8, 16), dtype=np.uint8)])
    remote = KVLayout.of([np.zeros((2, 8, 16), dtype=np.uint8)])
    reqs = read_requests(local, remote, "peer", [0, 1, 5], [3, 4, 0])
    # two regions (K, V) x two runs; the run of two is one 32-byte request
    assert [(op, n) for op, _, _, _, n in reqs] == [(READ, 32), (READ, 16)] * 2
    assert reqs[0][1] == local.regions[0].block(0) and reqs[0][3] == remote.regions[0].block(3)


def test_layout_round_trips_and_rejects_garbage():
    layout = KVLayout.of([np.zeros((2, 8, 16), dtype=np.uint8)] * 2, tp_rank=1, tp_size=2)
    assert KVLayout.from_json(layout.to_json()) == layout
    for bad in (b"", b"{}", b'{"v": 99}', b'{"v": 1, "tp_rank": 0, "tp_size": 1, "regions": [[1, 2]]}', b"\xff"):
        with pytest.raises(weft.Mismatch):
            KVLayout.from_json(bad)
    other = KVLayout.of([np.zeros((2, 8, 32), dtype=np.uint8)] * 2, tp_rank=1, tp_size=2)
    assert "region 0: blocks of 32 bytes on the prefiller, 16 here" in layout.mismatch(other)
    assert "tensor-parallel sizes differ" in layout.mismatch(KVLayout(layout.regions, 0, 1))


# -- between processes ----------------------------------------------------------------------------

@pytest.mark.parametrize("split_kv", [True, False], ids=["split-kv", "joined"])
def test_requested_blocks_arrive_byte_exact_and_the_prefiller_frees_them(split_kv):
    layers, blocks, elems = 4, 64, 512  # 1 KiB blocks
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    prefill = Prefiller(layers, blocks, elems, seed=int(rng.integers(1 << 30)), split_kv=split_kv)
    caches, peer = decoder(layers, blocks, elems, split_kv)
    try:
        local_free = list(rng.permutation(blocks))
        requests = {}
        for i, n in enumerate((1, 13, 30)):
            remote_ids = [int(b) for b in rng.choice(blocks, size=n, replace=False)]
            local_ids = [int(local_free.pop()) for _ in range(n)]
            requests[f"req-{i}"] = (local_ids, remote_ids)
        requests["req-run"] = ([int(local_free.pop())], [0])
        for rid in requests:
            prefill.expect(rid)
        for rid, (local_ids, remote_ids) in requests.items():
            peer.start_read(rid, prefill.name, rid, local_ids, remote_ids)
        received, failed = wait_finished(peer, len(requests))
        assert received == set(requests) and not failed, peer.errors()
        touched = set()
        for local_ids, remote_ids in requests.values():
            touched |= set(local_ids)
            for mine, theirs in zip(caches, prefill.caches):
                assert np.array_equal(blocks_of(mine, local_ids, split_kv), blocks_of(theirs, remote_ids, split_kv))
        untouched = [b for b in range(blocks) if b not in touched]
        for mine in caches:
            assert np.all(blocks_of(mine, untouched, split_kv) == POISON)
        assert prefill.sent(len(requests)) == set(requests)
    finally:
        peer.close()
        prefill.close()


def test_unread_blocks_are_freed_at_their_deadline_and_strangers_are_not_reported():
    caches = [np.zeros((2, 8, 64), dtype=np.uint16)]
    with KVPeer(caches, local_name="127.0.0.1", cluster_secret=SECRET) as prefill, \
            KVPeer([np.zeros((2, 8, 64), dtype=np.uint16)], local_name="127.0.0.1", cluster_secret=SECRET) as other:
        prefill.expect_read("never-read", 0.2)
        other.engine.notify(prefill.name, "weft.pd/done", b"stranger")  # a request it was never given
        other.engine.notify(prefill.name, "weft.pd/done", b"early")     # read before the scheduler said so
        deadline, sent = time.monotonic() + 30, set()
        while "never-read" not in sent and time.monotonic() < deadline:
            sent |= prefill.finished()[0]
            time.sleep(0.01)
        assert sent == {"never-read"}
        prefill.expect_read("early", 60)  # already read: reported at once
        assert prefill.finished()[0] == {"early"}
        assert prefill.finished()[0] == set()


def test_a_dead_prefiller_fails_the_request_within_the_deadline():
    layers, blocks, elems = 2, 16, 256
    prefill = Prefiller(layers, blocks, elems, seed=7)
    caches, peer = decoder(layers, blocks, elems, read_timeout=5.0, handshake_timeout=5.0)
    try:
        prefill.expect("first")
        peer.start_read("first", prefill.name, "first", [0, 1], [2, 3])
        assert wait_finished(peer, 1) == ({"first"}, set()), peer.errors()
        prefill.kill()
        started = time.monotonic()
        peer.start_read("second", prefill.name, "second", [4, 5, 6], [7, 8, 9])
        received, failed = wait_finished(peer, 1, seconds=60)
        assert received == {"second"} and failed == {4, 5, 6}
        assert "second" in peer.errors()
        assert time.monotonic() - started < 30  # finished by the 5 s read deadline, not hung
        for mine in caches:
            assert np.all(mine[:, [4, 5, 6]] == POISON)
    finally:
        peer.close()
        prefill.close()


def test_incompatible_layouts_and_bad_block_ids_fail_the_request_with_the_reason():
    prefill = Prefiller(2, 16, 256, seed=3)
    caches, peer = decoder(2, 16, 128)  # half the block size
    try:
        peer.start_read("r1", prefill.name, "r1", [0], [0])
        peer.start_read("r2", prefill.name, "r2", [99], [0])
        peer.start_read("r3", prefill.name, "r3", [0, 1], [0])
        received, failed = wait_finished(peer, 3)
        assert received == {"r1", "r2", "r3"} and failed == {0, 1, 99}
        errors = peer.errors()
        assert "blocks of 512 bytes on the prefiller, 256 here" in errors["r1"]
        assert "block id 99 is not in [0, 16)" in errors["r2"]
        assert "2 local blocks for 1 remote ones" in errors["r3"]
        for mine in caches:
            assert np.all(mine == POISON)
    finally:
        peer.close()
        prefill.close()


def test_an_unreachable_prefiller_fails_the_request_not_hangs():
    caches, peer = decoder(1, 4, 64, handshake_timeout=2.0)
    try:
        peer.start_read("r", "127.0.0.1:1", "r", [0], [0])
        received, failed = wait_finished(peer, 1)
        assert received == {"r"} and failed == {0}
        assert "r" in peer.errors()
    finally:
        peer.close()
