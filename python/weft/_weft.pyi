# The native module behind weft; its public face is weft/__init__.py (typed there).
from typing import Any

codes: dict
direction_count: int

def __getattr__(name: str) -> Any: ...
