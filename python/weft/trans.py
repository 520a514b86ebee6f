"""weft.TransferEngine: point-to-point one-sided READ and WRITE between registered buffers of
named peers (the transfer engine, "Trans"; include/weft/transfer_engine.h).

    import weft
    te = weft.TransferEngine(local_name="10.0.0.1", metadata="P2PHANDSHAKE",
                             cluster_secret="s3cret")          # or env WEFT_CLUSTER_SECRET
    buf = np.zeros(1 << 20, np.uint8)
    te.register_memory(buf)                                    # peers may now read/write buf
    peer = te.open_segment("10.0.0.2:15123")
    remote = te.remote_buffers(peer)[0].addr
    te.transfer([("write", buf, peer, remote)])                # raises the first failure
    batch = te.submit([("read", buf, peer, remote, 4096)], notify=("done", b"7"))
    te.wait(batch); te.free_batch(batch)

This is weft's native API: errors raise :class:`weft.Error` subclasses (one per stable code), and
every blocking call releases the GIL. For Mooncake's int-returning API see :mod:`weft.mooncake`.

Device memory (docs/trans.md, "Device memory from Python"): :meth:`TransferEngine.register_memory`
takes a torch CUDA tensor, an object with ``__cuda_array_interface__`` or a DLPack tensor on a CUDA
device (its location "cuda:N" is taken from the object), or an int address with
``location="cuda:N"`` (or "*": the core asks the driver what the address is). weft never imports
torch. Where no GPU is usable, registering device memory raises :class:`weft.NotSupported` with
the reason (:func:`device_status`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from . import _ucx, _weft
from . import InvalidArgument, NotSupported

Memory = Any  # an int address, or an object exposing its memory (see the weft module doc)
Target = Union[int, str]  # a segment handle from open_segment(), or a segment name
Request = Sequence[Any]  # (opcode, local, target, remote_addr[, length])

READ = "read"
WRITE = "write"


# DLPack device types (dlpack.h): where __dlpack_device__() says the memory is.
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_UNKNOWN = -1  # on a CUDA device whose ordinal the object does not say


def device_status() -> Tuple[bool, str]:
    """(True, "") when this build of weft has CUDA and a GPU is usable in this process, else
    (False, why not): the build has no CUDA, no driver, no device, a driver older than the
    runtime. Asked of the core (the CUDA runtime weft links), never of torch."""
    ok, why = _weft.device_status()
    return bool(ok), str(why)


def require_device(what: str) -> None:
    """Raises :class:`weft.NotSupported` naming ``what`` and why no GPU is usable, if none is."""
    ok, why = device_status()
    if not ok:
        raise NotSupported(f"{what}: no GPU is usable here: {why}")


def pointer_device(addr: int) -> int:
    """The CUDA device that the memory at ``addr`` belongs to, or -1 (host memory, an unknown
    address, or no usable GPU). cudaPointerGetAttributes through the core."""
    return int(_weft.pointer_device(int(addr)))


def stream_handle(stream: Any) -> int:
    """A CUDA stream as the integer cudaStream_t: None or 0 (the legacy default stream), an int,
    an object with ``cuda_stream`` (torch.cuda.Stream) or ``__cuda_stream__()`` (the CUDA
    Python stream protocol). TypeError for anything else, :class:`weft.InvalidArgument` for a
    negative number."""
    if stream is None:
        return 0
    value: Any = stream
    if isinstance(stream, bool):
        raise TypeError("stream: a bool is not a CUDA stream")
    if not isinstance(stream, int):
        if hasattr(stream, "cuda_stream"):
            value = stream.cuda_stream
        elif hasattr(stream, "__cuda_stream__"):
            proto = stream.__cuda_stream__()
            value = proto[1] if isinstance(proto, tuple) and len(proto) == 2 else proto
        else:
            raise TypeError(f"stream must be a cudaStream_t as an int or an object with a cuda_stream attribute "
                            f"(torch.cuda.Stream), not {type(stream).__name__}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"stream: {type(stream).__name__}'s stream handle is {type(value).__name__}, not an int")
    if value < 0 or value >= 1 << 64:
        raise InvalidArgument(f"stream {value} is not a cudaStream_t (it must be a non-negative 64-bit value)")
    return int(value)


def _cai_address(iface: Any) -> int:
    try:
        return int(iface["data"][0])
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise InvalidArgument(f"memory: the __cuda_array_interface__ has no data pointer: {e}") from None


def _memory_device(memory: Any) -> Optional[int]:
    """Where an object's memory is: None for host memory (and for ints, which say nothing), a
    device ordinal, or _DEVICE_UNKNOWN for a CUDA device the object does not number. Checked in
    the order the native side resolves objects (ext_common.h: Resolve)."""
    if isinstance(memory, (bool, int)):
        return None
    try:
        memoryview(memory).release()
        return None  # the buffer protocol: host memory
    except TypeError:
        pass
    if all(hasattr(memory, a) for a in ("data_ptr", "element_size", "numel")):  # torch.Tensor and look-alikes
        device = getattr(memory, "device", None)
        kind = getattr(device, "type", device)
        if kind is None or kind == "cpu":
            return None
        if kind != "cuda":
            raise NotSupported(f"memory on device {kind!r}: weft reaches CUDA devices and host memory only")
        index = getattr(device, "index", None)
        return _DEVICE_UNKNOWN if index is None else int(index)
    if hasattr(memory, "__cuda_array_interface__"):
        d = pointer_device(_cai_address(memory.__cuda_array_interface__))
        return d if d >= 0 else _DEVICE_UNKNOWN  # the core then checks that it is device memory
    if hasattr(memory, "__array_interface__"):
        return None
    if hasattr(memory, "__dlpack_device__"):
        kind, index = memory.__dlpack_device__()
        kind = int(kind)
        if kind in (_DL_CPU, _DL_CUDA_HOST):  # pinned host memory is host memory
            return None
        if kind in (_DL_CUDA, _DL_CUDA_MANAGED):
            return int(index)
        raise NotSupported(f"memory on DLPack device type {kind}: weft reaches CUDA devices and host memory only")
    return None  # the native side names what it cannot use


def _is_any(location: Optional[str]) -> bool:
    return location is None or location in ("", "*")


def location_for(memory: Any, location: Optional[str]) -> str:
    """The location to register ``memory`` with: "*" resolved to "cuda:N" for device memory (from
    the object, or from the driver for an int address), a given location checked against the
    object's device. Raises :class:`weft.NotSupported` for device memory where no GPU is usable."""
    device = _memory_device(memory)
    says_device = not _is_any(location) and str(location).startswith("cuda")
    if device is None:
        if says_device:
            require_device(f"register memory as {location!r}")
            return str(location)
        if _is_any(location) and isinstance(memory, int) and not isinstance(memory, bool):
            d = pointer_device(memory)  # -1 without a GPU: the address is taken as host memory
            return f"cuda:{d}" if d >= 0 else "*"
        return "*" if _is_any(location) else str(location)
    where = "a CUDA device" if device == _DEVICE_UNKNOWN else f"cuda:{device}"
    require_device(f"register device memory ({type(memory).__name__} on {where})")
    if not _is_any(location):
        named = str(location)
        if not says_device or (device != _DEVICE_UNKNOWN and named not in ("cuda", f"cuda:{device}")):
            raise InvalidArgument(f"register memory: the {type(memory).__name__} is on {where} but location is "
                                  f"{location!r}: pass location='*' (or {where!r})")
        return named
    if device == _DEVICE_UNKNOWN:
        return "cuda"  # a device buffer; the core checks the address is one
    return f"cuda:{device}"


