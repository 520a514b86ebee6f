"""weft: a memory fabric. This is the native Python API of the big-memory pool (BM) and of the
transfer engine (:class:`TransferEngine`, weft/trans.py; Mooncake's API is :mod:`weft.mooncake`).
The KV-cache store is :mod:`weft.store` (Mooncake's store API: :mod:`weft.mooncake_store`);
symmetric memory and collectives over a pool's peers are :mod:`weft.symm`.

    import weft
    with weft.Pool(pool_name="kv", rank_size="1GiB") as pool:   # host or join the pool
        gva = pool.alloc(1 << 20, placement="rank", rank=1)       # global malloc on rank 1
        buf = bytearray(os.urandom(1 << 20))
        pool.copy(gva, buf)                                       # LH -> GH
        back = bytearray(len(buf))
        pool.copy(back, gva)                                      # GH -> LH
        pool.free(gva)

Memory is given as ints (local addresses and GVAs) or as objects that expose their memory:
bytes/bytearray/memoryview/array.array and anything with the buffer protocol, numpy arrays,
torch tensors (``data_ptr()``, without importing torch), objects with
``__cuda_array_interface__`` or ``__array_interface__``, and DLPack tensors. They must be
contiguous; a destination must be writable. An int inside the pool's window is a GVA (the pool
checks it); any other int is a local pointer, which the Pool's copies use only
when the whole range is mapped in this process (else :class:`InvalidAddress`: pass the buffer
itself). Errors raise :class:`weft.Error` subclasses, one per
stable code (:class:`PoolFull`, :class:`PeerDown`, ...). Every call that can block releases the
GIL. See docs/api.md.

GPU memory: the package is built with CUDA where nvcc was found (sm_80, sm_90, sm_100 and PTX) and
imports anywhere. :func:`cuda_available` is True when a GPU is usable here; :func:`cuda_status`
says why or why not: "available: 2 CUDA GPUs", "not built: ...", "no driver: ...", "no GPU: ...".
Without one, a Pool with ``device_size`` > 0 raises :class:`NotSupported` with that reason.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from . import _ucx, _weft
from ._weft import cuda_available, cuda_status

__all__ = [
    "Pool", "Copy", "TransferEngine", "MetadataServer", "BufferInfo", "BatchStatus", "Notification", "Error", "error_for_code", "codes", "DIRECTIONS",
    "InvalidArgument", "OutOfRange", "InvalidAddress", "DoubleFree", "PoolFull", "PeerDown",
    "Timeout", "Mismatch", "Protocol", "Io", "Unavailable", "NotSupported", "PermissionDenied",
    "Unauthenticated", "NotFound", "AlreadyExists", "Cancelled", "NotRegistered", "Cuda",
    "Internal", "Busy", "cuda_available", "cuda_status",
]

__version__ = "0.1.0"

#: Stable error codes by name ("POOL_FULL": 5); the C API returns them negated.
codes: dict = dict(_weft.codes)

#: Copy directions (L = local pointer, G = GVA; H = host, D = device), in C API order.
DIRECTIONS: Tuple[str, ...] = tuple(_weft.direction_name(i) for i in range(_weft.direction_count))

# Anything that names memory: an address / GVA, or an object exposing its memory.
Memory = Any


class Error(Exception):
    """Base of every weft error. ``code`` is the stable number, ``name`` its name ("POOL_FULL")."""

    code: int = codes["INTERNAL"]
    name: str = "INTERNAL"

    def __init__(self, message: str = "", code: Optional[int] = None) -> None:
        super().__init__(message)
        if code is not None and code != type(self).code:
            self.code = code
            self.name = _weft.code_name(code)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def _error_class(code_name: str, doc: str, *bases: type) -> type:
    class_name = "".join(part.capitalize() for part in code_name.split("_"))
    cls = type(class_name, (Error,) + bases, {"code": codes[code_name], "name": code_name, "__doc__": doc,
                                              "__module__": __name__})
    return cls


InvalidArgument = _error_class("INVALID_ARGUMENT", "A bad argument: a null or zero value, a bad option.", ValueError)
OutOfRange = _error_class("OUT_OF_RANGE", "An address or length runs past a segment or the pool window.")
InvalidAddress = _error_class("INVALID_ADDRESS", "Not a GVA of this pool, or not the start of an allocation.")
DoubleFree = _error_class("DOUBLE_FREE", "Freeing memory that is not allocated.")
PoolFull = _error_class("POOL_FULL", "No free block large enough.", MemoryError)
PeerDown = _error_class("PEER_DOWN", "The peer that owns the memory has left or died.")
Timeout = _error_class("TIMEOUT", "The deadline passed before the operation completed.", TimeoutError)
Mismatch = _error_class("MISMATCH", "Joining a pool with another name or size.")
Protocol = _error_class("PROTOCOL", "A malformed, truncated or oversized message.")
Io = _error_class("IO", "A system call failed (errno in the message).")
Unavailable = _error_class("UNAVAILABLE", "The coordinator or a service cannot be reached.")
NotSupported = _error_class("NOT_SUPPORTED", "The operation has no path on this machine.")
PermissionDenied = _error_class("PERMISSION_DENIED", "Wrong access key or permission.")
Unauthenticated = _error_class("UNAUTHENTICATED", "Missing or wrong cluster secret.")
NotFound = _error_class("NOT_FOUND", "A name or handle that is not known.")
AlreadyExists = _error_class("ALREADY_EXISTS", "A name or registration that is already taken.")
Cancelled = _error_class("CANCELLED", "The pool was left while the operation was pending, or before it.")
NotRegistered = _error_class("NOT_REGISTERED", "Local memory that is not registered.")
Cuda = _error_class("CUDA", "A CUDA call failed (the CUDA error in the message).")
Internal = _error_class("INTERNAL", "A bug in weft: please report it.")
Busy = _error_class("BUSY", "The object is still in use (a batch that is still running).")

_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, OutOfRange, InvalidAddress, DoubleFree, PoolFull, PeerDown, Timeout, Mismatch,
    Protocol, Io, Unavailable, NotSupported, PermissionDenied, Unauthenticated, NotFound,
    AlreadyExists, Cancelled, NotRegistered, Cuda, Internal, Busy)}
assert set(_BY_CODE) == set(codes.values()) - {0}, "an error code has no exception class"
_weft._register_errors(Error, _BY_CODE)


def error_for_code(code: int) -> type:
    """The exception class of a code (positive, or negative as the C API returns it)."""
    return _BY_CODE.get(abs(code), Error)


_MODES = {"auto": 0, "host": 1, "join": 2}
_PLACEMENTS = {"local": 0, "rank": 1, "spread": 2}


def _device_medium(medium: str) -> bool:
    if medium not in ("host", "device"):
        raise InvalidArgument(f"medium {medium!r} is not 'host' or 'device'")
    return medium == "device"


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Copy:
    """An asynchronous copy (from :meth:`Pool.copy_async`). Keeps both ends' memory alive until
    it is dropped; dropping it while the copy runs waits for the copy."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the copy is done; raises its error, or :class:`Timeout` when it is not done
        within ``timeout`` seconds (None: forever). After a timeout the copy goes on."""
        self._native.wait(timeout)

    def poll(self) -> bool:
        """False while running, True when done; raises the copy's error if it failed."""
        return self._native.poll()

    def done(self) -> bool:
        """True once the copy has finished, successfully or not (never raises)."""
        try:
            return self._native.poll()
        except Error:
            return True


