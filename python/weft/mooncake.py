"""weft.mooncake: Mooncake's Python transfer engine (``mooncake.engine``) on weft.

The method set, argument order, defaults and return conventions of
``mooncake.engine.TransferEngine``, so that code written for Mooncake (vLLM's and SGLang's
connectors, ...) runs unchanged on weft's transfer engine:

    from weft.mooncake import TransferEngine          # or, with the shim: from mooncake.engine import ...
    te = TransferEngine()
    te.initialize("10.0.0.1", "P2PHANDSHAKE", "tcp", "")
    session = f"10.0.0.1:{te.get_rpc_port()}"
    te.register_memory(addr, length)
    te.batch_transfer_sync_write(peer_session, [addr], [peer_addr], [length])   # 0 or negative

As in Mooncake, these methods never raise: failures are logged (logger "weft.mooncake") and
returned as Mooncake's ints: 0 on success, -1 for a failure or an invalid argument (also
mismatched list lengths), -3 for an address that is not registered, -4 for a batch that is still
busy, -7 for a registration that overlaps another; batch ids are 0 on failure;
``transfer_check_status`` gives 1 done / 0 pending / -1 failed / -2 timed out. Only the
``*_on_cuda`` methods raise (RuntimeError, TypeError for a bad stream), as Mooncake's do.

Device memory: ``register_memory`` / ``batch_register_memory`` take device addresses (a torch
CUDA tensor's ``data_ptr()``) as Mooncake does: with location "*" the core asks the driver
(cudaPointerGetAttributes) and registers the buffer as "cuda:N". Where no GPU is usable (or this
build has no CUDA) that registration returns -1 and logs why.

What weft does differently (docs/api.md, "Mooncake compatibility"):

- Protocols: "tcp" (also "" and anything when MC_FORCE_TCP=1), and "rdma", which runs on weft's
  ucx transport (UCX found at run time: InfiniBand and RoCE where the cluster's UCX has them;
  docs/ucx.md); ``device_name`` ("mlx5_0,mlx5_1") then selects the NICs (UCX_NET_DEVICES).
  Where UCX cannot run, or for another protocol, initialize returns -1 with the reason logged,
  unless WEFT_PROTOCOL_FALLBACK=tcp, which uses tcp and logs the fallback.
- Authentication: peers prove a shared cluster secret (env WEFT_CLUSTER_SECRET) before any data
  moves. Mooncake has no authentication, so without the variable this module runs
  unauthenticated (no worse than Mooncake) and logs a warning once per engine saying how to turn
  it on. Every remote access is checked against the registered buffers either way.
- Remote addresses outside a registered buffer fail that request (-1) instead of touching memory.
- ``*_on_cuda``: the transfer starts after the work queued on the stream and work queued after
  the call sees the data, as in Mooncake; but weft waits for the stream and returns once the
  transfer is done (the calling thread blocks, GIL released) instead of enqueuing a host
  function, and a failed transfer raises RuntimeError instead of ending the process.
"""

from __future__ import annotations

import ctypes
import enum
import json
import logging
import mmap
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import Error, NotSupported, _weft
from . import trans as _trans
from .trans import TransferEngine as _WeftEngine

logger = logging.getLogger("weft.mooncake")

__all__ = [
    "TransferEngine", "TransferOpcode", "TransferNotify", "Read", "Write", "SUPPORT_CUDA", "SUPPORT_EFA",
    "SUPPORT_HIP", "SUPPORT_MNNVL", "SUPPORT_MUSA", "SUPPORT_INTRA_NVLINK",
]

# What this build can do. SUPPORT_CUDA: the package has CUDA (built where nvcc was found) and a
# GPU is usable here, as weft.cuda_available() says (weft.cuda_status(): why not). Asked once, at
# import, as Mooncake's constant is fixed; the probe initialises CUDA, so import this module after
# any fork whose child uses CUDA. The others: no such paths in weft, so False.
from . import cuda_available as _cuda_available  # noqa: E402
SUPPORT_CUDA = bool(_cuda_available())
SUPPORT_EFA = False
SUPPORT_HIP = False
SUPPORT_MNNVL = False
SUPPORT_MUSA = False
SUPPORT_INTRA_NVLINK = False

