"""weft.symm: teams of processes (this one hosts the pool and is a rank; tests/python/symm_peer.py
runs the others) running the eight collectives and one-sided operations on fresh random data,
every byte compared with numpy references, and the error paths: disagreeing ranks (Mismatch on
every rank), arrays of no weft dtype (TypeError), bad names (InvalidArgument), and a rank that
dies (PeerDown on the others)."""

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

import weft
from weft.symm import Team

import symm_peer

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symm_peer.py")


def unique_name(what: str) -> str:
    return f"py-symm-{what}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1


def run_ranks(scenario: str, ranks: int) -> None:
    """Runs `scenario` on `ranks` ranks: this process (hosting the pool) and ranks-1 peers."""
    name, seed = unique_name(scenario), fresh_seed()
    pool = weft.Pool(pool_name=name, rank_size=symm_peer.RANK_SIZE, mode="host").join()
    procs = [subprocess.Popen([sys.executable, PEER, name, scenario, str(seed), str(ranks), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(ranks - 1)]
    try:
        pool.wait_for_peers(ranks, timeout=60)
        team = Team(pool, **symm_peer.TEAM_OPTIONS)
        assert team.size == ranks and team.rank == 0
        symm_peer.SCENARIOS[scenario](team, seed)
        del team
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=180)
            if scenario == "dead" and i == symm_peer.VICTIM:
                assert proc.returncode == -9, f"the victim ended with {proc.returncode}: {out} {err}"
            else:
                assert proc.returncode == 0 and "symm peer ok" in out, \
                    f"peer {i} failed ({proc.returncode}, seed {seed}): {out} {err}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        try:
            pool.leave()
        except weft.Busy:
            pass  # a failed scenario's traceback holds the team; the pool leaves when it goes


def test_every_collective_matches_numpy_on_four_processes():
    run_ranks("collectives", 4)


def test_collectives_on_three_processes():
    run_ranks("collectives", 3)


def test_puts_signals_gets_and_a_sub_team():
    run_ranks("one_sided", 4)


def test_errors_are_raised_on_every_rank_and_the_team_goes_on():
    run_ranks("errors", 3)


def test_a_dead_rank_makes_the_others_raise_peer_down():
    run_ranks("dead", 3)


# ---- one process: a team of one ------------------------------------------------------------


@pytest.fixture
def solo():
    # No leave here: pytest holds the team until after teardown, and the pool, which the team
    # keeps alive, leaves when the last of them goes.
    pool = weft.Pool(pool_name=unique_name("solo"), rank_size="16MiB", mode="host").join()
    return Team(pool, heap_bytes=1 << 20, user_context=b"ctx")


def test_leaving_waits_for_the_teams_on_the_pool():
    pool = weft.Pool(pool_name=unique_name("busy"), rank_size="16MiB", mode="host").join()
    team = Team(pool, heap_bytes=1 << 20)
    block = team.malloc(64)
    view = np.frombuffer(block, dtype=np.uint8)
    del team
    with pytest.raises(weft.Busy):
        pool.leave()  # the view still reads the heap, which lives in this peer's slice
    view[:] = 7
    assert view.sum() == 7 * 64
    del view, block
    pool.leave()


def test_a_team_of_one(solo):
    assert (solo.rank, solo.size, solo.heap_bytes) == (0, 1, 1 << 20)
    assert solo.user_contexts == [b"ctx"]
    assert solo.pool_rank(0) >= 0
    x = np.random.default_rng(fresh_seed()).integers(-100, 100, 1000).astype(np.int64)
    out = np.zeros_like(x)
    solo.allreduce(x, out, op="prod")
    assert out.tobytes() == x.tobytes()
    block = solo.malloc(4096)
    assert block.offset + block.nbytes <= solo.heap_bytes and not block.freed
    arr = np.frombuffer(block, dtype=np.float32)
    arr[:] = 1.5
    back = np.zeros(1024, np.float32)
    solo.get(back, 0, block)
    assert (back == 1.5).all()
    solo.free(block)
    with pytest.raises(weft.InvalidAddress):
        solo.free(12345)


def test_bad_arguments_raise_weft_errors(solo):
    with pytest.raises(weft.InvalidArgument):
        solo.allreduce(np.zeros(4, np.float32), op="mean")
    with pytest.raises(weft.InvalidArgument):
        solo.allreduce(np.zeros(4, np.float32), dtype="float64")
    with pytest.raises(TypeError):
        solo.allreduce(np.zeros(4, np.complex64))
    with pytest.raises(TypeError):
        solo.put(0, "not a heap offset", b"x")
    with pytest.raises(weft.InvalidArgument):
        solo.wait_until(0, "??", 1)
    with pytest.raises(weft.PoolFull):
        solo.malloc(2 << 20)
    # bf16 needs the explicit dtype; with it, uint16 bits reduce as bfloat16.
    bits = (np.array([1.5, -2.0, 0.25], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out = np.zeros_like(bits)
    solo.allreduce(bits, out, op="max", dtype="bf16")
    assert out.tobytes() == bits.tobytes()


def test_a_team_needs_a_joined_pool():
    pool = weft.Pool(pool_name=unique_name("unjoined"), rank_size="8MiB")
    with pytest.raises(weft.InvalidArgument):
        Team(pool)
    with pytest.raises(TypeError):
        Team(object())


def test_a_device_heap_needs_a_device_slice(solo):
    pool = weft.Pool(pool_name=unique_name("nodev"), rank_size="16MiB", mode="host").join()
    # Without device_size every rank is told why (no GPU at all: NotSupported).
    with pytest.raises((weft.InvalidArgument, weft.NotSupported)):
        Team(pool, heap_bytes=1 << 20, device_heap_bytes=1 << 20)
    with pytest.raises((weft.InvalidArgument, weft.NotSupported)):
        Team(pool, heap_bytes=1 << 20, device_heap_bytes=1 << 20, device_async=True)
    pool.leave()
    assert solo.device_heap_bytes == 0
    with pytest.raises(weft.NotSupported):
        solo.device_malloc(64)
    with pytest.raises(weft.NotSupported):
        solo.device_synchronize()
    assert solo.stats()["device_path"] == 0
    with pytest.raises(TypeError):
        solo.set_stream("the default stream")


def test_tensor_likes_name_their_dtype(solo):
    # torch.Tensor's shape, without torch: data_ptr/numel/element_size and a dtype object whose
    # str() is "torch.<name>" (host memory here, so the host path runs).
    from fake_tensors import TorchLike

    class TorchDtype:
        def __init__(self, name):
            self.name = name

        def __str__(self):
            return f"torch.{self.name}"

    class Tensor(TorchLike):
        def __init__(self, arr, name):
            super().__init__(arr)
            self.dtype = TorchDtype(name)

    x = np.random.default_rng(fresh_seed()).integers(-50, 50, 64).astype(np.int32)
    out = np.zeros_like(x)
    solo.allreduce(Tensor(x, "int32"), Tensor(out, "int32"), op="max")
    assert out.tobytes() == x.tobytes()
    with pytest.raises(TypeError):  # a dtype weft has no name for, and no dtype= given
        solo.allreduce(Tensor(x.view(np.float32), "complex32"))
