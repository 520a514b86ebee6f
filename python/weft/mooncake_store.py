"""weft.mooncake_store: Mooncake's Python store API (``mooncake.store``) on weft's KV store.

``MooncakeDistributedStore`` keeps Mooncake's method names, argument order, defaults and return
conventions, so that code written for Mooncake Store (LMCache's and vLLM's connectors, SGLang's
HiCache) runs unchanged on :mod:`weft.store`:

    from weft.mooncake_store import MooncakeDistributedStore   # or: from mooncake.store import ...
    store = MooncakeDistributedStore()
    store.setup("10.0.0.1", "P2PHANDSHAKE", 512 << 20, 16 << 20, "tcp", "", "10.0.0.9:50051")
    store.put("k", b"v")                    # 0
    store.get("k")                          # b"v"; b"" on a miss

As in Mooncake, the calls never raise: failures are logged (logger "weft.mooncake_store") and
returned as Mooncake's negative error codes (the ``ERR_*`` constants below). Which weft error
becomes which code: POOL_FULL -200; INVALID_ARGUMENT, NOT_REGISTERED, OUT_OF_RANGE,
INVALID_ADDRESS and MISMATCH -600; NOT_FOUND -704; ALREADY_EXISTS -705; BUSY (a reader holds a
lease) -706; TIMEOUT -707 from the get_into calls (the copy outlived the read lease) and -900
elsewhere; PEER_DOWN and IO -800; UNAVAILABLE -900; anything else, and a call before
:meth:`~MooncakeDistributedStore.setup`, -1.

How ``setup`` maps onto weft's configuration (docs/api.md, "weft.mooncake_store"):

- ``master_server_addr``: "ip:port" becomes the pool's coordinator ``tcp://ip:port``, which a
  master must serve (``mooncake_master`` or ``weft store-master``): setup only joins it (-900
  when none answers). A unix socket path ("/tmp/kv.sock", "unix:/tmp/kv.sock") is a one-machine
  pool whose first client hosts the master itself. ``etcd://h1:2379;h2:2379`` names HA masters
  (``mooncake_master --enable_ha``): setup joins the elected leader, and the client follows the
  next leader by itself after a failover, with every object the old one had (docs/store.md,
  "High availability"); calls made during the failover fail as Mooncake's do (retry them).
  ``redis://`` and ``k8s://`` masters are not supported (-600).
- ``global_segment_size`` becomes ``rank_size``: every peer of a weft pool contributes the same
  size, so every client (and the master) must pass the same value.
- ``local_hostname``: its host becomes the host of ``data_address`` (any free port).
- ``protocol``: "rdma" runs on weft's ucx transport (``rdma_devices`` sets UCX_NET_DEVICES
  unless it is set); "tcp" is weft's tcp transport for a tcp master, and same-node shared memory
  for a unix-path master (no network to cross).
- ``enable_ssd_offload`` with ``ssd_offload_path``: weft's SSD tier in that directory
  (``store_ssd_path``: the client keeps a copy of each value it writes, served after the
  object is evicted from memory); without a path, a warning and memory only.
- Ignored: ``metadata_server`` (the coordinator is the metadata service), ``local_buffer_size``
  (weft copies straight into the caller's memory, no staging buffer), ``engine``,
  ``tenant_id``, ``enable_client_http_server``, ``client_http_port``.
- A tcp master needs weft's cluster secret (env WEFT_CLUSTER_SECRET) on every peer.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import Error, mooncake_ranges
from .mooncake_replica import (Descriptor, DiskDescriptor, LocalDiskDescriptor, MemoryDescriptor,  # noqa: F401
                               ReplicaDescriptor, ReplicaStatus, replica_descriptors)
from .store import Store

logger = logging.getLogger("weft.mooncake_store")

__all__ = ["MooncakeDistributedStore", "ReplicateConfig", "BufferHandle", "ReplicaDescriptor", "ReplicaStatus",
           "MemoryDescriptor", "Descriptor", "DiskDescriptor", "LocalDiskDescriptor", "load_config_from_env",
           "parse_size", "weft_settings"]

# Mooncake's ErrorCode values (mooncake-store/include/types.h) that these calls return.
OK = 0
ERR_INTERNAL = -1
ERR_NO_AVAILABLE_HANDLE = -200  # the pool is full
ERR_INVALID_PARAMS = -600
ERR_OBJECT_NOT_FOUND = -704
ERR_OBJECT_ALREADY_EXISTS = -705
ERR_OBJECT_HAS_LEASE = -706
ERR_LEASE_EXPIRED = -707
ERR_TRANSFER_FAIL = -800
ERR_RPC_FAIL = -900

_CODE_BY_NAME = {
    "POOL_FULL": ERR_NO_AVAILABLE_HANDLE,
    "INVALID_ARGUMENT": ERR_INVALID_PARAMS,
    "NOT_REGISTERED": ERR_INVALID_PARAMS,
    "OUT_OF_RANGE": ERR_INVALID_PARAMS,
    "INVALID_ADDRESS": ERR_INVALID_PARAMS,
    "MISMATCH": ERR_INVALID_PARAMS,
    "NOT_FOUND": ERR_OBJECT_NOT_FOUND,
    "ALREADY_EXISTS": ERR_OBJECT_ALREADY_EXISTS,
    "BUSY": ERR_OBJECT_HAS_LEASE,
    "TIMEOUT": ERR_RPC_FAIL,
    "PEER_DOWN": ERR_TRANSFER_FAIL,
    "IO": ERR_TRANSFER_FAIL,
    "UNAVAILABLE": ERR_RPC_FAIL,
}
# Outcomes a caller expects now and then: logged at debug, not as warnings.
_QUIET = frozenset({"NOT_FOUND", "ALREADY_EXISTS", "BUSY"})

# Mooncake's defaults of the dict form of setup.
DEFAULT_SEGMENT_SIZE = 16 << 20
DEFAULT_BUFFER_SIZE = 16 << 20
DEFAULT_PROTOCOL = "tcp"
DEFAULT_MASTER = "127.0.0.1:50051"
DEFAULT_HOSTNAME = "localhost"
DEFAULT_METADATA_SERVER = "P2PHANDSHAKE"


def error_code(err: BaseException, reading: bool = False) -> int:
    """Mooncake's code for a weft error. ``reading``: a get_into, where TIMEOUT means that the
    copy outlived its lease (LEASE_EXPIRED) rather than a master that did not answer."""
    name = getattr(err, "name", "")
    if reading and name == "TIMEOUT":
        return ERR_LEASE_EXPIRED
    if not isinstance(err, Error):
        return ERR_INVALID_PARAMS if isinstance(err, (TypeError, ValueError, OverflowError)) else ERR_INTERNAL
    return _CODE_BY_NAME.get(name, ERR_INTERNAL)


# -- sizes and configuration ------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Union[int, float, str]) -> int:
    """A size as Mooncake's configs write it: an int, or text such as "16MB", "1.5GB", "512KiB",
    "4096". Units are binary (MB = MiB), as in Mooncake. ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, (int, float)):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (e.g. 16MB, 1GB, 4096)")
    number, unit, _ = match.groups()
    return int(float(number) * _UNIT[unit.lower()])


