"""`mooncake.store` on weft: its names come from weft.mooncake_store (see weft's docs/api.md)."""
from weft.mooncake_store import BufferHandle, MooncakeDistributedStore, ReplicateConfig  # noqa: F401

__all__ = ["MooncakeDistributedStore", "ReplicateConfig", "BufferHandle"]
