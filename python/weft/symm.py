"""weft.symm: symmetric memory and the eight collectives on a pool (include/weft/symm.h).

A :class:`Team` is the peers of a pool that made a symmetric heap together: every peer calls
``Team(pool, ...)`` at once, and :meth:`Team.malloc` (also called by every rank) returns the same
heap offset everywhere, so a block names the same object on every rank.

    import numpy as np, weft
    from weft.symm import Team
    with weft.Pool(pool_name="train", rank_size="256MiB") as pool:
        pool.wait_for_peers(4)
        team = Team(pool, heap_bytes=64 << 20)                 # on every peer
        grad = np.random.rand(1 << 20).astype(np.float32)
        team.allreduce(grad)                                   # in place, dtype from the array
        block = team.malloc(4096)                              # a SymmBuffer: same offset everywhere
        mine = np.frombuffer(block, dtype=np.float32)          # this rank's heap, in place
        team.put((team.rank + 1) % team.size, block, mine)     # into the next rank's heap

Collectives take objects with the buffer protocol (numpy arrays, bytearray, memoryview,
SymmBuffer), C-contiguous; ``recv`` must be writable. The dtype comes from the array: float32,
float16, int32, int64 or uint8; pass ``dtype=`` for bfloat16 ("bf16", its bits in a uint16
array) or to reinterpret other bytes. Sizes are in bytes of the buffers: ``count`` is derived
(per rank: send for allreduce, reduce, allgather, gather; recv for reduce_scatter, scatter;
send / size for alltoall). Ops: "sum", "max", "min", "prod".

**GPU buffers.** ``Team(pool, device_heap_bytes=N)`` (the pool joined with ``device_size``, every
rank on one node with a GPU) adds a device heap: :meth:`Team.device_malloc` returns a
:class:`DeviceSymmBuffer` at the same offset on every rank, with ``__cuda_array_interface__``
(``torch.as_tensor(block, device="cuda").view(torch.bfloat16)`` views it in place). The collectives
then take torch CUDA tensors (or ``__cuda_array_interface__`` / DLPack objects; the dtype from the
tensor, or ``dtype=``) and run as one kernel that reads the peers' device heaps: what the others
read (``send``) must lie in the device heap at the same offset on every rank; a ``recv`` only
this rank writes may be any memory of that GPU. They are ordered on the stream given to
:meth:`Team.set_stream` (default: the legacy default stream) and return once done.

    team = Team(pool, device_heap_bytes=256 << 20)
    grad = torch.as_tensor(team.device_malloc(n * 2), device="cuda").view(torch.bfloat16)
    team.allreduce(grad)                                   # in place, on the GPU

Every rank calls the collectives (and malloc, free, split, barrier) in the same order. A rank
that passes another size, dtype, op or root raises :class:`weft.Mismatch`, and so do the others;
a rank whose own arguments are bad (an array of no weft dtype: ``TypeError``; a size that does
not fit: :class:`weft.InvalidArgument`) raises that, and the others raise Mismatch at once. A rank
that dies makes the others raise :class:`weft.PeerDown`; after that, or after a
:class:`weft.Timeout`, the team is unusable: make a new one. ``timeout`` (seconds) bounds one
call; None uses the team's ``timeout``. Every call that can block releases the GIL. A team is
used by one thread at a time. docs/api.md, "Symmetric memory".
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Union

from . import Error, InvalidArgument, Pool, _weft  # noqa: F401  (Error: the base of what is raised)

__all__ = ["Team", "SymmBuffer", "DeviceSymmBuffer", "Heap", "DTYPES", "OPS", "CMPS"]

#: A block of the symmetric heap (:meth:`Team.malloc`): ``offset``, ``nbytes``, ``freed``, and
#: the buffer protocol over this rank's bytes (``memoryview(block)``, ``numpy.frombuffer(block,
#: dtype)``). It keeps its team alive.
SymmBuffer = _weft.SymmBuffer

#: A block of the device heap (:meth:`Team.device_malloc`): ``offset``, ``nbytes``, ``ptr`` (this
#: rank's device address), ``freed``, and ``__cuda_array_interface__`` over its bytes. It keeps its
#: team alive.
DeviceSymmBuffer = _weft.DeviceSymmBuffer

#: Where in the heap: a SymmBuffer, or a heap offset (int).
Heap = Union[SymmBuffer, int]

DTYPES = ("f32", "bf16", "f16", "i32", "i64", "u8")
OPS = ("sum", "max", "min", "prod")
_CMPS = {"eq": 0, "ne": 1, "gt": 2, "ge": 3, "lt": 4, "le": 5,
         "==": 0, "!=": 1, ">": 2, ">=": 3, "<": 4, "<=": 5}
CMPS = tuple(_CMPS)


def _dtype_name(dtype: Any) -> Optional[str]:
    """A dtype argument as the native module takes it: a name ("bf16", "float32"), or the name of
    a numpy dtype or scalar type. Anything else is passed on as text, which the native call
    refuses (taking part in the collective, so the other ranks are not left waiting)."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    name = getattr(dtype, "name", None)  # a numpy.dtype
    if isinstance(name, str):
        return name
    try:
        import numpy
        return numpy.dtype(dtype).name
    except Exception:  # no numpy, or not a dtype: let the native call refuse it by name
        return repr(dtype)