def _split_host_port(address: str) -> Tuple[str, Optional[str]]:
    """("10.0.0.1", "50051") from "10.0.0.1:50051"; IPv6 in brackets; no port: None."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, port
    return address, None


def _unix_path(master: str) -> Optional[str]:
    for prefix in ("unix://", "unix:"):
        if master.startswith(prefix):
            return master[len(prefix):]
    return master if master.startswith("/") else None


def weft_settings(local_hostname: str, global_segment_size: Union[int, str], protocol: str, rdma_devices: str,
                  master_server_addr: str, ssd_offload_path: str = "") -> Tuple[Dict[str, str], str]:
    """weft's config overrides and join mode for Mooncake's setup arguments (the mapping in the
    module doc; ``ssd_offload_path`` only when SSD offload is enabled). ValueError for what weft
    cannot serve."""
    master = master_server_addr.strip()
    if re.match(r"^(redis|k8s)://", master):
        raise ValueError(f"master {master!r}: HA masters through redis or k8s are not supported by weft; give "
                         "etcd://host:port[;host:port] or ip:port")
    protocol = (protocol or DEFAULT_PROTOCOL).strip().lower()
    if protocol not in ("tcp", "rdma"):
        raise ValueError(f"protocol {protocol!r} is not 'tcp' or 'rdma'")
    settings = {"rank_size": str(parse_size(global_segment_size))}
    path = _unix_path(master)
    if master.startswith("etcd://"):
        # HA masters (mooncake_master --enable_ha): setup joins whichever leads, as it finds it
        # in etcd at join time.
        settings["coordinator"] = master
        mode = "join"
    elif path is not None:
        settings["coordinator"] = path
        mode = "auto"  # one machine: the first client hosts the master
    else:
        if master.startswith("tcp://"):
            master = master[len("tcp://"):]
        host, port = _split_host_port(master)
        if not host or not port or not port.isdigit():
            raise ValueError(f"master {master_server_addr!r} is not ip:port or a unix socket path")
        settings["coordinator"] = f"tcp://{master}"
        mode = "join"  # the master runs on its own (mooncake_master / weft store-master)
    if protocol == "rdma":
        settings["transport"] = "ucx"
    elif path is None:
        settings["transport"] = "tcp"
    host, _ = _split_host_port((local_hostname or "").strip())
    if host:
        settings["data_address"] = f"[{host}]:0" if ":" in host else f"{host}:0"
    if ssd_offload_path:
        settings["store_ssd_path"] = ssd_offload_path
    return settings, mode


def _config_from_dict(config: Mapping[str, Any]) -> Dict[str, str]:
    """Setup's dict form, every value stringified and Mooncake's defaults filled in. Both
    spellings of the master's key are read (master_server_addr, master_server_address)."""
    text = {str(k): str(v) for k, v in config.items() if v is not None}
    master = text.get("master_server_addr", text.get("master_server_address", DEFAULT_MASTER))
    return {
        "local_hostname": text.get("local_hostname", DEFAULT_HOSTNAME),
        "metadata_server": text.get("metadata_server", DEFAULT_METADATA_SERVER),
        "global_segment_size": text.get("global_segment_size", str(DEFAULT_SEGMENT_SIZE)),
        "local_buffer_size": text.get("local_buffer_size", str(DEFAULT_BUFFER_SIZE)),
        "protocol": text.get("protocol", DEFAULT_PROTOCOL),
        "rdma_devices": text.get("rdma_devices", text.get("device_name", "")),
        "master_server_addr": master,
        "tenant_id": text.get("tenant_id", "default"),
        "enable_ssd_offload": text.get("enable_ssd_offload", "false"),
        "ssd_offload_path": text.get("ssd_offload_path", ""),
    }


