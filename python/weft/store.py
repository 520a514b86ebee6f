"""weft.store: the KV-cache store, weft's native Python API (include/weft/store.h).

Objects (a key and its bytes) live in the pool's memory: written once by one peer, read by any.
Every store is a peer of a pool and contributes its ``rank_size`` of memory; the pool's
coordinator hosts the store's master (the first peer, ``weft meta`` or ``weft store-master``).

    from weft.store import Store
    with Store(pool_name="kv", rank_size="1GiB") as store:     # host or join the pool
        store.put("layer0/block7", payload)                    # AlreadyExists if taken
        value = store.get("layer0/block7")                     # bytes
        buf = numpy.empty(1 << 20, numpy.uint8)
        store.register_buffer(buf)                             # once, for zero-copy calls
        n = store.get_into("layer0/block7", buf)               # bytes copied into buf

Keys are str (stored as UTF-8) or bytes, 1..4096 bytes. Values and buffers are objects that
expose their memory (bytes, bytearray, memoryview, numpy arrays, torch tensors, ...) or, for the
zero-copy calls, ints (local addresses) with a size. Errors raise :class:`weft.Error` subclasses
(:class:`weft.NotFound`, :class:`weft.AlreadyExists`, :class:`weft.PoolFull`, ...). Batch calls
never raise for one key: they return one entry per key, the value or the :class:`weft.Error`.
Every call releases the GIL while it works. docs/api.md, "The KV store".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import Error, InvalidArgument, _config_text, _MODES, _ucx, _weft

__all__ = ["Store", "StoreStats", "ReplicaDesc", "ObjectDesc", "Key", "Memory"]

Key = Union[str, bytes]
Memory = Any  # an object exposing its memory, or an int address (zero-copy calls)


@dataclass(frozen=True)
class StoreStats:
    """What the store's master holds now (:meth:`Store.stats`)."""

    objects: int        # complete objects in memory
    pending_puts: int   # started, not yet ended
    bytes: int          # bytes of the objects in memory, each replica counted
    capacity: int       # host bytes of every slice of the pool
    used: int           # of which allocated (the store's and anyone else's)
    evicted: int        # objects evicted from memory since the master started
    parked_bytes: int   # memory of removed objects still leased to readers
    on_disk: int        # evicted objects whose writer keeps them in its SSD tier
    inline_puts: int = 0      # small puts the master wrote and ended itself (one round trip)
    inline_deferred: int = 0  # small puts it placed but left to their writer to copy and end


@dataclass(frozen=True)
class ReplicaDesc:
    """One copy of an object in memory: the whole value, contiguous, at pool address ``gva`` in
    the slice of peer ``rank``. ``path``: the transport a copy from this peer to there takes
    ("memcpy" for memory mapped here, "shm", "cma", "tcp", "ucx"; "" when there is none, e.g. the
    peer has gone)."""

    rank: int
    gva: int
    path: str


@dataclass(frozen=True)
class ObjectDesc:
    """Where an object is (:meth:`Store.describe`)."""

    size: int                          # bytes of the value
    replicas: Tuple[ReplicaDesc, ...]  # its copies in memory; empty when on its writer's disk only
    disk_rank: int                     # the writer keeping a copy in its SSD tier; -1: none


def _desc(native: Tuple[int, List[Tuple[int, int, str]], int]) -> ObjectDesc:
    size, replicas, disk_rank = native
    return ObjectDesc(size, tuple(ReplicaDesc(*r) for r in replicas), disk_rank)


def _place(replicas: int, soft_pin: bool, hard_pin: bool, preferred_rank: int) -> dict:
    return {"replicas": replicas, "soft_pin": soft_pin, "hard_pin": hard_pin, "preferred_rank": preferred_rank}


