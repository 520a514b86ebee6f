"""`mooncake.store` on weft: its names come from weft.mooncake_store (see weft's docs/api.md)."""
from weft.mooncake_store import (BufferHandle, Descriptor, DiskDescriptor, LocalDiskDescriptor,  # noqa: F401
                                 MemoryDescriptor, MooncakeDistributedStore, ReplicaDescriptor, ReplicaStatus,
                                 ReplicateConfig)

__all__ = ["MooncakeDistributedStore", "ReplicateConfig", "BufferHandle", "ReplicaDescriptor", "ReplicaStatus",
           "MemoryDescriptor", "Descriptor", "DiskDescriptor", "LocalDiskDescriptor"]
