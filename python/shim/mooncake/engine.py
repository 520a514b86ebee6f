"""`mooncake.engine` on weft: every name comes from weft.mooncake (see weft's docs/api.md)."""
from weft.mooncake import *  # noqa: F401,F403
from weft.mooncake import __all__  # noqa: F401