class BufferInfo(NamedTuple):
    """A registered buffer as peers see it."""

    addr: int
    length: int
    location: str
    remote_accessible: bool


class Notification(NamedTuple):
    """A notification received from a peer (name chosen by the sender, message bytes)."""

    name: str
    message: bytes


class BatchStatus(NamedTuple):
    """The state of a submitted batch: per request "pending" / "completed" / "failed" /
    "timeout", and None or the :class:`weft.Error` of each; ``done`` once every request
    finished; ``notification`` None, or why the batch's notification was not delivered."""

    states: List[str]
    results: List[Optional[Exception]]
    done: bool
    notification: Optional[Exception] = None

    @property
    def ok(self) -> bool:
        """Done, and every request completed."""
        return self.done and all(r is None for r in self.results)


class TransferEngine:
    """One peer of the transfer engine: owns the segment named :attr:`name`, serves peers' reads
    and writes into its registered buffers, and reads and writes theirs.

    Options (keywords; see include/weft/transfer_engine.h for the full meaning):

    - ``local_name``: this engine's host ("10.0.0.1") or name; in p2p mode the name becomes
      "<host>:<rpc_port>".
    - ``metadata``: "P2PHANDSHAKE" (no directory, the default), "http://h:p/metadata" (Mooncake's
      HTTP metadata protocol, e.g. :class:`weft.MetadataServer` or `weft meta`),
      "embedded://h:p", "etcd://h:p" or a bare "h:p" (etcd).
    - ``protocol``: "tcp", or "rdma": the ucx transport (docs/ucx.md) joins ``transports``, with
      ``device_name`` ("mlx5_0,mlx5_1": UCX_NET_DEVICES) choosing the NICs. Where UCX cannot run,
      or for another protocol, :class:`weft.NotSupported` unless ``protocol_fallback`` is "tcp"
      (or env WEFT_PROTOCOL_FALLBACK=tcp), which uses tcp and logs why once.
    - ``transports``: "auto" (every transport this build has: shm for peers on this host whose
      buffers came from :meth:`allocate_managed_buffer`, tcp for the rest), or names in order of
      preference ("tcp", "shm,tcp", "cma,tcp"); :meth:`route` shows the choice.
    - ``rpc_port`` (0: any free), ``bind_host`` (the data server's, default every interface),
      ``rpc_bind_host`` (p2p's descriptor endpoint, plain HTTP: default only the advertised host;
      "0.0.0.0" for every interface), ``advertise_host`` (the address peers use for
      the data server; default the host part of ``local_name``), ``lanes`` (TCP connections per peer),
      ``server_threads``, ``worker_threads``, ``transfer_timeout_ms`` (a batch's deadline when
      none is given), ``metadata_timeout_ms``, ``descriptor_lease_ms``, ``metadata_prefix``.
    - ``cluster_secret``: every peer must share it (default: env WEFT_CLUSTER_SECRET). Without
      one, :class:`weft.Unauthenticated` unless ``allow_unauthenticated=True``.

    Closed by :meth:`close`, by leaving a ``with`` block, or when collected; closing waits for
    running batches and withdraws the engine's descriptor.
    """

    def __init__(self, local_name: str = "127.0.0.1", metadata: str = "P2PHANDSHAKE", protocol: str = "tcp",
                 *, cluster_secret: Optional[str] = None, allow_unauthenticated: bool = False,
                 protocol_fallback: Optional[str] = None, **options: Any) -> None:
        if cluster_secret is None:
            cluster_secret = os.environ.get("WEFT_CLUSTER_SECRET", "")
        if protocol_fallback is None:
            protocol_fallback = os.environ.get("WEFT_PROTOCOL_FALLBACK", "")
        if _ucx.wants_ucx(protocol, str(options.get("transports", ""))):
            _ucx.prepare()
        opts = dict(options, local_name=local_name, metadata=metadata, protocol=protocol,
                    cluster_secret=cluster_secret, allow_unauthenticated=allow_unauthenticated,
                    protocol_fallback=protocol_fallback)
        self._native = _weft.TransferEngine(opts)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the engine (idempotent): waits for running batches, withdraws the descriptor,
        releases every registered object. Later calls raise :class:`weft.Cancelled`."""
        self._native.close()

    def __enter__(self) -> "TransferEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def name(self) -> str:
        """This engine's segment name, which peers open ("host:rpc_port" in p2p mode)."""
        return self._native.name

    @property
    def rpc_port(self) -> int:
        """p2p: the descriptor endpoint's port (the name's port); otherwise the data port."""
        return self._native.rpc_port

    @property
    def data_port(self) -> int:
        return self._native.data_port

    @property
    def protocol(self) -> str:
        """The path in use ("tcp")."""
        return self._native.protocol

    @property
    def native_handle(self) -> int:
        """The address of the C++ weft::trans::TransferEngine (for C++ extensions)."""
        return self._native.native_handle

    def metrics_text(self) -> str:
        """The engine's metrics in Prometheus text format."""
        return self._native.metrics_text()

    # -- memory -----------------------------------------------------------------------------

    def register_memory(self, memory: Memory, length: Optional[int] = None, location: str = "*",
                        remote_accessible: bool = True) -> int:
        """Registers memory (an int address with ``length``, or an object exposing its memory,
        which is then kept alive until unregistered) and returns its address. Peers may read and
        write it when ``remote_accessible``.

        Device memory: a torch CUDA tensor, a ``__cuda_array_interface__`` object or a DLPack
        tensor on a CUDA device is registered as "cuda:N" (its own device) when ``location`` is
        "*"; an int address is asked of the driver (``location="cuda:N"`` says it outright).
        Memory from torch's caching allocator is a slice of a larger cudaMalloc block: peers on
        this host map the whole block by CUDA IPC and address the slice inside it.

        :class:`weft.AlreadyExists` when it overlaps a registered buffer;
        :class:`weft.NotSupported` for device memory where no GPU is usable (the reason says
        why); :class:`weft.InvalidArgument` when ``location`` contradicts the object's device or
        names a device for host memory."""
        location = location_for(memory, location)
        return self._native.register_memory(memory, length, location, remote_accessible)

    def unregister_memory(self, memory: Memory) -> None:
        """Unregisters the buffer starting at ``memory``'s address (:class:`weft.NotFound`
        otherwise); returns once no peer request uses it."""
        self._native.unregister_memory(memory)

    def allocate_managed_buffer(self, length: int) -> int:
        """Allocates and registers ``length`` bytes of host memory that peers on this host map
        (a memfd: the shm path, no copy through the kernel or a socket) and returns its address.
        Freed by :meth:`free_managed_buffer` or when the engine closes."""
        return self._native.allocate_managed_buffer(length)

    def free_managed_buffer(self, addr: int) -> None:
        """Unregisters and unmaps a buffer from :meth:`allocate_managed_buffer`
        (:class:`weft.NotFound` otherwise)."""
        self._native.free_managed_buffer(addr)

    def route(self, request: Request) -> str:
        """The path one request (as given to :meth:`transfer`) would take and why, e.g.
        ``"LH -> GH (same node) via shm: ..."``; cheaper paths passed over are named with the
        reason."""
        return self._native.route(request)

    def local_buffers(self) -> List[BufferInfo]:
        """This engine's registered buffers, by address."""
        return [BufferInfo(*b) for b in self._native.local_buffers()]

    # -- peers ------------------------------------------------------------------------------

    def open_segment(self, name: str) -> int:
        """Resolves a peer by name and returns its segment handle (the same name gives the same
        handle). :class:`weft.NotFound` / :class:`weft.Unavailable` when it cannot be found."""
        return self._native.open_segment(name)

    def close_segment(self, handle: int) -> None:
        """Forgets a handle (its descriptor is fetched again by the next open_segment)."""
        self._native.close_segment(handle)

    def remote_buffers(self, target: Target, refresh: bool = False) -> List[BufferInfo]:
        """The peer's remote-accessible buffers, by address (fetched again when ``refresh``)."""
        return [BufferInfo(*b) for b in self._native.remote_buffers(target, refresh)]

    def probe(self, name: str, timeout: Optional[float] = None) -> None:
        """Returns when the named peer answers on its data endpoint; raises why otherwise."""
        self._native.probe(name, timeout)

    # -- transfers --------------------------------------------------------------------------

    def submit(self, requests: Iterable[Request], notify: Optional[Tuple[str, Union[str, bytes]]] = None,
               timeout: Optional[float] = None) -> int:
        """Queues a batch and returns its id at once. A request is ``(opcode, local, target,
        remote_addr[, length])``: opcode "read"/"write" (or 0/1), local an address inside a
        registered buffer or a buffer object (then length defaults to its size; the object is
        kept until :meth:`free_batch`), target a handle or a segment name. ``notify=(name,
        message)`` is delivered to each target after its requests completed. ``timeout`` in
        seconds is the batch's deadline (None: the engine's transfer_timeout_ms).
        :class:`weft.InvalidArgument` for a malformed batch (nothing is started then)."""
        return self._native.submit(requests, notify, timeout)

    def submit_spans(self, opcode: Union[str, int], target: Target, locals: Sequence[int], remotes: Sequence[int],
                     lengths: Sequence[int], notify: Optional[Tuple[str, Union[str, bytes]]] = None,
                     timeout: Optional[float] = None) -> int:
        """:meth:`submit` of requests that share one opcode and target, given as three sequences of
        equal length: local addresses (inside registered buffers), remote addresses, lengths. Arrays
        of 8-byte integers (``array('Q')``, numpy uint64/int64) are taken with one copy instead of
        a Python int per request, which is what makes a batch of thousands of blocks cheap."""
        return self._native.submit_lists(opcode, target, locals, remotes, lengths, notify, timeout)

    def poll(self, batch: int) -> BatchStatus:
        """The batch's state now (:class:`weft.NotFound` for an unknown id)."""
        return BatchStatus(*self._native.poll(batch))

    def poll_done(self, batch: int) -> Optional[bool]:
        """None while the batch runs; then True when every request completed (``poll(batch).ok``),
        False when one failed (:meth:`poll` says which and why). Cheap for large batches: no object
        per request (:class:`weft.NotFound` for an unknown id)."""
        return self._native.poll_done(batch)

    def wait(self, batch: int, timeout: Optional[float] = None) -> BatchStatus:
        """Blocks until the batch finished; :class:`weft.Timeout` if not within ``timeout``
        seconds (None: until its deadline). Per-request failures are in the result."""
        return BatchStatus(*self._native.wait(batch, timeout))

    def free_batch(self, batch: int) -> None:
        """Forgets a finished batch (releasing its buffer objects). Raises while it still runs
        (BUSY) or for an unknown id (:class:`weft.NotFound`)."""
        self._native.free_batch(batch)

    def transfer(self, requests: Iterable[Request], notify: Optional[Tuple[str, Union[str, bytes]]] = None,
                 timeout: Optional[float] = None, check: bool = True) -> List[Optional[Exception]]:
        """Submit + wait + free: returns one result per request (None or the error). With
        ``check`` (the default) a failure raises the first request's error, whose ``results``
        attribute holds the whole list."""
        return self._native.transfer(requests, notify, timeout, check)

    def read(self, target: Target, remote_addr: int, local: Memory, length: Optional[int] = None) -> None:
        """Reads into ``local`` (registered) from the peer's ``remote_addr``."""
        self._native.transfer([(READ, local, target, remote_addr, length)], None, None, True)

    def write(self, target: Target, remote_addr: int, local: Memory, length: Optional[int] = None) -> None:
        """Writes ``local`` (registered) to the peer's ``remote_addr``."""
        self._native.transfer([(WRITE, local, target, remote_addr, length)], None, None, True)

    # -- notifications ----------------------------------------------------------------------

    def notify(self, target: Target, name: str, message: Union[str, bytes] = b"",
               timeout: Optional[float] = None) -> None:
        """Sends a notification alone; :class:`weft.PeerDown` when the peer cannot be reached."""
        self._native.notify(target, (name, message), timeout)

    def take_notifications(self) -> List[Notification]:
        """Every notification received since the last call, in arrival order."""
        return [Notification(*n) for n in self._native.take_notifications()]

    def __repr__(self) -> str:
        if self.closed:
            return "<weft.TransferEngine closed>"
        return f"<weft.TransferEngine {self.name!r} {self.protocol}>"


