"""The ranks of tests/python/test_symm.py: each scenario runs on every rank of a team, the test
process (which hosts the pool) and the peers this file runs as processes:

    python symm_peer.py POOL_NAME SCENARIO SEED RANKS PEER_INDEX

A peer joins the pool, waits for RANKS peers, makes the team and runs the scenario; it prints
"symm peer ok" and exits 0 when every check passed. Every rank derives every rank's input from
SEED (fresh per test run), so each checks its own results against numpy references, byte for
byte, without seeing the others' buffers.
"""

import os
import signal
import sys

import numpy as np

import weft
from weft.symm import Team

RANK_SIZE = 32 << 20
# Small steps: the larger counts run in several rounds and the larger allreduces in two phases.
TEAM_OPTIONS = dict(heap_bytes=4 << 20, slot_bytes=4096, one_shot_max_bytes=8192, timeout=60.0)
COUNTS = (1, 7, 1001, 6000)


# ---- inputs and references ------------------------------------------------------------------


def rng_of(seed: int, salt: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, salt, rank])


def make_input(dtype: str, count: int, seed: int, salt: int, rank: int) -> np.ndarray:
    """count elements of rank's input for call `salt`. Floats are multiples of 1/4 in [-2, 2] (f16
    and bf16 too), so their sums over a few ranks are exact in any order; integers are random
    bits."""
    rng = rng_of(seed, salt, rank)
    if dtype in ("float32", "float16", "bf16"):
        values = (rng.integers(-8, 9, size=count) / 4).astype(np.float32)
        if dtype == "bf16":  # the upper half of a float32 is its bfloat16 (exact for these values)
            return (values.view(np.uint32) >> 16).astype(np.uint16)
        return values.astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=count, dtype=dtype, endpoint=True)


def all_inputs(dtype: str, count: int, seed: int, salt: int, size: int):
    return [make_input(dtype, count, seed, salt, r) for r in range(size)]


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def reference(inputs, op: str, dtype: str) -> np.ndarray:
    """The reduction in rank order, wrapping as the library's integer arithmetic does."""
    fold = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[op]
    values = [bf16_to_f32(x) for x in inputs] if dtype == "bf16" else inputs
    acc = values[0].copy()
    with np.errstate(over="ignore"):
        for v in values[1:]:
            acc = fold(acc, v).astype(acc.dtype)
    if dtype == "bf16":
        return (acc.view(np.uint32) >> 16).astype(np.uint16)  # exact: max/min pick an input
    return acc