# Mooncake's error codes (include/error.h) that this module returns.
OK = 0
ERR_INVALID_ARGUMENT = -1
ERR_ADDRESS_NOT_REGISTERED = -3
ERR_BATCH_BUSY = -4
ERR_ADDRESS_OVERLAPPED = -7

# Mooncake's sync-transfer timeout: MC_TRANSFER_TIMEOUT seconds (default 30, at least 5), plus
# one nanosecond per byte.
_DEFAULT_TIMEOUT_S = 30.0
_MIN_TIMEOUT_S = 5.0

# Failures after which the cached segment handle may be stale (the peer restarted: new keys,
# new data port): the handle is evicted, and a sync transfer reopens it and retries once. Not
# INVALID_ADDRESS: the engine already fetches the descriptor again before reporting that.
_STALE_SEGMENT = frozenset({"PEER_DOWN", "PERMISSION_DENIED", "UNAVAILABLE", "IO", "NOT_FOUND", "PROTOCOL"})


class TransferOpcode(enum.IntEnum):
    """Mooncake's opcode enum: members ``Read`` (0) and ``Write`` (1)."""

    Read = 0
    Write = 1


Read = TransferOpcode.Read
Write = TransferOpcode.Write


class TransferNotify:
    """A notification: ``name`` and ``msg`` (str), as Mooncake's ``TransferNotify(name, msg)``."""

    __slots__ = ("name", "msg")

    def __init__(self, name: str = "", msg: str = "") -> None:
        self.name = name
        self.msg = msg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TransferNotify) and (self.name, self.msg) == (other.name, other.msg)

    def __hash__(self) -> int:
        return hash((self.name, self.msg))

    def __repr__(self) -> str:
        return f"TransferNotify(name={self.name!r}, msg={self.msg!r})"


def _code(err: BaseException, not_found: int = ERR_INVALID_ARGUMENT) -> int:
    """Mooncake's int for a weft error."""
    name = getattr(err, "name", "")
    if name == "NOT_REGISTERED":
        return ERR_ADDRESS_NOT_REGISTERED
    if name == "ALREADY_EXISTS":
        return ERR_ADDRESS_OVERLAPPED
    if name == "BUSY":
        return ERR_BATCH_BUSY
    if name == "NOT_FOUND":
        return not_found
    return ERR_INVALID_ARGUMENT


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _transfer_timeout_base() -> float:
    text = os.environ.get("MC_TRANSFER_TIMEOUT")
    if not text:
        return _DEFAULT_TIMEOUT_S
    try:
        return max(float(text), _MIN_TIMEOUT_S)
    except ValueError:
        logger.warning("MC_TRANSFER_TIMEOUT=%r is not a number of seconds: using %s", text, _DEFAULT_TIMEOUT_S)
        return _DEFAULT_TIMEOUT_S