class Store:
    """One peer of a pool and its store.

    ``Store(pool_name=..., rank_size=..., mode="auto", **config)`` opens at once: the
    configuration is read as :class:`weft.Pool` reads it (defaults < ``WEFT_*`` environment <
    these arguments; keys in docs/config.md). ``mode``: "auto" joins the pool's coordinator or
    hosts it (and the master) if none answers; "host" hosts it (:class:`weft.AlreadyExists` if
    one answers); "join" only joins (:class:`weft.Unavailable` if none answers). It closes on
    :meth:`close`, on leaving a ``with`` block, or when garbage collected; closing leaves the
    pool, and objects whose only replicas were in this peer's memory go with it.

    Placement keywords of the put calls: ``replicas`` (copies on distinct peers, best effort,
    1..8), ``soft_pin`` (evicted after every unpinned object), ``hard_pin`` (never evicted),
    ``preferred_rank`` (the first replica's peer; -1: this peer first).
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
        if _ucx.wants_ucx(transport=overrides.get("transport", os.environ.get("WEFT_TRANSPORT", ""))):
            _ucx.prepare()
        self._native = _weft.Store(overrides, _MODES[mode])

    # -- life ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Leaves the pool (idempotent); later calls raise :class:`weft.Cancelled`."""
        self._native.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def rank(self) -> int:
        """This peer's rank in the pool."""
        return self._native.rank

    def health(self) -> None:
        """Returns while the master answers; :class:`weft.Unavailable` otherwise."""
        self._native.health()

    def stats(self) -> StoreStats:
        """What the master holds now: objects, bytes, the pool's capacity and use, evictions."""
        return StoreStats(**self._native.stats())

    # -- writes -------------------------------------------------------------------------------

    def put(self, key: Key, value: Memory, *, replicas: int = 1, soft_pin: bool = False, hard_pin: bool = False,
            preferred_rank: int = -1) -> None:
        """Writes ``value`` under ``key`` unless the key exists (:class:`weft.AlreadyExists`; the
        stored value stays). :class:`weft.InvalidArgument` for an empty or oversized key, an
        empty value or one larger than any slice; :class:`weft.PoolFull` when nothing fits even
        after eviction."""
        self._native.put(key, value, upsert=False, **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def upsert(self, key: Key, value: Memory, *, replicas: int = 1, soft_pin: bool = False, hard_pin: bool = False,
               preferred_rank: int = -1) -> None:
        """:meth:`put` that overwrites an existing value (readers holding a lease keep reading
        the old one)."""
        self._native.put(key, value, upsert=True, **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def put_parts(self, key: Key, parts: Sequence[Memory], *, upsert: bool = False, replicas: int = 1,
                  soft_pin: bool = False, hard_pin: bool = False, preferred_rank: int = -1) -> None:
        """One object made of ``parts`` laid end to end."""
        self._native.put_parts(key, list(parts), upsert=upsert, **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def put_batch(self, keys: Sequence[Key], values: Sequence[Memory], *, upsert: bool = False, replicas: int = 1,
                  soft_pin: bool = False, hard_pin: bool = False, preferred_rank: int = -1) -> List[Optional[Error]]:
        """Many puts, one master round trip: one entry per key, None or its :class:`weft.Error`."""
        return self._native.put_batch(list(keys), list(values), upsert=upsert,
                                      **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def put_from(self, key: Key, buffer: Memory, size: Optional[int] = None, *, upsert: bool = False,
                 replicas: int = 1, soft_pin: bool = False, hard_pin: bool = False,
                 preferred_rank: int = -1) -> None:
        """Zero-copy put of ``size`` bytes (default: the whole object) from a registered buffer:
        :class:`weft.NotRegistered` when no :meth:`register_buffer` covers it."""
        self._native.put_from(key, buffer, size, upsert=upsert, **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def batch_put_from(self, keys: Sequence[Key], buffers: Sequence[Memory], sizes: Optional[Sequence[int]] = None,
                       *, upsert: bool = False, replicas: int = 1, soft_pin: bool = False, hard_pin: bool = False,
                       preferred_rank: int = -1) -> List[Optional[Error]]:
        """:meth:`put_from` for many keys: one entry per key, None or its :class:`weft.Error`."""
        return self._native.batch_put_from(list(keys), list(buffers), None if sizes is None else list(sizes),
                                           upsert=upsert, **_place(replicas, soft_pin, hard_pin, preferred_rank))

    def put_from_parts(self, key: Key, buffers: Sequence[Memory], sizes: Optional[Sequence[int]] = None, *,
                       upsert: bool = False, replicas: int = 1, soft_pin: bool = False, hard_pin: bool = False,
                       preferred_rank: int = -1) -> None:
        """One object from several registered buffers laid end to end (ints with ``sizes``, or
        objects); :class:`weft.NotRegistered` for a buffer no :meth:`register_buffer` made here
        covers."""
        self._native.put_from_parts(key, list(buffers), None if sizes is None else list(sizes), upsert=upsert,
                                    **_place(replicas, soft_pin, hard_pin, preferred_rank))

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: Key) -> bytes:
        """A copy of the value; :class:`weft.NotFound` when missing (or its put has not ended)."""
        return self._native.get(key)

    def get_batch(self, keys: Sequence[Key]) -> List[Union[bytes, Error]]:
        """Copies of many values, one master round trip: one entry per key, its bytes or its
        :class:`weft.Error`."""
        return self._native.get_batch(list(keys))

    def get_into(self, key: Key, buffer: Memory, size: Optional[int] = None) -> int:
        """Copies the value into a registered buffer (one copy) and returns its size.
        :class:`weft.NotRegistered` for a buffer no registration covers;
        :class:`weft.InvalidArgument` when the buffer is smaller than the value (nothing is
        written); :class:`weft.Timeout` when the copy outlived the read lease (read again)."""
        return self._native.get_into(key, buffer, size)

    def batch_get_into(self, keys: Sequence[Key], buffers: Sequence[Memory],
                       sizes: Optional[Sequence[int]] = None) -> List[Union[int, Error]]:
        """:meth:`get_into` for many keys: one entry per key, its size or its :class:`weft.Error`."""
        return self._native.batch_get_into(list(keys), list(buffers), None if sizes is None else list(sizes))

    def get_into_parts(self, key: Key, buffers: Sequence[Memory], sizes: Optional[Sequence[int]] = None) -> int:
        """The value spread over several registered buffers in order; returns its size.
        :class:`weft.InvalidArgument` (nothing written) when they hold less than the value. The
        value is staged once on the way (the store reads into one contiguous destination)."""
        return self._native.get_into_parts(key, list(buffers), None if sizes is None else list(sizes))

    def get_ranges(self, keys: Sequence[Key],
                   ranges: Sequence[Tuple[int, int, int, Memory]]) -> List[Union[int, Error]]:
        """Parts of values into registered buffers, one master round trip for the distinct keys.
        Each range is ``(key_index, offset, size, dst)``: ``size`` bytes from ``offset`` in the
        value of ``keys[key_index]`` to ``dst`` (an int address or a writable object inside a
        registered buffer). One entry per range, its size or its :class:`weft.Error`:
        :class:`weft.NotFound`, :class:`weft.NotRegistered`, :class:`weft.OutOfRange` (past the
        value's end), :class:`weft.InvalidArgument` (bad key or key index),
        :class:`weft.NotSupported` (the object is on its writer's disk only: :meth:`get` it)."""
        ranges = list(ranges)
        return self._native.get_ranges(list(keys), [r[0] for r in ranges], [r[1] for r in ranges],
                                       [r[2] for r in ranges], [r[3] for r in ranges])

    def describe(self, key: Key) -> ObjectDesc:
        """Where the object is: its size, its copies in memory, its writer's disk copy.
        :class:`weft.NotFound` when missing. No lease is granted and the object's place in the
        eviction order does not move, so the answer may go stale at once."""
        return _desc(self._native.describe(key))

    def batch_describe(self, keys: Sequence[Key]) -> List[Union[ObjectDesc, Error]]:
        """:meth:`describe` for many keys, one master round trip: one entry per key."""
        return [r if isinstance(r, Error) else _desc(r) for r in self._native.batch_describe(list(keys))]

    def exists(self, key: Key) -> bool:
        """Whether a complete object is stored (a read lease is granted when it is)."""
        return self._native.exists(key)

    def batch_exists(self, keys: Sequence[Key]) -> List[Union[bool, Error]]:
        return self._native.batch_exists(list(keys))

    def size(self, key: Key) -> int:
        """The value's size in bytes; :class:`weft.NotFound` when missing."""
        return self._native.size(key)

    # -- zero-copy buffers --------------------------------------------------------------------

    def register_buffer(self, buffer: Memory, size: Optional[int] = None) -> int:
        """Local memory the zero-copy calls may use; returns its address. An object is kept alive
        until it is unregistered or the store closes. :class:`weft.InvalidArgument` for an empty
        buffer or one that overlaps a registered buffer."""
        return self._native.register_buffer(buffer, size)

    def unregister_buffer(self, buffer: Memory) -> None:
        """``buffer``: the object or address given to :meth:`register_buffer`;
        :class:`weft.NotRegistered` when it starts no registration."""
        self._native.unregister_buffer(buffer)

    # -- removal ------------------------------------------------------------------------------

    def remove(self, key: Key, force: bool = False) -> None:
        """:class:`weft.NotFound`; :class:`weft.Busy` while a reader holds a lease, unless
        ``force``."""
        self._native.remove(key, force)

    def batch_remove(self, keys: Sequence[Key], force: bool = False) -> List[Optional[Error]]:
        return self._native.batch_remove(list(keys), force)

    def remove_by_regex(self, pattern: str, force: bool = False) -> int:
        """Removes every object whose whole key matches ``pattern`` (ECMAScript syntax); leased
        ones stay unless ``force``. Returns how many went; :class:`weft.InvalidArgument` for a
        pattern that does not compile."""
        return self._native.remove_by_regex(pattern, force)

    def remove_all(self, force: bool = False) -> int:
        """Removes every object (leased ones only with ``force``); returns how many went."""
        return self._native.remove_all(force)

    def __repr__(self) -> str:
        return f"<weft.store.Store {'closed' if self.closed else f'rank {self.rank}'}>"