def same_bytes(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.tobytes() == want.tobytes(), f"{what}: differs from the reference " \
        f"(first wrong element {int(np.flatnonzero(got != want)[0]) if got.shape == want.shape else '?'})"


# ---- scenarios ------------------------------------------------------------------------------


class Salt:
    def __init__(self):
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def check_reductions(team: Team, seed: int, salt: Salt, dtype: str, op: str, count: int) -> None:
    n, me = team.size, team.rank
    explicit = "bf16" if dtype == "bf16" else None
    ins = all_inputs(dtype, count, seed, salt.next(), n)
    want = reference(ins, op, dtype)
    out = np.full_like(ins[me], 0x5A)
    send = ins[me].copy()
    team.allreduce(send, out, op=op, dtype=explicit)
    same_bytes(out, want, f"allreduce {dtype} {op} {count}")
    same_bytes(send, ins[me], "allreduce left send alone")
    team.allreduce(send, op=op, dtype=explicit)  # in place
    same_bytes(send, want, f"allreduce in place {dtype} {op} {count}")

    root = salt.value % n
    out = np.full_like(ins[me], 0x5A) if me == root else None
    team.reduce(ins[me], out, root=root, op=op, dtype=explicit)
    if me == root:
        same_bytes(out, want, f"reduce {dtype} {op} {count}")

    ins = all_inputs(dtype, count * n, seed, salt.next(), n)
    want = reference(ins, op, dtype)
    out = np.full(count, 0x5A, dtype=ins[me].dtype)
    team.reduce_scatter(ins[me], out, op=op, dtype=explicit)
    same_bytes(out, want[me * count:(me + 1) * count], f"reduce_scatter {dtype} {op} {count}")


def check_movement(team: Team, seed: int, salt: Salt, dtype: str, count: int) -> None:
    n, me = team.size, team.rank
    explicit = "bf16" if dtype == "bf16" else None
    ins = all_inputs(dtype, count * n, seed, salt.next(), n)
    blocks = [x.reshape(n, count) for x in ins]
    root = salt.value % n

    buf = blocks[me][0].copy()
    team.broadcast(buf, root=root, dtype=explicit)
    same_bytes(buf, blocks[root][0], f"broadcast {dtype} {count}")

    recv = np.full(count, 0x5A, dtype=ins[me].dtype)
    team.scatter(ins[me] if me == root else None, recv, root=root, dtype=explicit)
    same_bytes(recv, blocks[root][me], f"scatter {dtype} {count}")

    out = np.full((n, count), 0x5A, dtype=ins[me].dtype) if me == root else None
    team.gather(blocks[me][0], out, root=root, dtype=explicit)
    if me == root:
        same_bytes(out, np.stack([b[0] for b in blocks]), f"gather {dtype} {count}")

    out = np.full((n, count), 0x5A, dtype=ins[me].dtype)
    team.allgather(blocks[me][0], out, dtype=explicit)
    same_bytes(out, np.stack([b[0] for b in blocks]), f"allgather {dtype} {count}")

    out = np.full((n, count), 0x5A, dtype=ins[me].dtype)
    team.alltoall(ins[me], out, dtype=explicit)
    same_bytes(out, np.stack([b[me] for b in blocks]), f"alltoall {dtype} {count}")
    inplace = ins[me].copy()
    team.alltoall(inplace, dtype=explicit)
    same_bytes(inplace.reshape(n, count), np.stack([b[me] for b in blocks]), f"alltoall in place {dtype} {count}")


def scenario_collectives(team: Team, seed: int) -> None:
    salt = Salt()
    for count in COUNTS:
        check_reductions(team, seed, salt, "float32", "sum", count)
        check_reductions(team, seed, salt, "float16", "max", count)
        check_reductions(team, seed, salt, "bf16", "min", count)
        check_reductions(team, seed, salt, "int32", "sum", count)
        check_reductions(team, seed, salt, "int64", "prod", count)
        check_reductions(team, seed, salt, "uint8", "max", count)
        for dtype in ("uint8", "float16", "bf16", "int32", "int64", "float32"):
            check_movement(team, seed, salt, dtype, count)
    # A heap block as the buffer of a collective, through numpy.
    block = team.malloc(4 * 1000)
    view = np.frombuffer(block, dtype=np.int32)
    ins = all_inputs("int32", 1000, seed, salt.next(), team.size)
    view[:] = ins[team.rank]
    team.allreduce(view)  # the dtype from the numpy view (the block itself exports bytes)
    same_bytes(view, reference(ins, "sum", "int32"), "allreduce of a heap block's numpy view")
    view[:] = ins[team.rank]
    team.allreduce(block, dtype="int32")
    same_bytes(view, reference(ins, "sum", "int32"), "allreduce of a SymmBuffer")
    team.free(block)


def scenario_one_sided(team: Team, seed: int) -> None:
    n, me = team.size, team.rank
    nxt = (me + 1) % n
    length = (64 << 10) + 3
    data = team.malloc(n * length)
    sig = team.malloc(8)
    assert data.nbytes == n * length and len(memoryview(data)) == n * length
    local = np.frombuffer(data, dtype=np.uint8)
    local[:] = 0
    np.frombuffer(sig, dtype=np.uint64)[:] = 0
    team.barrier()

    def block(src: int, dst: int, salt: int) -> np.ndarray:
        return rng_of(seed, salt, src * 64 + dst).integers(0, 256, size=length, dtype=np.uint8)

    for k in range(1, n):  # a different order on every rank
        peer = (me + k) % n
        team.put_signal(peer, data, block(me, peer, 1), sig, 1, op="add", offset=me * length)
    team.quiet()
    team.wait_until(sig, ">=", n - 1, timeout=30)
    assert team.signal_value(sig) == n - 1
    for src in range(n):
        if src != me:
            same_bytes(local[src * length:(src + 1) * length], block(src, me, 1), f"block put by rank {src}")
    team.barrier()

    back = np.full(length, 0xA5, dtype=np.uint8)
    team.get(back, nxt, data, offset=me * length)
    same_bytes(back, block(me, nxt, 1), "get")
    fresh = block(me, nxt, 2)
    team.put(nxt, data.offset + me * length, fresh)  # the heap offset as an int
    team.fence()
    team.get(back, nxt, data.offset + me * length)
    same_bytes(back, fresh, "put then get")

    # Bad input: outside the block, the team or the heap; a misaligned signal; a timeout.
    for call in (lambda: team.put(nxt, data, np.zeros(8, np.uint8), offset=n * length - 4),
                 lambda: team.get(np.zeros(16, np.uint8), nxt, team.heap_bytes - 8)):
        try:
            call()
            raise AssertionError("a range past the block or heap was accepted")
        except weft.OutOfRange:
            pass
    for call in (lambda: team.put(n, data, b"12345678"),
                 lambda: team.put_signal(nxt, data, b"x", sig.offset + 4, 1),
                 lambda: team.put_signal(nxt, data, b"x", sig, 1, op="xor"),
                 lambda: team.wait_until(sig, "~", 1),
                 lambda: team.signal_value(sig.offset + 1)):
        try:
            call()
            raise AssertionError("bad input was accepted")
        except weft.InvalidArgument:
            pass
    try:
        team.wait_until(sig, "gt", 1000, timeout=0.05)
        raise AssertionError("wait_until past its timeout returned")
    except weft.Timeout:
        pass
    team.barrier()
    team.free(sig)
    team.free(data)
    assert data.freed
    try:
        memoryview(data)
        raise AssertionError("a freed block exported its memory")
    except BufferError:
        pass

    # A sub-team of the last rank and rank 0, in that order.
    sub = team.split([n - 1, 0])
    assert (sub is not None) == (me in (0, n - 1))
    if sub is not None:
        assert sub.size == 2 and sub.rank == (0 if me == n - 1 else 1)
        ins = all_inputs("int64", 5, seed, 99, n)
        out = np.zeros(5, np.int64)
        sub.allreduce(ins[me], out)
        same_bytes(out, reference([ins[n - 1], ins[0]], "sum", "int64"), "sub-team allreduce")
    team.barrier()


def expect(error: type, call) -> BaseException:
    try:
        call()
    except error as e:
        return e
    raise AssertionError(f"expected {error.__name__}")


def scenario_errors(team: Team, seed: int) -> None:
    n, me = team.size, team.rank
    a = make_input("float32", 16, seed, 1, me)
    # Another size on one rank: Mismatch on every rank.
    expect(weft.Mismatch, lambda: team.allreduce(a[:15] if me == 1 else a, np.zeros(15 if me == 1 else 16, np.float32)))
    expect(weft.Mismatch, lambda: team.allgather(a[:me + 1], np.zeros((me + 1) * n, np.float32)))
    # Arrays of no weft dtype: TypeError on every rank; on one rank, TypeError there and Mismatch
    # elsewhere. An unknown dtype or op name: InvalidArgument.
    expect(TypeError, lambda: team.allreduce(a.astype(np.float64)))
    expect(TypeError if me == 2 else weft.Mismatch,
           lambda: team.allreduce(a.astype(np.int16) if me == 2 else a.copy()))
    e = expect(weft.InvalidArgument, lambda: team.broadcast(a, dtype="f8"))
    assert "f8" in str(e)
    expect(weft.InvalidArgument, lambda: team.allreduce(a.copy(), op="avg"))
    expect(weft.InvalidArgument, lambda: team.broadcast(a, root=n))
    # Sizes that do not fit, or no buffer at all, on one rank.
    expect(weft.InvalidArgument if me == 0 else weft.Mismatch,
           lambda: team.allgather(a, np.zeros(16 * n - (me == 0), np.float32)))
    expect(TypeError if me == 1 else weft.Mismatch, lambda: team.broadcast(object() if me == 1 else a.copy()))
    expect(weft.InvalidArgument, lambda: team.allreduce(a, np.zeros(16, np.int32)))  # float32 into int32
    # Read-only recv.
    ro = a.copy()
    ro.flags.writeable = False
    expect(weft.InvalidArgument, lambda: team.broadcast(ro))
    expect(weft.Mismatch, lambda: team.malloc(128 if me == 0 else 256))
    expect(weft.PoolFull, lambda: team.malloc(team.heap_bytes * 2))
    # The team goes on.
    out = np.zeros(16, np.float32)
    team.allreduce(np.ones(16, np.float32), out)
    assert (out == n).all()
    team.barrier()


def scenario_dead(team: Team, seed: int, victim: bool = False) -> None:
    out = np.zeros(4, np.float32)
    team.allreduce(np.ones(4, np.float32), out)
    assert (out == team.size).all()
    team.barrier()
    if victim:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    expect(weft.PeerDown, lambda: team.allreduce(np.ones(4, np.float32), out, timeout=120))
    expect(weft.PeerDown, lambda: team.barrier())


SCENARIOS = {"collectives": scenario_collectives, "one_sided": scenario_one_sided, "errors": scenario_errors,
             "dead": scenario_dead}
VICTIM = 1  # the peer index that kills itself in "dead"


def main() -> int:
    pool_name, scenario, seed, ranks, index = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    pool = weft.Pool(pool_name=pool_name, rank_size=RANK_SIZE, mode="join").join()
    print(f"rank {pool.rank}", flush=True)
    pool.wait_for_peers(ranks, timeout=60)
    team = Team(pool, **TEAM_OPTIONS)
    if scenario == "dead":
        scenario_dead(team, seed, victim=index == VICTIM)
    else:
        SCENARIOS[scenario](team, seed)
    print("symm peer ok", flush=True)
    del team
    pool.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