class TransferEngine:
    """Mooncake's ``mooncake.engine.TransferEngine`` on weft (see the module doc)."""

    TransferOpcode = TransferOpcode

    def __init__(self) -> None:
        self._te: Optional[_WeftEngine] = None
        self._lock = threading.Lock()  # guards the maps below
        self._handles: Dict[str, int] = {}  # target name -> segment handle (Mooncake's handle_map_)
        self._batch_targets: Dict[int, str] = {}  # async batch -> target name, to evict on failure
        self._managed: Dict[int, int] = {}  # allocate_managed_buffer: address -> size
        self._timeout_base = _DEFAULT_TIMEOUT_S

    # -- setup ------------------------------------------------------------------------------

    def initialize(self, local_hostname: str, metadata_server: str, protocol: str, device_name: str) -> int:
        """Starts the engine. ``metadata_server``: "P2PHANDSHAKE" (no directory; the session
        name is "host:rpc_port"), "http://h:p/metadata", "etcd://h:p" or a bare "h:p" (etcd).
        0 or -1."""
        return self._initialize(local_hostname, metadata_server, protocol, device_name)

    def initialize_ext(self, local_hostname: str, metadata_server: str, protocol: str, device_name: str,
                       metadata_type: str) -> int:
        """:meth:`initialize` where ``metadata_type`` ("etcd", "http", ...) is put in front of a
        ``metadata_server`` that has no scheme."""
        server = metadata_server
        if metadata_type and "://" not in server and server.upper() not in ("P2PHANDSHAKE", "P2P"):
            server = f"{metadata_type}://{server}"
        return self._initialize(local_hostname, server, protocol, device_name)

    def _initialize(self, local_hostname: str, metadata_server: str, protocol: str, device_name: str) -> int:
        if self._te is not None:
            logger.error("initialize: this TransferEngine is already initialized as %r", self._te.name)
            return -1
        proto = (protocol or "tcp").strip().lower()
        if _truthy(os.environ.get("MC_FORCE_TCP")) and proto != "tcp":
            logger.info("initialize: MC_FORCE_TCP is set: protocol %r -> tcp", proto)
            proto = "tcp"
        if device_name and proto == "tcp":
            logger.debug("initialize: device_name %r ignored: the tcp path uses no NIC filter", device_name)
        secret = os.environ.get("WEFT_CLUSTER_SECRET", "")
        if not secret:
            logger.warning(
                "initialize: WEFT_CLUSTER_SECRET is not set, so this engine accepts peers without "
                "authentication (as Mooncake does). Set WEFT_CLUSTER_SECRET to the same secret on every "
                "peer to require it.")
        self._timeout_base = _transfer_timeout_base()
        try:
            self._te = _WeftEngine(local_name=local_hostname, metadata=metadata_server or "P2PHANDSHAKE",
                                   protocol=proto, device_name=device_name or "",
                                   cluster_secret=secret, allow_unauthenticated=not secret,
                                   protocol_fallback=os.environ.get("WEFT_PROTOCOL_FALLBACK", ""),
                                   transfer_timeout_ms=int(self._timeout_base * 1000))
        except Error as e:
            hint = ""
            if e.name == "NOT_SUPPORTED":
                hint = " (set WEFT_PROTOCOL_FALLBACK=tcp, or MC_FORCE_TCP=1, to use tcp instead)"
            logger.error("initialize(%r, %r, %r): %s%s", local_hostname, metadata_server, protocol, e, hint)
            return -1
        except (TypeError, ValueError, OverflowError) as e:
            logger.error("initialize(%r, %r, %r): %s", local_hostname, metadata_server, protocol, e)
            return -1
        logger.info("initialize: engine %r, protocol %s, metadata %s", self._te.name, self._te.protocol,
                    metadata_server)
        return 0

    def _engine(self, what: str) -> Optional[_WeftEngine]:
        te = self._te
        if te is None:
            logger.error("%s: the TransferEngine is not initialized (call initialize first)", what)
        return te

    def get_rpc_port(self) -> int:
        """The rpc port; in p2p mode the session name is f"{host}:{port}". -1 before initialize."""
        te = self._engine("get_rpc_port")
        return -1 if te is None else te.rpc_port

    def get_engine(self) -> Optional[_WeftEngine]:
        """The underlying :class:`weft.TransferEngine` (not Mooncake's InnerTransferEngine)."""
        return self._te

    def get_engine_ptr(self) -> int:
        """The address of the C++ weft::trans::TransferEngine, or 0."""
        te = self._te
        return 0 if te is None else te.native_handle

    def close(self) -> None:
        """weft only (Mooncake engines live until collected): stops the engine now."""
        te, self._te = self._te, None
        if te is not None:
            te.close()
        with self._lock:
            self._handles.clear()
            self._batch_targets.clear()
            self._managed = {}  # the engine unmapped them when it closed

    # -- memory -----------------------------------------------------------------------------

    def register_memory(self, buffer_addr: int, capacity: int, location: str = "*") -> int:
        """Registers [buffer_addr, +capacity) for local use and remote access. 0, -1, or -7
        when it overlaps a registered buffer."""
        te = self._engine("register_memory")
        if te is None:
            return -1
        try:
            te.register_memory(int(buffer_addr), int(capacity), location, True)
            return 0
        except Exception as e:  # a Mooncake method returns its failure
            logger.error("register_memory(%#x, %d, %r): %s", _as_int(buffer_addr), _as_int(capacity), location, e)
            return _code(e)

    def unregister_memory(self, buffer_addr: int) -> int:
        """0, or -3 when no buffer starts at buffer_addr."""
        te = self._engine("unregister_memory")
        if te is None:
            return -1
        try:
            te.unregister_memory(int(buffer_addr))
            return 0
        except Exception as e:
            logger.error("unregister_memory(%#x): %s", _as_int(buffer_addr), e)
            return _code(e, not_found=ERR_ADDRESS_NOT_REGISTERED)

    def batch_register_memory(self, buffer_addresses: Sequence[int], capacities: Sequence[int],
                              location: str = "*") -> int:
        """Registers each buffer; all or nothing (a failure unregisters those of this call)."""
        te = self._engine("batch_register_memory")
        if te is None:
            return -1
        if len(buffer_addresses) != len(capacities):
            logger.error("batch_register_memory: %d addresses but %d capacities", len(buffer_addresses),
                         len(capacities))
            return -1
        done: List[int] = []
        for addr, cap in zip(buffer_addresses, capacities):
            rc = self.register_memory(addr, cap, location)
            if rc != 0:
                for a in done:
                    self.unregister_memory(a)
                return rc
            done.append(addr)
        return 0

    def batch_unregister_memory(self, buffer_addresses: Sequence[int]) -> int:
        """Unregisters each; the first failure's code (the others are still unregistered)."""
        rc = 0
        for addr in buffer_addresses:
            r = self.unregister_memory(addr)
            rc = rc or r
        return rc

    def allocate_managed_buffer(self, length: int) -> int:
        """Allocates ``length`` bytes of registered host memory and returns its address, or 0.
        The memory is shareable (a memfd): engines on this host reach it by mapping it (shm)."""
        te = self._engine("allocate_managed_buffer")
        if te is None:
            return 0
        try:
            n = int(length)
            if n <= 0:
                raise ValueError(f"length {n} must be positive")
            size = (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
            addr = te.allocate_managed_buffer(size)
        except Exception as e:
            logger.error("allocate_managed_buffer(%r): %s", length, e)
            return 0
        with self._lock:
            self._managed[addr] = size
        return addr

    def free_managed_buffer(self, addr: int, length: int) -> int:
        """Unregisters and unmaps a buffer from :meth:`allocate_managed_buffer`. 0, or -1 when
        ``addr`` is not one."""
        with self._lock:
            size = self._managed.pop(addr, None)
        if size is None:
            logger.error("free_managed_buffer(%#x, %r): not a managed buffer", _as_int(addr), length)
            return -1
        te = self._te
        try:
            if te is not None:
                te.free_managed_buffer(addr)
        except Exception as e:
            logger.error("free_managed_buffer(%#x): %s", addr, e)
            return -1
        return 0

    def write_bytes_to_buffer(self, dest_address: int, src: Any, length: int) -> int:
        """Copies ``length`` bytes of ``src`` (bytes, or str as UTF-8) to a local address."""
        try:
            data = src.encode() if isinstance(src, str) else bytes(src)
            n = int(length)
            if dest_address == 0 or n < 0 or n > len(data):
                raise ValueError(f"dest_address {dest_address:#x}, length {n} for {len(data)} bytes")
            ctypes.memmove(dest_address, data, n)
            return 0
        except Exception as e:
            logger.error("write_bytes_to_buffer: %s", e)
            return -1

    def read_bytes_from_buffer(self, source_address: int, length: int) -> bytes:
        """``length`` bytes at a local address, as bytes (b"" for a null address)."""
        if not source_address or length <= 0:
            if length:
                logger.error("read_bytes_from_buffer(%#x, %r): bad address or length", _as_int(source_address), length)
            return b""
        return ctypes.string_at(source_address, length)

    # -- segments ---------------------------------------------------------------------------

    def _segment(self, te: _WeftEngine, name: str) -> int:
        handle = self._handles.get(name)
        if handle is None:
            handle = te.open_segment(name)  # blocking, GIL released; raises when unknown
            with self._lock:
                handle = self._handles.setdefault(name, handle)
        return handle

    def _evict(self, te: _WeftEngine, name: str) -> None:
        with self._lock:
            handle = self._handles.pop(name, None)
        if handle is not None:
            try:
                te.close_segment(handle)
            except Error:
                pass  # already closed by another thread's eviction

    def get_first_buffer_address(self, segment_name: str) -> int:
        """The address of the first buffer (lowest address) of a segment, this engine's or a
        peer's; 0 when there is none or the segment cannot be opened."""
        te = self._engine("get_first_buffer_address")
        if te is None:
            return 0
        try:
            if segment_name == te.name:
                buffers = te.local_buffers()
            else:
                buffers = te.remote_buffers(self._segment(te, segment_name))
        except Exception as e:
            logger.error("get_first_buffer_address(%r): %s", segment_name, e)
            return 0
        return buffers[0].addr if buffers else 0

    def send_probe(self, peer_server_name: str) -> int:
        """0 when the peer answers on its data endpoint, -1 otherwise."""
        te = self._engine("send_probe")
        if te is None:
            return -1
        try:
            te.probe(peer_server_name, timeout=5.0)
            return 0
        except Exception as e:
            logger.warning("send_probe(%r): %s", peer_server_name, e)
            return -1

    def warmup_efa_segment(self, segment_name: str) -> int:
        """No EFA here: nothing to warm up. 0."""
        return 0

    def get_local_topology(self, device_name: Optional[str] = None) -> str:
        """Mooncake's priority matrix as JSON (``{"cpu:N": [preferred NICs, other NICs]}``). The
        tcp path uses no NIC, so it is empty: "{}", as Mooncake's is on a host without RDMA NICs."""
        return json.dumps({})

    # -- transfers --------------------------------------------------------------------------

    def _timeout(self, lengths: Sequence[int]) -> float:
        try:
            return self._timeout_base + sum(lengths) * 1e-9
        except TypeError:
            return self._timeout_base  # the native call reports the bad item

    def _sync(self, what: str, target: str, opcode: Any, buffers: Sequence[int], peers: Sequence[int],
              lengths: Sequence[int], notify: Optional[TransferNotify], why: Optional[List[str]] = None) -> int:
        """Runs a batch to completion: 0 or Mooncake's negative code, the failure logged and,
        with ``why``, its text appended there (for the *_on_cuda methods, which raise it)."""

        def fail(rc: int, fmt: str, *args: Any) -> int:
            logger.error(fmt, *args)
            if why is not None:
                why.append(fmt % args)
            return rc

        te = self._engine(what)  # logs when it is not initialized
        if te is None:
            if why is not None:
                why.append(f"{what}: the TransferEngine is not initialized (call initialize first)")
            return -1
        if not (len(buffers) == len(peers) == len(lengths)):
            return fail(-1, "%s(%r): %d buffers, %d peer addresses, %d lengths: the lists must be as long", what,
                        target, len(buffers), len(peers), len(lengths))
        # One native call: zero-length requests dropped (with none left only the notification goes,
        # as in Mooncake), the deadline from the bytes, None when every request succeeded.
        for attempt in (0, 1):
            try:
                handle = self._segment(te, target)
                results = te._native.transfer_lists_mooncake(opcode, handle, buffers, peers, lengths, notify,
                                                             self._timeout_base)
            except Error as e:
                if attempt == 0 and e.name in _STALE_SEGMENT and target in self._handles:
                    self._evict(te, target)
                    continue
                return fail(_code(e), "%s(%r, %d requests): %s", what, target, len(buffers), e)
            except Exception as e:  # TypeError / OverflowError for bad arguments
                return fail(-1, "%s(%r): %s", what, target, e)
            if results is None:
                return 0
            failed = [r for r in results if r is not None]
            first = failed[0]
            if attempt == 0 and getattr(first, "name", "") in _STALE_SEGMENT:
                logger.info("%s(%r): %s; reopening the segment and retrying once", what, target, first)
                self._evict(te, target)
                continue
            return fail(_code(first), "%s(%r): %d of %d requests failed; first: %s", what, target, len(failed),
                        len(results), first)
        return -1

    def transfer_sync_write(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                            transport_hint: str = "") -> int:
        """Writes [buffer, +length) to the peer's address; blocks (GIL released). 0 / negative."""
        return self._sync("transfer_sync_write", target_hostname, 1, (buffer,), (peer_buffer_address,), (length,),
                          None)

    def transfer_sync_read(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                           transport_hint: str = "") -> int:
        """Reads the peer's [peer_buffer_address, +length) into buffer; blocks. 0 / negative."""
        return self._sync("transfer_sync_read", target_hostname, 0, (buffer,), (peer_buffer_address,), (length,),
                          None)

    def transfer_sync(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                      opcode: TransferOpcode, notify: Optional[TransferNotify] = None,
                      transport_hint: str = "") -> int:
        """One read or write; with ``notify``, the peer gets it after the data is in place."""
        return self._sync("transfer_sync", target_hostname, opcode, (buffer,), (peer_buffer_address,), (length,),
                          notify)

    def batch_transfer_sync_write(self, target_hostname: str, buffers: Sequence[int],
                                  peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                  transport_hint: str = "") -> int:
        return self._sync("batch_transfer_sync_write", target_hostname, 1, buffers, peer_buffer_addresses, lengths,
                          None)

    def batch_transfer_sync_read(self, target_hostname: str, buffers: Sequence[int],
                                 peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                 transport_hint: str = "") -> int:
        return self._sync("batch_transfer_sync_read", target_hostname, 0, buffers, peer_buffer_addresses, lengths,
                          None)

    def batch_transfer_sync(self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int],
                            lengths: Sequence[int], opcode: TransferOpcode, notify: Optional[TransferNotify] = None,
                            transport_hint: str = "") -> int:
        return self._sync("batch_transfer_sync", target_hostname, opcode, buffers, peer_buffer_addresses, lengths,
                          notify)

    def _async(self, what: str, target: str, opcode: Any, buffers: Sequence[int], peers: Sequence[int],
               lengths: Sequence[int]) -> int:
        te = self._engine(what)
        if te is None:
            return 0
        if not (len(buffers) == len(peers) == len(lengths)):
            logger.error("%s(%r): %d buffers, %d peer addresses, %d lengths: the lists must be as long", what,
                         target, len(buffers), len(peers), len(lengths))
            return 0
        if 0 in lengths:
            buffers, peers, lengths = _without_empty(buffers, peers, lengths)
        try:
            handle = self._segment(te, target)
            batch = te._native.submit_lists(opcode, handle, buffers, peers, lengths, None, self._timeout(lengths))
        except Exception as e:
            logger.error("%s(%r, %d requests): %s", what, target, len(buffers), e)
            return 0
        with self._lock:
            self._batch_targets[batch] = target
        return batch

    def batch_transfer_async_write(self, target_hostname: str, buffers: Sequence[int],
                                   peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                   transport_hint: str = "") -> int:
        """Starts the writes and returns the batch id at once (0 on failure)."""
        return self._async("batch_transfer_async_write", target_hostname, 1, buffers, peer_buffer_addresses, lengths)

    def batch_transfer_async_read(self, target_hostname: str, buffers: Sequence[int],
                                  peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                  transport_hint: str = "") -> int:
        return self._async("batch_transfer_async_read", target_hostname, 0, buffers, peer_buffer_addresses, lengths)

    def batch_transfer_async(self, target_hostname: str, buffers: Sequence[int], peer_buffer_addresses: Sequence[int],
                             lengths: Sequence[int], opcode: TransferOpcode, transport_hint: str = "") -> int:
        return self._async("batch_transfer_async", target_hostname, opcode, buffers, peer_buffer_addresses, lengths)

    def transfer_submit_write(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                              transport_hint: str = "") -> int:
        """Starts one write; the batch id (poll it with transfer_check_status), or 0."""
        return self._async("transfer_submit_write", target_hostname, 1, (buffer,), (peer_buffer_address,), (length,))

    def _finish(self, te: _WeftEngine, batch: int, status: Any) -> None:
        """Frees a finished batch; on a failure that suggests a restarted peer, evicts its segment
        so that the next call reopens it."""
        with self._lock:
            target = self._batch_targets.pop(batch, None)
        try:
            te.free_batch(batch)
        except Error as e:
            logger.error("free batch %d: %s", batch, e)
        if target is not None and not status.ok:
            first = next((r for r in status.results if r is not None), None)
            if getattr(first, "name", "") in _STALE_SEGMENT:
                self._evict(te, target)

    def get_batch_transfer_status(self, batch_ids: Sequence[int]) -> int:
        """Blocks until every batch finished (each ends by its deadline), frees them, and returns
        0 when every request of every batch completed, -1 otherwise."""
        te = self._engine("get_batch_transfer_status")
        if te is None:
            return -1
        rc = 0
        for batch in batch_ids:
            try:
                status = te.wait(batch)
            except Exception as e:
                logger.error("get_batch_transfer_status: batch %r: %s", batch, e)
                rc = -1
                continue
            if not status.ok:
                first = next((r for r in status.results if r is not None), None)
                logger.error("get_batch_transfer_status: batch %d: %d of %d requests failed; first: %s", batch,
                             sum(r is not None for r in status.results), len(status.results), first)
                rc = -1
            self._finish(te, batch, status)
        return rc

    def transfer_check_status(self, batch_id: int) -> int:
        """1 completed (the batch is freed), 0 still running, -1 failed or unknown, -2 timed out
        (a finished batch is freed)."""
        te = self._engine("transfer_check_status")
        if te is None:
            return -1
        try:
            status = te.poll(batch_id)
        except Exception as e:
            logger.error("transfer_check_status(%r): %s", batch_id, e)
            return -1
        if not status.done:
            return 0
        self._finish(te, batch_id, status)
        if status.ok:
            return 1
        if "timeout" in status.states:
            logger.error("transfer_check_status(%d): timed out", batch_id)
            return -2
        first = next((r for r in status.results if r is not None), None)
        logger.error("transfer_check_status(%d): failed: %s", batch_id, first)
        return -1

    # -- notifications ----------------------------------------------------------------------

    def get_notifies(self) -> List[TransferNotify]:
        """Notifications received since the last call, in arrival order."""
        te = self._engine("get_notifies")
        if te is None:
            return []
        try:
            got = te.take_notifications()
        except Exception as e:
            logger.error("get_notifies: %s", e)
            return []
        return [TransferNotify(n.name, n.message.decode("utf-8", "surrogateescape")) for n in got]

    # -- CUDA stream-ordered variants ----------------------------------------------------------
    #
    # Mooncake enqueues the batch as a host function on the stream (cudaLaunchHostFunc): it starts
    # once the work queued before it has run, later work on the stream waits for it, and the call
    # returns at once; a failed transfer then ends the process (_exit(1)). weft keeps the order
    # and not the kill: it waits for the stream (cudaStreamSynchronize, GIL released), runs the
    # batch, and returns once the bytes are in place, so work queued on the stream after the call
    # sees them. The calling thread blocks for the transfer (as the sync methods do) instead of
    # the stream; failures raise RuntimeError with the reason. docs/trans.md says the same.

    def _on_cuda(self, what: str, target: str, opcode: int, buffers: Sequence[int], peers: Sequence[int],
                 lengths: Sequence[int], stream_ptr: Any) -> None:
        if self._te is None:
            raise RuntimeError(f"{what}: the TransferEngine is not initialized (call initialize first)")
        stream = _trans.stream_handle(stream_ptr)  # TypeError / InvalidArgument (a ValueError)
        if not (len(buffers) == len(peers) == len(lengths)):
            raise RuntimeError(f"{what}: {len(buffers)} buffers, {len(peers)} peer addresses and {len(lengths)} "
                               f"lengths: the lists must be as long")
        try:
            _weft.stream_synchronize(stream)  # NotSupported, with the reason, where no GPU is usable
        except NotSupported as e:
            raise RuntimeError(f"{what}: no CUDA stream can be ordered with here: {e}. Use "
                               f"batch_transfer_sync_write/read after synchronizing the stream yourself") from e
        except Error as e:
            raise RuntimeError(f"{what}: waiting for the work queued on stream {stream:#x}: {e}") from e
        why: List[str] = []
        rc = self._sync(what, target, opcode, buffers, peers, lengths, None, why)
        if rc != 0:
            raise RuntimeError(f"{what}: the transfer failed ({rc}): {why[-1] if why else 'see the weft.mooncake log'}")

    def transfer_write_on_cuda(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                               stream_ptr: int = 0, transport_hint: str = "") -> None:
        """Writes [buffer, +length) to the peer after the work queued on ``stream_ptr`` (a
        cudaStream_t as an int, or a torch.cuda.Stream); returns once it is written. RuntimeError
        on failure."""
        self._on_cuda("transfer_write_on_cuda", target_hostname, 1, (buffer,), (peer_buffer_address,), (length,),
                      stream_ptr)

    def transfer_read_on_cuda(self, target_hostname: str, buffer: int, peer_buffer_address: int, length: int,
                              stream_ptr: int = 0, transport_hint: str = "") -> None:
        """Reads the peer's range into [buffer, +length) after the work queued on ``stream_ptr``;
        returns once it is read, so work queued on the stream afterwards sees it."""
        self._on_cuda("transfer_read_on_cuda", target_hostname, 0, (buffer,), (peer_buffer_address,), (length,),
                      stream_ptr)

    def batch_transfer_write_on_cuda(self, target_hostname: str, buffers: Sequence[int],
                                     peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                     stream_ptr: int = 0, transport_hint: str = "") -> None:
        self._on_cuda("batch_transfer_write_on_cuda", target_hostname, 1, buffers, peer_buffer_addresses, lengths,
                      stream_ptr)

    def batch_transfer_read_on_cuda(self, target_hostname: str, buffers: Sequence[int],
                                    peer_buffer_addresses: Sequence[int], lengths: Sequence[int],
                                    stream_ptr: int = 0, transport_hint: str = "") -> None:
        self._on_cuda("batch_transfer_read_on_cuda", target_hostname, 0, buffers, peer_buffer_addresses, lengths,
                      stream_ptr)