class Team:
    """The ranks of a pool with a symmetric heap, one-sided operations and collectives.

    ``Team(pool, heap_bytes=16 MiB, slot_bytes=256 KiB, one_shot_max_bytes=0, timeout=60.0,
    user_context=b"")`` is collective over every live peer of ``pool`` (a joined
    :class:`weft.Pool`): each must pass the same ``heap_bytes`` and ``slot_bytes``
    (:class:`weft.Mismatch` on every peer otherwise). Team ranks follow pool ranks in order.
    ``slot_bytes``: what one rank sends another per step of a collective (a multiple of 64);
    ``one_shot_max_bytes``: larger allreduces reduce-scatter then allgather (0: 64 KiB);
    ``timeout``: the default deadline of every call, in seconds; ``user_context``: bytes every
    rank receives (:attr:`user_contexts`); ``device_heap_bytes``: the device heap each rank
    contributes from its pool device slice (0: none; the same on every rank); ``device_async``:
    device collectives return once their kernel is launched on the team's stream, as NCCL's do
    (:meth:`device_synchronize` reports how they ended). The team (and the pool under it) lives
    as long as the Team or any of its SymmBuffers is referenced.
    """

    def __init__(self, pool: Pool, heap_bytes: int = 16 << 20, slot_bytes: int = 256 << 10,
                 one_shot_max_bytes: int = 0, timeout: float = 60.0, user_context: bytes = b"",
                 device_heap_bytes: int = 0, device_async: bool = False) -> None:
        native_pool = getattr(pool, "_native", pool)
        self._native = _weft.Team.create(native_pool, heap_bytes, slot_bytes, one_shot_max_bytes, float(timeout),
                                         bytes(user_context), device_heap_bytes, bool(device_async))

    @classmethod
    def _wrap(cls, native: Any) -> "Team":
        team = cls.__new__(cls)
        team._native = native
        return team

    # -- the team -------------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self._native.rank

    @property
    def size(self) -> int:
        return self._native.size

    @property
    def heap_bytes(self) -> int:
        return self._native.heap_bytes

    @property
    def device_heap_bytes(self) -> int:
        return self._native.device_heap_bytes

    def stats(self) -> dict:
        """How many collectives ran on this rank: ``collectives``, of which ``heap_path`` (host heaps
        read in place) and ``device_path`` (one kernel on the device heaps)."""
        return self._native.stats()

    @property
    def user_contexts(self) -> List[bytes]:
        """Every rank's ``user_context``, by team rank."""
        return self._native.user_contexts

    def pool_rank(self, team_rank: int) -> int:
        """The pool rank of a team rank."""
        return self._native.pool_rank(team_rank)

    def plan(self, collective: str, nbytes: int) -> str:
        """What a collective ("allreduce", ...) of ``nbytes`` per rank would run, and each path."""
        return self._native.plan(collective, nbytes)

    def split(self, ranks: Sequence[int], timeout: Optional[float] = None) -> Optional["Team"]:
        """A sub-team of the team ranks listed (each once; their order gives the new ranks).
        Collective: every rank passes the same list; members get the sub-team, the others None.
        It shares this team's heap (malloc and free on this team)."""
        sub = self._native.split(list(ranks), timeout)
        return None if sub is None else Team._wrap(sub)

    # -- the heap -------------------------------------------------------------------------------

    def malloc(self, nbytes: int, timeout: Optional[float] = None) -> SymmBuffer:
        """Collective: every rank asks for the same size (:class:`weft.Mismatch` otherwise) and
        gets a block at the same offset. :class:`weft.PoolFull` when the heap has no such block;
        :class:`weft.NotSupported` on a sub-team."""
        return self._native.malloc(nbytes, timeout)

    def free(self, block: Heap, timeout: Optional[float] = None) -> None:
        """Collective. Views of the block stay valid memory but may be reused by a later malloc."""
        self._native.free(block, timeout)

    def device_malloc(self, nbytes: int, timeout: Optional[float] = None) -> DeviceSymmBuffer:
        """Collective, like :meth:`malloc`, on the device heap. :class:`weft.NotSupported` on a team
        made without ``device_heap_bytes``."""
        return self._native.device_malloc(nbytes, timeout)

    def device_free(self, block: DeviceSymmBuffer, timeout: Optional[float] = None) -> None:
        """Collective, like :meth:`free`."""
        self._native.device_free(block, timeout)

    def set_stream(self, stream: Any) -> None:
        """The CUDA stream the device collectives are ordered on: a ``cudaStream_t`` as an int (0:
        the legacy default stream), or an object with ``cuda_stream`` (``torch.cuda.current_stream()``)."""
        value = getattr(stream, "cuda_stream", stream)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TypeError(f"stream must be a cudaStream_t as an int or an object with cuda_stream, not {stream!r}")
        self._native.set_stream(value)

    # -- one-sided ------------------------------------------------------------------------------

    def put(self, rank: int, dst: Heap, src: Any, offset: int = 0) -> None:
        """Writes the bytes of ``src`` (a buffer) into ``rank``'s heap at ``dst`` + ``offset``
        bytes; done in both memories when it returns. :class:`weft.OutOfRange` past ``dst``."""
        self._native.put(rank, dst, src, offset)

    def get(self, dst: Any, rank: int, src: Heap, offset: int = 0) -> None:
        """Reads ``len(dst)`` bytes (a writable buffer) from ``rank``'s heap at ``src`` + ``offset``."""
        self._native.get(dst, rank, src, offset)

    def put_signal(self, rank: int, dst: Heap, src: Any, signal: Heap, value: int, op: str = "set",
                   offset: int = 0) -> None:
        """A put, then ``rank``'s 8-byte signal word at ``signal`` set to (op "set") or increased
        by (op "add", atomic) ``value`` once the data is visible there."""
        self._native.put_signal(rank, dst, src, signal, value, op, offset)

    def wait_until(self, signal: Heap, cmp: str, value: int, timeout: Optional[float] = None) -> None:
        """Waits until this rank's signal word compares true with ``value`` (``word cmp value``;
        cmp: "eq", "ne", "gt", "ge", "lt", "le" or "==", ">=", ...). :class:`weft.Timeout` past it."""
        if cmp not in _CMPS:
            raise InvalidArgument(f"cmp {cmp!r} is not one of {CMPS}")
        self._native.wait_until(signal, _CMPS[cmp], value, timeout)

    def signal_value(self, signal: Heap) -> int:
        """This rank's signal word at ``signal`` (8-byte aligned)."""
        return self._native.signal_value(signal)

    def fence(self) -> None:
        """Orders puts (they are complete when they return; this never waits for data)."""
        self._native.fence()

    def quiet(self) -> None:
        self._native.quiet()

    def barrier(self, timeout: Optional[float] = None) -> None:
        """Every rank of the team enters."""
        self._native.barrier(timeout)

    def device_synchronize(self, timeout: Optional[float] = None) -> None:
        """Waits for the device collectives still in flight (``device_async``) and raises the first
        failure among those that ended since the last call (:class:`weft.Mismatch`,
        :class:`weft.Timeout`, :class:`weft.PeerDown`); a call that raised its own error is not
        counted again. :class:`weft.NotSupported` without a device heap."""
        self._native.device_synchronize(timeout)

    # -- the eight collectives ------------------------------------------------------------------

    def broadcast(self, buf: Any, root: int = 0, dtype: Any = None, timeout: Optional[float] = None) -> None:
        """The root's ``buf`` into every rank's ``buf``."""
        self._native.broadcast(buf, root, _dtype_name(dtype), timeout)

    def scatter(self, send: Any, recv: Any, root: int = 0, dtype: Any = None, timeout: Optional[float] = None) -> None:
        """Block r of the root's ``send`` (size × len(recv)) into rank r's ``recv``; ``send`` may
        be None elsewhere."""
        self._native.scatter(send, recv, root, _dtype_name(dtype), timeout)

    def gather(self, send: Any, recv: Any = None, root: int = 0, dtype: Any = None,
               timeout: Optional[float] = None) -> None:
        """Every rank's ``send`` into block r of the root's ``recv`` (size × len(send)); ``recv``
        may be None elsewhere."""
        self._native.gather(send, recv, root, _dtype_name(dtype), timeout)

    def allgather(self, send: Any, recv: Any, dtype: Any = None, timeout: Optional[float] = None) -> None:
        """Every rank's ``send`` into block r of every ``recv`` (size × len(send))."""
        self._native.allgather(send, recv, _dtype_name(dtype), timeout)

    def reduce(self, send: Any, recv: Any = None, root: int = 0, op: str = "sum", dtype: Any = None,
               timeout: Optional[float] = None) -> None:
        """The reduction of every rank's ``send`` into the root's ``recv`` (None elsewhere)."""
        self._native.reduce(send, recv, root, op, _dtype_name(dtype), timeout)

    def reduce_scatter(self, send: Any, recv: Any, op: str = "sum", dtype: Any = None,
                       timeout: Optional[float] = None) -> None:
        """Block r of the reduction of every ``send`` (size × len(recv)) into rank r's ``recv``."""
        self._native.reduce_scatter(send, recv, op, _dtype_name(dtype), timeout)

    def allreduce(self, send: Any, recv: Any = None, op: str = "sum", dtype: Any = None,
                  timeout: Optional[float] = None) -> None:
        """The reduction of every rank's ``send`` into every ``recv`` (None: in place, into send)."""
        self._native.allreduce(send, send if recv is None else recv, op, _dtype_name(dtype), timeout)

    def alltoall(self, send: Any, recv: Any = None, dtype: Any = None, timeout: Optional[float] = None) -> None:
        """Block b of rank r's ``send`` into block r of rank b's ``recv`` (None: in place)."""
        self._native.alltoall(send, send if recv is None else recv, _dtype_name(dtype), timeout)

    def __repr__(self) -> str:
        return f"<weft.symm.Team rank {self.rank} of {self.size}, heap {self.heap_bytes} bytes>"
