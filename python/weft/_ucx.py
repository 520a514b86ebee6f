"""Where the ucx transport's UCX comes from, for engines started from Python.

The native side opens ``WEFT_UCX_LIBRARY`` when it is set, else ``libucp.so.0`` through the
dynamic loader (docs/ucx.md). From Python one more place is worth trying: PyPI's UCX wheels
(``libucx-cu13``, ``libucx-cu12``), which carry UCX with CUDA support (no InfiniBand) and which
frameworks such as RAPIDS install. The order is:

1. ``WEFT_UCX_LIBRARY``, when set: left alone (asking for one UCX never gets another);
2. ``libucp.so.0`` through the dynamic loader: a cluster's HPC-X / MOFED build on
   ``LD_LIBRARY_PATH``, or the distribution's;
3. the ``libucx`` wheel, when installed: its libraries are loaded (``libucx.load_library()``)
   and ``WEFT_UCX_LIBRARY`` is set to its ``libucp.so.0`` for this process.

Nothing here is needed for an engine that does not ask for ucx.
"""

from __future__ import annotations

import ctypes
import os
from typing import Callable, Optional


def _loader_finds_libucp() -> bool:
    """Whether the dynamic loader finds a libucp.so.0 (loading it: the engine opens the same)."""
    try:
        ctypes.CDLL("libucp.so.0", mode=ctypes.RTLD_LOCAL)
        return True
    except OSError:
        return False


def _wheel_libucp() -> Optional[str]:
    """The libucp.so.0 of an installed libucx wheel, its libraries loaded; None without one."""
    try:
        import libucx  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(libucx.__file__), "lib", "libucp.so.0")
    if not os.path.exists(path):
        return None
    libucx.load_library()  # libucs, libuct, libucp with RTLD_LOCAL, so libucp finds its own
    return path


def wants_ucx(protocol: str = "", transports: str = "", transport: str = "") -> bool:
    """Whether an engine with these options may use the ucx transport."""
    names = ",".join([transports, transport]).lower().replace(" ", "").split(",")
    return protocol.strip().lower() in ("rdma", "ucx") or "ucx" in names


def prepare(loader_finds: Callable[[], bool] = _loader_finds_libucp,
            wheel: Callable[[], Optional[str]] = _wheel_libucp) -> str:
    """Makes the UCX to use findable by the engine; returns where it comes from (for logs)."""
    if os.environ.get("WEFT_UCX_LIBRARY"):
        return "WEFT_UCX_LIBRARY=" + os.environ["WEFT_UCX_LIBRARY"]
    if loader_finds():
        return "libucp.so.0 (dynamic loader)"
    path = wheel()
    if path is None:
        return "none found (no libucp.so.0 for the dynamic loader, no libucx wheel)"
    os.environ["WEFT_UCX_LIBRARY"] = path
    return "libucx wheel: " + path