def _without_empty(buffers: Sequence[int], peers: Sequence[int],
                   lengths: Sequence[int]) -> Tuple[List[int], List[int], List[int]]:
    """The requests without those of length 0, which Mooncake completes at once without moving
    anything (weft's engine refuses them as malformed)."""
    keep = [i for i, n in enumerate(lengths) if n != 0]
    return [buffers[i] for i in keep], [peers[i] for i in keep], [lengths[i] for i in keep]


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# ---- the `mooncake` import shim -------------------------------------------------------------

# The files of the opt-in package that makes `import mooncake.engine` resolve here. The same
# files are in python/shim (pip install ./python/shim); tests/python checks that they agree.
SHIM_FILES: Dict[str, str] = {
    "mooncake/__init__.py": '''"""weft's stand-in for Mooncake's `mooncake` package (weft-mooncake-shim).

`mooncake.engine` is Mooncake's Python TransferEngine API on weft's transfer engine
(weft.mooncake); `mooncake.store` is Mooncake's MooncakeDistributedStore on weft's KV store
(weft.mooncake_store). See weft's docs/api.md, "Mooncake compatibility".
"""
''',
    "mooncake/engine.py": '''"""`mooncake.engine` on weft: every name comes from weft.mooncake (see weft's docs/api.md)."""
from weft.mooncake import *  # noqa: F401,F403
from weft.mooncake import __all__  # noqa: F401
''',
    "mooncake/store.py": '''"""`mooncake.store` on weft: its names come from weft.mooncake_store (see weft's docs/api.md)."""
from weft.mooncake_store import (BufferHandle, Descriptor, DiskDescriptor, LocalDiskDescriptor,  # noqa: F401
                                 MemoryDescriptor, MooncakeDistributedStore, ReplicaDescriptor, ReplicaStatus,
                                 ReplicateConfig)

__all__ = ["MooncakeDistributedStore", "ReplicateConfig", "BufferHandle", "ReplicaDescriptor", "ReplicaStatus",
           "MemoryDescriptor", "Descriptor", "DiskDescriptor", "LocalDiskDescriptor"]
''',
}