_ENV_KEYS = {  # setup's dict keys by environment variable (Mooncake's Python config loader)
    "MOONCAKE_LOCAL_HOSTNAME": "local_hostname",
    "MOONCAKE_TE_META_DATA_SERVER": "metadata_server",
    "MOONCAKE_GLOBAL_SEGMENT_SIZE": "global_segment_size",
    "MOONCAKE_LOCAL_BUFFER_SIZE": "local_buffer_size",
    "MOONCAKE_PROTOCOL": "protocol",
    "MOONCAKE_DEVICE": "device_name",
    "MOONCAKE_TENANT_ID": "tenant_id",
    "MOONCAKE_OFFLOAD_ENABLED": "enable_ssd_offload",
    "MOONCAKE_OFFLOAD_PATH": "ssd_offload_path",  # weft's addition: where the SSD tier lives
}


def load_config_from_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The configuration Mooncake's integrations read: the JSON file named by
    ``MOONCAKE_CONFIG_PATH`` (keys local_hostname, metadata_server, global_segment_size,
    local_buffer_size, protocol, device_name, master_server_address, tenant_id), else
    ``MOONCAKE_MASTER`` and the other ``MOONCAKE_*`` variables. Returns setup's dict form;
    ValueError when neither is set or the file cannot be read."""
    env = os.environ if environ is None else environ
    path = env.get("MOONCAKE_CONFIG_PATH")
    if path:
        try:
            with open(path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"MOONCAKE_CONFIG_PATH={path}: {e}") from e
        if not isinstance(config, dict):
            raise ValueError(f"MOONCAKE_CONFIG_PATH={path}: not a JSON object")
        return dict(config)
    if not env.get("MOONCAKE_MASTER"):
        raise ValueError("neither MOONCAKE_CONFIG_PATH nor MOONCAKE_MASTER is set")
    config: Dict[str, Any] = {"master_server_address": env["MOONCAKE_MASTER"]}
    for var, key in _ENV_KEYS.items():
        if env.get(var):
            config[key] = env[var]
    return config


class ReplicateConfig:
    """How a put places its object (Mooncake's ``ReplicateConfig``).

    Acted on: ``replica_num`` (copies on distinct peers, best effort, 1..8), ``with_soft_pin``,
    ``with_hard_pin``, and ``preferred_segment`` only as "this client" (weft places the first
    replica in the writer's own memory by default, which is what LMCache asks for with
    ``preferred_segment=get_hostname()``); another segment name is ignored. Kept but ignored:
    ``preferred_segments``, ``prefer_alloc_in_same_node``, ``nof_replica_num``,
    ``dfs_replica_num``, ``soft_pin_action``, ``soft_pin_ttl_ms`` (the master's soft-pin TTL
    applies), ``data_type``, ``group_ids``.
    """

    def __init__(self, replica_num: int = 1, with_soft_pin: bool = False, with_hard_pin: bool = False,
                 preferred_segment: str = "", **ignored: Any) -> None:
        self.replica_num = replica_num
        self.with_soft_pin = with_soft_pin
        self.with_hard_pin = with_hard_pin
        self.preferred_segment = preferred_segment
        self.preferred_segments: List[str] = list(ignored.pop("preferred_segments", []))
        self.prefer_alloc_in_same_node = bool(ignored.pop("prefer_alloc_in_same_node", False))
        for name, value in ignored.items():
            setattr(self, name, value)

    def place(self) -> Dict[str, Any]:
        """weft's placement keywords (weft.store.Store's put calls)."""
        return {"replicas": int(self.replica_num), "soft_pin": bool(self.with_soft_pin),
                "hard_pin": bool(self.with_hard_pin), "preferred_rank": -1}

    def __repr__(self) -> str:
        return (f"ReplicateConfig(replica_num={self.replica_num}, with_soft_pin={self.with_soft_pin}, "
                f"with_hard_pin={self.with_hard_pin}, preferred_segment={self.preferred_segment!r})")


class BufferHandle(bytearray):
    """A value read by ``get_buffer`` (Mooncake's ``BufferHandle``): its memory through the
    buffer protocol, ``ptr()`` (the address) and ``size()``. weft's copy of the value, owned by
    this object (Mooncake hands out a slice of its client buffer instead)."""

    def ptr(self) -> int:
        if not self:
            return 0
        return ctypes.addressof((ctypes.c_char * len(self)).from_buffer(self))

    def size(self) -> int:
        return len(self)


def _is_true(text: Any) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "on")


class MooncakeDistributedStore:
    """Mooncake's store client on weft (the module doc lists the conventions and the mapping).
    Every call returns Mooncake's ints (or bytes / lists as Mooncake does) and never raises."""

    def __init__(self) -> None:
        self._store: Optional[Store] = None
        self._hostname = ""

    # -- setup --------------------------------------------------------------------------------

    def setup(self, local_hostname: Any, metadata_server: str = DEFAULT_METADATA_SERVER,
              global_segment_size: Union[int, str] = DEFAULT_SEGMENT_SIZE,
              local_buffer_size: Union[int, str] = DEFAULT_BUFFER_SIZE, protocol: str = DEFAULT_PROTOCOL,
              rdma_devices: str = "", master_server_addr: str = DEFAULT_MASTER, engine: Any = None,
              enable_ssd_offload: bool = False, ssd_offload_path: str = "", tenant_id: str = "default",
              enable_client_http_server: bool = False, client_http_port: int = 9300) -> int:
        """``setup(local_hostname, metadata_server, global_segment_size, local_buffer_size,
        protocol, rdma_devices, master_server_addr, ...)`` or ``setup(config_dict)``. 0 on
        success; -600 for arguments weft cannot serve, -900 when the master does not answer."""
        if isinstance(local_hostname, Mapping):
            c = _config_from_dict(local_hostname)
            ssd_path = c["ssd_offload_path"] if _is_true(c["enable_ssd_offload"]) else ""
            return self._setup(c["local_hostname"], c["global_segment_size"], c["protocol"], c["rdma_devices"],
                               c["master_server_addr"], _is_true(c["enable_ssd_offload"]), ssd_path)
        return self._setup(str(local_hostname), global_segment_size, protocol, rdma_devices, master_server_addr,
                           enable_ssd_offload, ssd_offload_path if enable_ssd_offload else "")

    def setup_from_env(self, environ: Optional[Mapping[str, str]] = None) -> int:
        """setup from ``MOONCAKE_CONFIG_PATH`` or the ``MOONCAKE_*`` variables
        (:func:`load_config_from_env`)."""
        try:
            config = load_config_from_env(environ)
        except ValueError as e:
            logger.warning("setup_from_env: %s", e)
            return ERR_INVALID_PARAMS
        return self.setup(config)

    def _setup(self, local_hostname: str, segment_size: Union[int, str], protocol: str, rdma_devices: str,
               master: str, ssd_offload: bool, ssd_path: str) -> int:
        if self._store is not None:
            logger.warning("setup: this store is already set up (close() it first)")
            return ERR_INVALID_PARAMS
        if ssd_offload and not ssd_path:
            logger.warning("setup: SSD offload needs ssd_offload_path (weft's SSD tier directory); objects stay "
                           "in memory only")
        try:
            settings, mode = weft_settings(local_hostname, segment_size, protocol, rdma_devices, master, ssd_path)
        except ValueError as e:
            logger.warning("setup: %s", e)
            return ERR_INVALID_PARAMS
        if settings.get("transport") == "ucx" and rdma_devices:
            os.environ.setdefault("UCX_NET_DEVICES", rdma_devices)
        try:
            self._store = Store(mode=mode, **settings)
        except Exception as e:  # never raise, as Mooncake's setup does not
            logger.warning("setup: %s", e)
            return error_code(e)
        self._hostname = local_hostname
        return OK

    def setup_dummy(self, mem_pool_size: int, local_buffer_size: int, server_address: str) -> int:
        """Mooncake's thin client of ``mooncake_client``: weft has no such server (-1)."""
        logger.warning("setup_dummy: weft has no standalone client process; call setup() instead")
        return ERR_INTERNAL

    def close(self) -> int:
        store, self._store = self._store, None
        if store is None:
            return OK
        return self._call("close", store.close, lambda _: OK)

    def health_check(self) -> int:
        """0 OK, 1 not set up, 2 the master does not answer."""
        if self._store is None:
            return 1
        try:
            self._store.health()
            return 0
        except Error:
            return 2

    def get_hostname(self) -> str:
        return self._hostname

    @property
    def weft_store(self) -> Optional[Store]:
        """The :class:`weft.store.Store` underneath (None before setup): weft's typed API."""
        return self._store

    # -- writes -------------------------------------------------------------------------------

    def put(self, key: str, value: Any, config: Optional[ReplicateConfig] = None) -> int:
        """0, also when the key exists (the stored value stays: put-if-absent)."""
        return self._write("put", lambda s: s.put(key, value, **_place(config)))

    def upsert(self, key: str, value: Any, config: Optional[ReplicateConfig] = None) -> int:
        return self._write("upsert", lambda s: s.upsert(key, value, **_place(config)))

    def put_parts(self, key: str, *parts: Any, config: Optional[ReplicateConfig] = None) -> int:
        return self._write("put_parts", lambda s: s.put_parts(key, parts, **_place(config)))

    def upsert_parts(self, key: str, *parts: Any, config: Optional[ReplicateConfig] = None) -> int:
        return self._write("upsert_parts", lambda s: s.put_parts(key, parts, upsert=True, **_place(config)))

    def put_batch(self, keys: Sequence[str], values: Sequence[Any], config: Optional[ReplicateConfig] = None) -> int:
        """One code for the batch: 0 when every key is stored (existing ones included), else the
        first failure's."""
        return self._batch_code("put_batch", keys, values, lambda s: s.put_batch(keys, values, **_place(config)))

    def upsert_batch(self, keys: Sequence[str], values: Sequence[Any],
                     config: Optional[ReplicateConfig] = None) -> int:
        return self._batch_code("upsert_batch", keys, values,
                                lambda s: s.put_batch(keys, values, upsert=True, **_place(config)))

    def put_from(self, key: str, buffer_ptr: Any, size: int, config: Optional[ReplicateConfig] = None) -> int:
        return self._write("put_from", lambda s: s.put_from(key, buffer_ptr, size, **_place(config)))

    def upsert_from(self, key: str, buffer_ptr: Any, size: int, config: Optional[ReplicateConfig] = None) -> int:
        return self._write("upsert_from", lambda s: s.put_from(key, buffer_ptr, size, upsert=True, **_place(config)))

    def batch_put_from(self, keys: Sequence[str], buffer_ptrs: Sequence[Any], sizes: Sequence[int],
                       config: Optional[ReplicateConfig] = None) -> List[int]:
        return self._batch_list("batch_put_from", keys, [buffer_ptrs, sizes],
                                lambda s: s.batch_put_from(keys, buffer_ptrs, sizes, **_place(config)), _put_code)

    def batch_upsert_from(self, keys: Sequence[str], buffer_ptrs: Sequence[Any], sizes: Sequence[int],
                          config: Optional[ReplicateConfig] = None) -> List[int]:
        return self._batch_list("batch_upsert_from", keys, [buffer_ptrs, sizes],
                                lambda s: s.batch_put_from(keys, buffer_ptrs, sizes, upsert=True, **_place(config)),
                                lambda r: _put_code(r, absent_ok=False))

    def batch_put_from_multi_buffers(self, keys: Sequence[str], all_buffer_ptrs: Sequence[Sequence[Any]],
                                     all_sizes: Sequence[Sequence[int]],
                                     config: Optional[ReplicateConfig] = None) -> List[int]:
        """Each key's value from its registered buffers laid end to end: one int per key."""
        return self._per_key("batch_put_from_multi_buffers", keys, all_buffer_ptrs, all_sizes,
                             lambda s, k, p, n: _put_code(_run_put("batch_put_from_multi_buffers",
                                                                   lambda st: st.put_from_parts(k, p, n, **_place(config)),
                                                                   s)))

    def put_from_with_metadata(self, key: str, buffer_ptr: Any, metadata_buffer_ptr: Any, size: int,
                               metadata_size: int, config: Optional[ReplicateConfig] = None) -> int:
        """One object of ``metadata_size`` bytes from the metadata buffer followed by ``size``
        bytes from the data buffer, both registered (zero-copy). Either part may be empty, not
        both: -600 then (weft stores no empty value; Mooncake returns 0 and stores nothing)."""
        parts = [(p, n) for p, n in ((metadata_buffer_ptr, metadata_size), (buffer_ptr, size)) if n != 0]
        if not parts:
            logger.warning("put_from_with_metadata: '%s' has neither metadata nor data", key)
            return ERR_INVALID_PARAMS
        ptrs, sizes = [p for p, _ in parts], [n for _, n in parts]
        return self._write("put_from_with_metadata", lambda s: s.put_from_parts(key, ptrs, sizes, **_place(config)))

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        """The value, or b"" on a miss or any failure."""
        return self._call("get", lambda: self._open().get(key), lambda v: v, failed=b"")

    def get_batch(self, keys: Sequence[str]) -> List[bytes]:
        """One entry per key: its value, or b"" on a miss or failure (one master call)."""
        try:
            keys = list(keys)
            results = self._open().get_batch(keys)
        except _NotSetUp:
            logger.warning("get_batch: the store is not set up (call setup() first)")
            return [b""] * len(keys) if isinstance(keys, list) else []
        except Exception as e:  # never raise, as Mooncake's calls do not
            _log_failure("get_batch", e)
            return [b""] * len(keys) if isinstance(keys, list) else []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                _log_failure(f"get_batch[{i}]", r)
        return [b"" if isinstance(r, BaseException) else r for r in results]

    def get_buffer(self, key: str) -> Optional[BufferHandle]:
        """The value in a :class:`BufferHandle`, or None on a miss or failure."""
        value = self.get(key)
        return BufferHandle(value) if value else None

    def batch_get_buffer(self, keys: Sequence[str]) -> List[Optional[BufferHandle]]:
        return [BufferHandle(v) if v else None for v in self.get_batch(keys)]

    def get_into(self, key: str, buffer_ptr: Any, size: int) -> int:
        """Bytes read into a registered buffer, or a negative code (-600 for an unregistered
        buffer or one smaller than the value, -704 for a miss, -707 when the copy outlived its
        lease)."""
        return self._call("get_into", lambda: self._open().get_into(key, buffer_ptr, size), int, reading=True)

    def batch_get_into(self, keys: Sequence[str], buffer_ptrs: Sequence[Any], sizes: Sequence[int]) -> List[int]:
        return self._batch_list("batch_get_into", keys, [buffer_ptrs, sizes],
                                lambda s: s.batch_get_into(keys, buffer_ptrs, sizes),
                                lambda r: error_code(r, reading=True) if isinstance(r, BaseException) else int(r))

    def batch_get_into_multi_buffers(self, keys: Sequence[str], all_buffer_ptrs: Sequence[Sequence[Any]],
                                     all_sizes: Sequence[Sequence[int]], prefer_same_node: bool = True) -> List[int]:
        """Each key's value spread over its registered buffers in order: bytes read per key, or a
        negative code. ``prefer_same_node`` is accepted and ignored (weft reads the replica its
        routing prefers)."""
        return self._per_key("batch_get_into_multi_buffers", keys, all_buffer_ptrs, all_sizes,
                             lambda s, k, p, n: int(s.get_into_parts(k, p, n)), reading=True)

    def get_into_ranges(self, buffer_ptrs: Sequence[Any], all_keys: Sequence[Sequence[str]],
                        all_dst_offsets: Sequence[Sequence[Sequence[int]]],
                        all_src_offsets: Sequence[Sequence[Sequence[int]]],
                        all_sizes: Sequence[Sequence[Sequence[int]]]) -> List[List[List[int]]]:
        """Byte ranges of values into registered buffers, one master call for the distinct keys:
        ``results[i][j][k]``, the bytes of fragment k of key j into buffer i, or a negative code
        (-600 for a malformed shape, an unregistered destination or a range past the value's
        end; -704 for a missing key). weft.mooncake_ranges describes the shapes."""
        try:
            p = mooncake_ranges.plan(buffer_ptrs, all_keys, all_dst_offsets, all_src_offsets, all_sizes,
                                     ERR_INVALID_PARAMS)
        except TypeError as e:
            _log_failure("get_into_ranges", e)
            return []
        if not p.ranges:
            return p.results
        try:
            answers = self._open().get_ranges(p.keys, p.ranges)
        except _NotSetUp:
            logger.warning("get_into_ranges: the store is not set up (call setup() first)")
            answers = [_NotSetUp()] * len(p.ranges)
        except Exception as e:  # never raise, as Mooncake's calls do not
            _log_failure("get_into_ranges", e)
            answers = [e] * len(p.ranges)
        for n, answer in enumerate(answers):
            if isinstance(answer, BaseException) and not isinstance(answer, _NotSetUp):
                _log_failure(f"get_into_ranges[{p.at[n]}]", answer)
        return mooncake_ranges.fill(p, answers, _range_code)

    def get_replica_desc(self, key: str) -> List[ReplicaDescriptor]:
        """Where the object's replicas are (weft.mooncake_replica says what each field holds);
        [] for a missing key and on any failure, as Mooncake answers. No lease is taken."""
        return self._call("get_replica_desc", lambda: replica_descriptors(self._open().describe(key)), lambda d: d,
                          failed=[])

    def batch_get_replica_desc(self, keys: Sequence[str]) -> Dict[str, List[ReplicaDescriptor]]:
        """{key: descriptors} for the keys found; a missing or bad key, or one that failed, is
        left out (Mooncake's map), and a failure of the whole call gives {}."""
        try:
            keys = list(keys)
            results = self._open().batch_describe(keys)
        except _NotSetUp:
            logger.warning("batch_get_replica_desc: the store is not set up (call setup() first)")
            return {}
        except Exception as e:  # never raise, as Mooncake's calls do not
            _log_failure("batch_get_replica_desc", e)
            return {}
        found = {}
        for key, r in zip(keys, results):
            if isinstance(r, BaseException):
                _log_failure(f"batch_get_replica_desc[{key!r}]", r)
            else:
                found[key] = replica_descriptors(r)
        return found

    def is_exist(self, key: str) -> int:
        """1 stored, 0 missing, -1 when it cannot be told."""
        return self._call("is_exist", lambda: self._open().exists(key), lambda b: 1 if b else 0, failed=-1)

    def batch_is_exist(self, keys: Sequence[str]) -> List[int]:
        return self._batch_list("batch_is_exist", keys, [], lambda s: s.batch_exists(keys),
                                lambda r: -1 if isinstance(r, BaseException) else (1 if r else 0), failed=-1)

    def get_size(self, key: str) -> int:
        return self._call("get_size", lambda: self._open().size(key), int)

    # -- zero-copy buffers --------------------------------------------------------------------

    def register_buffer(self, buffer_ptr: Any, size: int) -> int:
        return self._call("register_buffer", lambda: self._open().register_buffer(buffer_ptr, size), lambda _: OK)

    def unregister_buffer(self, buffer_ptr: Any) -> int:
        return self._call("unregister_buffer", lambda: self._open().unregister_buffer(buffer_ptr), lambda _: OK)

    # -- removal ------------------------------------------------------------------------------

    def remove(self, key: str, force: bool = False) -> int:
        return self._call("remove", lambda: self._open().remove(key, force), lambda _: OK)

    def batch_remove(self, keys: Sequence[str], force: bool = False) -> List[int]:
        return self._batch_list("batch_remove", keys, [], lambda s: s.batch_remove(keys, force),
                                lambda r: error_code(r) if r is not None else OK)

    def remove_by_regex(self, regex: str, force: bool = False) -> int:
        """How many objects went, or a negative code (-600 for a pattern that does not compile)."""
        return self._call("remove_by_regex", lambda: self._open().remove_by_regex(regex, force), int)

    def remove_all(self, force: bool = False) -> int:
        return self._call("remove_all", lambda: self._open().remove_all(force), int)

    # -- plumbing -----------------------------------------------------------------------------

    def _open(self) -> Store:
        if self._store is None:
            raise _NotSetUp()
        return self._store

    def _call(self, what: str, fn: Callable[[], Any], convert: Callable[[Any], Any], failed: Any = None,
              reading: bool = False) -> Any:
        """Runs ``fn``; its result through ``convert``, or ``failed`` (default: Mooncake's code of
        the error) when it raises."""
        try:
            return convert(fn())
        except _NotSetUp:
            logger.warning("%s: the store is not set up (call setup() first)", what)
            return ERR_INTERNAL if failed is None else failed
        except Exception as e:  # never raise, as Mooncake's calls do not
            _log_failure(what, e)
            return error_code(e, reading) if failed is None else failed

    def _write(self, what: str, fn: Callable[[Store], None]) -> int:
        """A put's code; for a put (not an upsert) an existing key is success."""
        absent_ok = not what.startswith("upsert")
        return self._call(what, lambda: _put_code(_run_put(what, fn, self._open()), absent_ok), lambda code: code)

    def _batch_list(self, what: str, keys: Sequence[Any], others: List[Sequence[Any]],
                    fn: Callable[[Store], List[Any]], convert: Callable[[Any], int], failed: Optional[int] = None) -> List[int]:
        """One int per key. A failure of the whole call (mismatched lengths, not set up) gives
        every key that call's code, as Mooncake fills its result list; keys that are no list at
        all give an empty one."""
        try:
            keys = list(keys)
        except TypeError as e:
            _log_failure(what, e)
            return []
        try:
            lengths = [len(other) for other in others]
            if any(n != len(keys) for n in lengths):
                raise _Mismatched(f"{len(keys)} keys but lists of {lengths}")
            results = fn(self._open())
        except _NotSetUp:
            logger.warning("%s: the store is not set up (call setup() first)", what)
            return [ERR_INTERNAL if failed is None else failed] * len(keys)
        except Exception as e:
            _log_failure(what, e)
            code = ERR_INVALID_PARAMS if isinstance(e, _Mismatched) else error_code(e)
            return [code if failed is None else failed] * len(keys)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                _log_failure(f"{what}[{i}]", r)
        return [convert(r) for r in results]

    def _per_key(self, what: str, keys: Sequence[Any], all_ptrs: Sequence[Any], all_sizes: Sequence[Any],
                 call: Callable[[Store, Any, Any, Any], int], reading: bool = False) -> List[int]:
        """``call(store, key, ptrs, sizes)`` for each key, its error as that key's code."""
        try:
            keys, all_ptrs, all_sizes = list(keys), list(all_ptrs), list(all_sizes)
        except TypeError as e:
            _log_failure(what, e)
            return []
        if not len(keys) == len(all_ptrs) == len(all_sizes):
            logger.warning("%s: %d keys but %d buffer lists and %d size lists", what, len(keys), len(all_ptrs),
                           len(all_sizes))
            return [ERR_INVALID_PARAMS] * len(keys)
        codes = []
        for i, (key, ptrs, sizes) in enumerate(zip(keys, all_ptrs, all_sizes)):
            codes.append(self._call(f"{what}[{i}]", lambda: call(self._open(), key, ptrs, sizes), int,
                                    reading=reading))
        return codes

    def _batch_code(self, what: str, keys: Sequence[Any], values: Sequence[Any],
                    fn: Callable[[Store], List[Any]]) -> int:
        absent_ok = not what.startswith("upsert")
        codes = self._batch_list(what, keys, [values], fn, lambda r: _put_code(r, absent_ok))
        return next((c for c in codes if c != OK), OK)


class _NotSetUp(Exception):
    pass


class _Mismatched(ValueError):
    pass


def _place(config: Optional[ReplicateConfig]) -> Dict[str, Any]:
    return (config or ReplicateConfig()).place()


def _run_put(what: str, fn: Callable[[Store], None], store: Store) -> Optional[BaseException]:
    """None when the put stored its value, else its error (returned, so that ALREADY_EXISTS can
    become Mooncake's 0)."""
    try:
        fn(store)
        return None
    except Error as e:
        _log_failure(what, e)
        return e


def _put_code(result: Optional[BaseException], absent_ok: bool = True) -> int:
    """A put's code: an existing key is success, the first value kept (Mooncake's put), unless
    ``absent_ok`` is False (an upsert that found a put of the key still pending)."""
    if result is None or (absent_ok and getattr(result, "name", "") == "ALREADY_EXISTS"):
        return OK
    return error_code(result)


def _range_code(answer: Any) -> int:
    """A ranged read's result: its byte count, or Mooncake's code of its error."""
    if isinstance(answer, _NotSetUp):
        return ERR_INTERNAL
    return error_code(answer, reading=True) if isinstance(answer, BaseException) else int(answer)


def _log_failure(what: str, err: BaseException) -> None:
    if getattr(err, "name", "") in _QUIET:
        logger.debug("%s: %s", what, err)
    else:
        logger.warning("%s: %s", what, err)