class Pool:
    """One peer of a pool: host memory pooled with the other peers behind one GVA space.

    ``Pool(pool_name=..., rank_size=..., mode="auto", **config)`` reads the configuration
    (defaults < ``WEFT_*`` environment < these arguments; keys in docs/config.md; sizes as ints or
    text such as "64MiB"). It joins on :meth:`join` or on entering a ``with`` block, and leaves on
    :meth:`leave`, on leaving the block, or when it is garbage collected. ``mode``: "auto" joins
    the pool's coordinator or hosts one if none answers; "host" hosts it (:class:`AlreadyExists`
    if one answers); "join" only joins (:class:`Unavailable` if none answers).
    """

    def __init__(self, pool_name: Optional[str] = None, rank_size: Union[int, str, None] = None,
                 mode: str = "auto", **config: Any) -> None:
        if mode not in _MODES:
            raise InvalidArgument(f"mode {mode!r} is not one of {sorted(_MODES)}")
        overrides = {key: _config_text(value) for key, value in config.items()}
        if pool_name is not None:
            overrides["pool_name"] = _config_text(pool_name)
        if rank_size is not None:
            overrides["rank_size"] = _config_text(rank_size)
        self._mode = mode
        if _ucx.wants_ucx(transport=overrides.get("transport", os.environ.get("WEFT_TRANSPORT", ""))):
            _ucx.prepare()
        self._native = _weft.Pool(overrides)

    # -- membership ---------------------------------------------------------------------------

    def join(self, mode: Optional[str] = None) -> "Pool":
        """Joins (or hosts) the pool; returns self."""
        mode = self._mode if mode is None else mode
        if mode not in _MODES:
            raise InvalidArgument(f"mode {mode!r} is not one of {sorted(_MODES)}")
        self._native.join(_MODES[mode])
        return self

    def leave(self) -> None:
        """Leaves the pool (idempotent). Later calls raise :class:`Cancelled`."""
        self._native.leave()

    def __enter__(self) -> "Pool":
        if not self._native.joined:
            self.join()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.leave()

    @property
    def joined(self) -> bool:
        return self._native.joined

    @property
    def rank(self) -> int:
        """This peer's rank in the pool."""
        return self._native.rank

    @property
    def local_size(self) -> int:
        """Bytes this peer contributes (rank_size)."""
        return self._native.local_size

    @property
    def pool_name(self) -> str:
        return self._native.pool_name

    @property
    def live_ranks(self) -> List[int]:
        """Ranks of the peers now in the pool."""
        return self._native.live_ranks

    def wait_for_peers(self, count: int, timeout: Optional[float] = None) -> List[int]:
        """Waits until at least ``count`` peers (this one included) are in the pool; returns their
        ranks. :class:`Timeout` after ``timeout`` seconds (None: forever)."""
        return self._native.wait_for_peers(count, timeout)

    def barrier(self, timeout: Optional[float] = None) -> None:
        """Every live peer enters; :class:`PeerDown` if one dies first, :class:`Timeout` past
        ``timeout`` seconds (None: forever)."""
        self._native.barrier(timeout)

    # -- addresses ----------------------------------------------------------------------------

    def slice_address(self, rank: int, medium: str = "host") -> int:
        """First GVA of a rank's slice: ``medium`` "host" (DRAM) or "device" (GPU memory)."""
        return self._native.slice_address(rank, _device_medium(medium))

    @property
    def device_size(self) -> int:
        """Bytes of GPU memory this peer contributes (config ``device_size``; 0: none)."""
        return self._native.device_size()

    def rank_of(self, gva: int) -> int:
        """The rank owning a GVA (:class:`InvalidAddress` outside the pool)."""
        return self._native.rank_of(gva)

    # -- global malloc ------------------------------------------------------------------------

    def alloc(self, size: int, placement: str = "local", rank: int = 0, medium: str = "host") -> int:
        """Allocates ``size`` bytes of pooled memory and returns its GVA. ``placement``: "local"
        (this peer), "rank" (the peer ``rank``) or "spread" (the slice with the most free bytes);
        ``medium``: "host" (DRAM) or "device" (the peers' device slices).
        :class:`PoolFull` when nothing fits."""
        if placement not in _PLACEMENTS:
            raise InvalidArgument(f"placement {placement!r} is not one of {sorted(_PLACEMENTS)}")
        return self._native.alloc(size, _PLACEMENTS[placement], rank, _device_medium(medium))

    def free(self, gva: int) -> None:
        """Frees an allocation: :class:`InvalidAddress` if ``gva`` does not start one,
        :class:`DoubleFree` if it is already free."""
        self._native.free(gva)

    # -- copies -------------------------------------------------------------------------------

    def copy(self, dst: Memory, src: Memory, length: Optional[int] = None, direction: str = "auto") -> None:
        """Copies ``length`` bytes from ``src`` to ``dst`` (ints or buffers, see the module doc).
        Without ``length``, the size of the buffer end(s). ``direction``: "auto" or one of
        :data:`DIRECTIONS` ("LH2GH", "GH2LH", ...)."""
        self._native.copy(dst, src, length, direction)

    def copy_batch(self, requests: Iterable[Sequence[Any]], direction: str = "auto",
                   check: bool = True) -> List[Optional[Error]]:
        """Copies many ``(dst, src)`` or ``(dst, src, length)`` together; returns one result per
        request (None or the :class:`Error`). With ``check`` (the default) a failure raises the
        first request's error, whose ``results`` attribute holds the whole list."""
        return self._native.copy_batch(requests, direction, check)

    def copy_pages(self, dst_base: Memory, src_base: Memory, page_bytes: int, dst_pages: Iterable[int],
                   src_pages: Iterable[int], direction: str = "auto", stream: Any = None) -> None:
        """A KV page batch in one GPU kernel launch: page ``i`` goes from ``src_base +
        src_pages[i] * page_bytes`` to ``dst_base + dst_pages[i] * page_bytes``. Bases are GVAs,
        buffers or device tensors; both ends on the GPU (or host memory it can address).
        ``stream``: a ``cudaStream_t`` as an int, or an object with ``cuda_stream`` (e.g.
        ``torch.cuda.current_stream()``), to enqueue on and return at once; None waits.
        :class:`NotSupported` without a GPU (use :meth:`copy_batch`), :class:`OutOfRange` for an
        index past an end's memory."""
        from .trans import stream_handle
        handle = None if stream is None else stream_handle(stream)
        self._native.copy_pages(dst_base, src_base, page_bytes, dst_pages, src_pages, direction, handle)

    def copy_pages_device_indexed(self, dst_base: Memory, src_base: Memory, page_bytes: int, pairs: Any,
                                  max_dst_index: int, max_src_index: int, direction: str = "auto") -> None:
        """:meth:`copy_pages` with the index pairs already on the GPU: ``pairs`` is a device
        tensor (``__cuda_array_interface__`` or DLPack) of uint32 holding (dst, src) page pairs
        one after the other, e.g. ``torch.stack([dst, src], 1).to(torch.int32).cuda()``. The
        kernel checks every index against ``max_dst_index`` / ``max_src_index`` (the last page
        each end holds): a pair past them is not copied and the call raises :class:`OutOfRange`
        (the other pages are copied). The pairs must be 8-byte aligned.
        Returns once the pages are copied."""
        self._native.copy_pages_device_indexed(dst_base, src_base, page_bytes, pairs, max_dst_index, max_src_index,
                                               direction)

    def copy_async(self, dst: Memory, src: Memory, length: Optional[int] = None,
                   direction: str = "auto") -> Copy:
        """Starts a copy and returns a :class:`Copy` at once; errors found at submission are
        raised by its wait()/poll()."""
        return Copy(self._native.copy_async(dst, src, length, direction))

    def route(self, dst: Memory, src: Memory, length: Optional[int] = None, direction: str = "auto") -> str:
        """The path a copy would take and why, e.g. "LH -> GH (same node) via shm: ...". """
        return self._native.route(dst, src, length, direction)

    def write(self, gva: int, data: Memory) -> None:
        """Copies ``data`` (a buffer) to ``gva``."""
        self._native.copy(gva, data, None, "auto")

    def read(self, gva: int, length: int) -> bytearray:
        """Returns ``length`` bytes read from ``gva``."""
        out = bytearray(length)
        self._native.copy(out, gva, length, "auto")
        return out

    def __repr__(self) -> str:
        state = f"rank {self.rank}" if self.joined else "not joined"
        return f"<weft.Pool {self.pool_name!r} {state}>"


# The transfer engine (Trans): after the error classes, which its native calls raise.
from .trans import BatchStatus, BufferInfo, MetadataServer, Notification, TransferEngine  # noqa: E402
