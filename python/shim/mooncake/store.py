"""`mooncake.store` on weft: MooncakeDistributedStore and ReplicateConfig from weft.mooncake_store."""
from weft.mooncake_store import MooncakeDistributedStore, ReplicateConfig  # noqa: F401

__all__ = ["MooncakeDistributedStore", "ReplicateConfig"]
