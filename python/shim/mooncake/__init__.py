"""weft's stand-in for Mooncake's `mooncake` package (weft-mooncake-shim).

Only `mooncake.engine` is provided: Mooncake's Python TransferEngine API on weft's transfer
engine (weft.mooncake). See weft's docs/api.md, "Mooncake compatibility".
"""
