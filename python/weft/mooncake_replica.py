"""weft.mooncake_replica: Mooncake's replica descriptors (``get_replica_desc``) for weft's objects.

Mooncake describes each copy of an object by a ``ReplicaDescriptor``: its ``status``, what kind
of copy it is (``is_memory_replica()``, ``is_disk_replica()``, ``is_local_disk_replica()``, ...)
and, through ``get_memory_descriptor().buffer_descriptor``, where its bytes are (``size``,
``buffer_address``, ``transport_endpoint``, ``protocol``). These classes keep those names, so
that code reading Mooncake's descriptors (vLLM's and LMCache's placement and tier checks) reads
weft's. What each field holds on weft:

- A copy in a peer's memory is a memory replica: ``buffer_address`` is its pool address (a GVA:
  ``weft.Pool.copy`` reads it), ``size`` the whole value (weft keeps a replica contiguous),
  ``transport_endpoint`` ``"rank:<rank>"`` (weft names peers by rank, not host:port),
  ``protocol`` the path a copy from this client takes, as the engine names it ("memcpy" for
  memory mapped here, "shm", "cma", "tcp", "ucx"; "" when none).
- The copy a writer keeps in its SSD tier is a local-disk replica (Mooncake's LOCAL_DISK, a
  client's own disk): ``get_local_disk_descriptor()`` gives ``client_id`` (the writer's rank),
  ``object_size`` and ``transport_endpoint``. weft has no shared-filesystem (DISK) or NVMe-oF
  replicas: ``is_disk_replica()`` and ``is_nof_replica()`` are always False.
- ``status`` is always COMPLETE: a put that has not ended is not described (as Mooncake treats a
  key whose replicas are not ready as missing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import List, Optional

from .store import ObjectDesc

__all__ = ["ReplicaStatus", "Descriptor", "MemoryDescriptor", "DiskDescriptor", "LocalDiskDescriptor",
           "ReplicaDescriptor", "replica_descriptors", "rank_endpoint"]


class ReplicaStatus(enum.IntEnum):
    """A replica's state, in Mooncake's names and order."""

    UNDEFINED = 0
    INITIALIZED = 1
    PROCESSING = 2
    COMPLETE = 3
    REMOVED = 4
    FAILED = 5


def rank_endpoint(rank: int) -> str:
    """The ``transport_endpoint`` weft gives the peer of ``rank``."""
    return f"rank:{rank}"


@dataclass(frozen=True)
class Descriptor:
    """Where a memory replica's bytes are (Mooncake's ``AllocatedBuffer.Descriptor``)."""

    size: int
    buffer_address: int
    transport_endpoint: str
    protocol: str = ""


@dataclass(frozen=True)
class MemoryDescriptor:
    buffer_descriptor: Descriptor

    @property
    def buffer_descriptors(self) -> List[Descriptor]:
        """Older Mooncake releases listed a replica's buffers; weft's replica is one buffer."""
        return [self.buffer_descriptor]


@dataclass(frozen=True)
class DiskDescriptor:
    """A shared-filesystem replica (Mooncake's DISK). weft makes none; kept for the type's sake."""

    file_path: str
    object_size: int


@dataclass(frozen=True)
class LocalDiskDescriptor:
    """A copy on one client's own disk: weft's SSD tier of the object's writer."""

    client_id: int
    object_size: int
    transport_endpoint: str


@dataclass(frozen=True)
class ReplicaDescriptor:
    """One replica of an object: a memory copy or the writer's disk copy."""

    status: ReplicaStatus
    memory: Optional[MemoryDescriptor] = None
    local_disk: Optional[LocalDiskDescriptor] = None

    def is_memory_replica(self) -> bool:
        return self.memory is not None

    def is_local_disk_replica(self) -> bool:
        return self.local_disk is not None

    def is_disk_replica(self) -> bool:
        return False

    def is_nof_replica(self) -> bool:
        return False

    def get_memory_descriptor(self) -> MemoryDescriptor:
        """RuntimeError for a replica that is not in memory."""
        if self.memory is None:
            raise RuntimeError("not a memory replica")
        return self.memory

    def get_local_disk_descriptor(self) -> LocalDiskDescriptor:
        if self.local_disk is None:
            raise RuntimeError("not a local disk replica")
        return self.local_disk

    def get_disk_descriptor(self) -> DiskDescriptor:
        raise RuntimeError("not a disk replica: weft keeps no shared-filesystem replicas")


def replica_descriptors(desc: ObjectDesc) -> List[ReplicaDescriptor]:
    """Mooncake's descriptors of a weft object: its memory copies in the master's order, then its
    writer's disk copy when there is one."""
    out = [ReplicaDescriptor(ReplicaStatus.COMPLETE,
                             memory=MemoryDescriptor(Descriptor(desc.size, r.gva, rank_endpoint(r.rank), r.path)))
           for r in desc.replicas]
    if desc.disk_rank >= 0:
        out.append(ReplicaDescriptor(ReplicaStatus.COMPLETE, local_disk=LocalDiskDescriptor(
            desc.disk_rank, desc.size, rank_endpoint(desc.disk_rank))))
    return out