class MetadataServer:
    """A directory server in this process: weft's JSON API and Mooncake's HTTP metadata protocol
    (``GET|PUT|DELETE /metadata?key=``) on one port, so engines can use
    ``metadata=f"http://{server.address}/metadata"``. ``bind`` is "host:port" (port 0: any).

    ``cluster_secret`` (default: env WEFT_CLUSTER_SECRET): every request that changes the
    directory must prove it (engines given the same secret do); others are refused with 401 and
    reads stay open. Without one anybody who reaches the port can rewrite every descriptor, as
    with Mooncake's metadata server: a warning says so unless ``allow_unauthenticated``."""

    def __init__(self, bind: str = "127.0.0.1:0", *, cluster_secret: Optional[str] = None,
                 allow_unauthenticated: bool = False) -> None:
        if cluster_secret is None:
            cluster_secret = os.environ.get("WEFT_CLUSTER_SECRET", "")
        if not cluster_secret and not allow_unauthenticated:
            warnings.warn("weft.MetadataServer: no cluster_secret (nor WEFT_CLUSTER_SECRET): anybody who reaches "
                          f"{bind} can change the descriptors it serves; pass cluster_secret=..., or "
                          "allow_unauthenticated=True to say this is intended", stacklevel=2)
        self._native = _weft.MetadataServer(bind, cluster_secret)

    @property
    def host(self) -> str:
        return self._native.host

    @property
    def port(self) -> int:
        return self._native.port

    @property
    def address(self) -> str:
        """host:port"""
        return self._native.address

    @property
    def url(self) -> str:
        """The metadata URL engines use (Mooncake's HTTP protocol)."""
        return f"http://{self.address}/metadata"

    def stop(self) -> None:
        self._native.stop()

    def __enter__(self) -> "MetadataServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
