"""weft's stand-in for Mooncake's `mooncake` package (weft-mooncake-shim).

`mooncake.engine` is Mooncake's Python TransferEngine API on weft's transfer engine
(weft.mooncake); `mooncake.store` is Mooncake's MooncakeDistributedStore on weft's KV store
(weft.mooncake_store). See weft's docs/api.md, "Mooncake compatibility".
"""