def _install_shim(target: Optional[str]) -> int:
    """Writes the shim package (and a dist-info, so that `pip uninstall weft-mooncake-shim`
    removes it) into ``target`` or this interpreter's site-packages."""
    import base64
    import hashlib
    import sysconfig

    root = target or sysconfig.get_paths()["purelib"]
    existing = os.path.join(root, "mooncake")
    if os.path.isdir(existing) and not os.path.exists(os.path.join(existing, ".weft-shim")):
        print(f"{existing} exists and is not weft's shim (the real Mooncake?): uninstall it first", file=sys.stderr)
        return 1
    files = dict(SHIM_FILES)
    files["mooncake/.weft-shim"] = "installed by python -m weft.mooncake --install-shim\n"
    info = "weft_mooncake_shim-0.1.0.dist-info"
    files[f"{info}/METADATA"] = "Metadata-Version: 2.1\nName: weft-mooncake-shim\nVersion: 0.1.0\n"
    files[f"{info}/INSTALLER"] = "weft\n"
    record = []
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = text.encode()
        with open(path, "wb") as f:
            f.write(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{rel},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    with open(os.path.join(root, info, "RECORD"), "w") as f:
        f.write("\n".join(record) + "\n")
    print(f"installed the mooncake shim into {root}: `import mooncake.engine` now uses weft")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m weft.mooncake",
                                 description="Mooncake compatibility of weft (docs/api.md)")
    ap.add_argument("--install-shim", action="store_true",
                    help="install the package `mooncake` (mooncake.engine, mooncake.store) that resolves to weft")
    ap.add_argument("--target", help="install into this folder instead of site-packages")
    a = ap.parse_args(argv)
    if a.install_shim:
        return _install_shim(a.target)
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
