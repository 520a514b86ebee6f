"""vLLM's KV connector (v1) on weft: prefill/decode disaggregation with the KV cache moved by weft's
transfer engine (:mod:`weft.pd`). Load it with

    --kv-transfer-config '{"kv_connector": "WeftConnector", "kv_connector_module_path": "weft.vllm",
                           "kv_role": "kv_both", "kv_connector_extra_config": {"port": 17600}}'

on both the prefill and the decode instance; a proxy in front (vLLM's P/D proxies work unchanged)
sends a request to the prefiller with ``kv_transfer_params={"do_remote_decode": True}`` and
``max_tokens=1``, and the ``kv_transfer_params`` the prefiller returns to the decoder, as for
vLLM's NixlConnector: the decoder reads the prompt's blocks from the prefiller, layer by layer
in one batch, and tells it to free them; blocks nobody reads are freed after ``abort_timeout_s``.

``kv_connector_extra_config`` (all optional):

- ``host``: the address decoders reach this instance's workers at (default env VLLM_HOST_IP, else
  this host's address);
- ``port``: the first transfer engine port (default 17600); tensor-parallel rank r of
  data-parallel rank d listens on ``port + d * tp_size + r``;
- ``abort_timeout_s`` (480), ``read_timeout_s`` (30), ``handshake_timeout_s`` (10);
- ``protocol`` ("tcp", or "rdma" for the ucx transport) and ``device_name`` (NICs), ``transports``;
- ``allow_unauthenticated`` (False): the cluster secret comes from env WEFT_CLUSTER_SECRET, which
  every instance must share; without one the connector refuses to start unless this is true.

Both instances need the same model, tensor-parallel size and KV cache dtype and block size; a
request whose layouts do not match fails its load (vLLM recomputes it) with the reason logged.
One KV cache group only (no hybrid allocator), as vLLM requires of connectors without HMA support.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

try:
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (KVConnectorBase_V1, KVConnectorMetadata,
                                                                   KVConnectorRole)
    from vllm.logger import init_logger
    from vllm.v1.request import RequestStatus
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"weft.vllm is vLLM's KV connector and needs vLLM (pip install vllm): {e}") from e

from .pd import KVPeer

logger = init_logger(__name__)

DEFAULT_PORT = 17600
# What a prefiller's kv_transfer_params must carry for the decoder to read its blocks.
REMOTE_KEYS = ("remote_block_ids", "remote_request_id", "remote_host", "remote_port")


@dataclass
class RecvRequest:
    """A decode request's blocks to read from a prefiller (``local_only``: local blocks the
    prefiller has nothing for, reported as load errors)."""

    local_block_ids: List[int]
    remote_block_ids: List[int]
    remote_request_id: str
    remote_host: str
    remote_port: int
    local_only: List[int] = field(default_factory=list)
    # Whether vLLM waits for it (parked in WAITING_FOR_REMOTE_KVS): a notify-only request (aborted,
    # or a full local prefix hit) must not be reported received, vLLM's scheduler asserts on it.
    awaited: bool = True


class WeftConnectorMetadata(KVConnectorMetadata):
    """One scheduler step's orders for the workers."""

    def __init__(self, reqs_to_recv: Dict[str, RecvRequest], reqs_to_send: Dict[str, float]) -> None:
        self.reqs_to_recv = reqs_to_recv
        self.reqs_to_send = reqs_to_send  # request id -> seconds its blocks wait for a reader
        self.taken = False


@dataclass
class _Settings:
    host: str
    port: int
    tp_size: int
    tp_rank: int
    dp_rank: int
    engine_id: str
    abort_timeout_s: float
    read_timeout_s: float
    handshake_timeout_s: float
    engine_options: Dict[str, Any]

    @staticmethod
    def of(vllm_config: Any) -> "_Settings":
        kv = vllm_config.kv_transfer_config
        extra = dict(kv.kv_connector_extra_config or {})
        parallel = vllm_config.parallel_config
        tp_size = int(getattr(parallel, "tensor_parallel_size", 1))
        engine_options = {k: extra[k] for k in ("protocol", "device_name", "transports") if k in extra}
        engine_options["allow_unauthenticated"] = bool(extra.get("allow_unauthenticated", False))
        return _Settings(
            host=str(extra.get("host") or os.environ.get("VLLM_HOST_IP") or _this_host()),
            port=int(extra.get("port", DEFAULT_PORT)),
            tp_size=tp_size,
            tp_rank=_tp_rank(),
            dp_rank=int(getattr(parallel, "data_parallel_rank", 0) or 0),
            engine_id=str(kv.engine_id),
            abort_timeout_s=float(extra.get("abort_timeout_s", 480.0)),
            read_timeout_s=float(extra.get("read_timeout_s", 30.0)),
            handshake_timeout_s=float(extra.get("handshake_timeout_s", 10.0)),
            engine_options=engine_options)

    @property
    def first_port(self) -> int:
        """The port of tensor-parallel rank 0 of this data-parallel rank."""
        return self.port + self.dp_rank * self.tp_size


def _this_host() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _tp_rank() -> int:
    try:
        from vllm.distributed.parallel_state import get_tensor_model_parallel_rank
        return int(get_tensor_model_parallel_rank())
    except (ImportError, AssertionError, AttributeError):
        return 0  # no tensor-parallel group set up (one worker)


class WeftConnector(KVConnectorBase_V1):
    """The connector vLLM instantiates once in the scheduler and once in each worker."""

    @classmethod
    def kv_cache_access(cls, kv_transfer_config: Any) -> Any:
        # weft maps a peer's cudaMalloc'd KV cache on the same host through CUDA IPC handles.
        try:
            from vllm.config.kv_transfer import KVCacheAccess
            return KVCacheAccess.LEGACY_IPC
        except ImportError:
            return None

    def __init__(self, vllm_config: Any, role: KVConnectorRole, kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config, role, kv_cache_config)
        settings = _Settings.of(vllm_config)
        self._scheduler: Optional[_Scheduler] = None
        self._worker: Optional[_Worker] = None
        if role == KVConnectorRole.SCHEDULER:
            self._scheduler = _Scheduler(settings)
        else:
            producer = bool(getattr(vllm_config.kv_transfer_config, "is_kv_producer", True))
            self._worker = _Worker(settings, getattr(kv_cache_config, "num_blocks", None), producer)

    # -- scheduler side -------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        return self._scheduler.get_num_new_matched_tokens(request, num_computed_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        self._scheduler.update_state_after_alloc(request, blocks, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        return self._scheduler.build_connector_meta()

    def request_finished(self, request: Any, block_ids: List[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        return self._scheduler.request_finished(request, block_ids)

    # -- worker side ----------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: Dict[str, Any]) -> None:
        self._worker.register(kv_caches)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._worker.take(self._get_connector_metadata())

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None  # the decoder reads whole requests between steps (asynchronous load)

    def save_kv_layer(self, layer_name: str, kv_layer: Any, attn_metadata: Any, **kwargs: Any) -> None:
        return None  # the decoder pulls: nothing to push while the prefill runs

    def wait_for_save(self) -> None:
        return None

    def get_finished(self, finished_req_ids: Set[str]) -> Tuple[Optional[Set[str]], Optional[Set[str]]]:
        if self.has_connector_metadata():
            self._worker.take(self._get_connector_metadata())
        return self._worker.finished(finished_req_ids)

    def get_block_ids_with_load_errors(self) -> Set[int]:
        return self._worker.take_load_errors() if self._worker else set()

    def shutdown(self) -> None:
        if self._worker:
            self._worker.close()


class _Scheduler:
    """The scheduler-side state: which requests to read on this step, which to hold for readers."""

    def __init__(self, settings: _Settings) -> None:
        self.settings = settings
        self._recv: Dict[str, RecvRequest] = {}
        self._send: Dict[str, float] = {}

    def get_num_new_matched_tokens(self, request: Any, num_computed_tokens: int) -> Tuple[int, bool]:
        params = request.kv_transfer_params
        if params and params.get("do_remote_prefill"):
            count = len(request.prompt_token_ids or ()) - num_computed_tokens
            if count > 0:
                return count, True
        return 0, False

    def update_state_after_alloc(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_prefill"):
            return
        params["do_remote_prefill"] = False  # one transfer per request
        if not all(k in params for k in REMOTE_KEYS):
            logger.warning("weft: request %s: kv_transfer_params lack %s; its KV is computed here",
                           request.request_id, [k for k in REMOTE_KEYS if k not in params])
            return
        local = list(blocks.get_unhashed_block_ids()) if num_external_tokens > 0 else []
        remote = [int(b) for b in params["remote_block_ids"]]
        self._recv[request.request_id] = _pair_tails(local, remote, params, awaited=num_external_tokens > 0)

    def build_connector_meta(self) -> WeftConnectorMetadata:
        meta = WeftConnectorMetadata(self._recv, self._send)
        self._recv, self._send = {}, {}
        return meta

    def request_finished(self, request: Any, block_ids: List[int]) -> Tuple[bool, Optional[Dict[str, Any]]]:
        params = request.kv_transfer_params
        if not params:
            return False, None
        if params.get("do_remote_prefill"):
            # Finished (aborted) before its blocks were allocated: only tell the prefiller to free its own.
            params["do_remote_prefill"] = False
            if all(k in params for k in REMOTE_KEYS):
                self._recv[request.request_id] = _pair_tails([], [], params, awaited=False)
            return False, None
        if not params.get("do_remote_decode"):
            return False, None
        if request.status not in (RequestStatus.FINISHED_LENGTH_CAPPED, RequestStatus.FINISHED_STOPPED):
            return False, None  # aborted: nobody will read it
        delay_free = len(block_ids) > 0
        if delay_free:
            self._send[request.request_id] = self.settings.abort_timeout_s
        return delay_free, dict(do_remote_prefill=True, do_remote_decode=False, remote_block_ids=list(block_ids),
                                remote_engine_id=self.settings.engine_id, remote_request_id=request.request_id,
                                remote_host=self.settings.host, remote_port=self.settings.first_port,
                                tp_size=self.settings.tp_size)


def _pair_tails(local: List[int], remote: List[int], params: Dict[str, Any], awaited: bool) -> RecvRequest:
    """Local blocks the prefix cache did not cover are the prompt's last ones: they pair with the
    prefiller's last blocks. Local blocks beyond what the prefiller has cannot be filled."""
    n = min(len(local), len(remote))
    return RecvRequest(local_block_ids=local[len(local) - n:], remote_block_ids=remote[len(remote) - n:],
                       remote_request_id=str(params["remote_request_id"]), remote_host=str(params["remote_host"]),
                       remote_port=int(params["remote_port"]), local_only=local[:len(local) - n], awaited=awaited)


class _Worker:
    """One worker's side: its KVPeer, the requests it reads or holds, what finished."""

    def __init__(self, settings: _Settings, num_blocks: Optional[int], producer: bool) -> None:
        self.settings = settings
        self.num_blocks = num_blocks
        self.producer = producer
        self.peer: Optional[KVPeer] = None
        self._load_errors: Set[int] = set()
        self._finished_seen: Dict[str, float] = {}  # finished on this worker -> when (for the send contract)
        self._sent_held: Set[str] = set()
        self._unawaited: Set[str] = set()  # notify-only reads: never reported received

    def register(self, kv_caches: Dict[str, Any]) -> None:
        s = self.settings
        # Producers listen where decoders look (port + rank); consumers take any free port.
        port = s.first_port + s.tp_rank if self.producer else 0
        self.peer = KVPeer(list(kv_caches.values()), num_blocks=self.num_blocks, tp_rank=s.tp_rank,
                           tp_size=s.tp_size, handshake_timeout=s.handshake_timeout_s,
                           read_timeout=s.read_timeout_s, local_name=s.host, rpc_port=port,
                           **s.engine_options)
        logger.info("weft: KV cache of %d layers registered, %d regions; transfer engine %s", len(kv_caches),
                    len(self.peer.layout.regions), self.peer.name)

    def take(self, meta: WeftConnectorMetadata) -> None:
        """Starts the step's reads and holds (once per metadata object)."""
        if meta.taken or self.peer is None:
            return
        meta.taken = True
        for rid, timeout in meta.reqs_to_send.items():
            self.peer.expect_read(rid, timeout)
        for rid, r in meta.reqs_to_recv.items():
            self._load_errors.update(r.local_only)
            if not r.awaited:
                self._unawaited.add(rid)
            remote = f"{r.remote_host}:{r.remote_port + self.settings.tp_rank}"
            self.peer.start_read(rid, remote, r.remote_request_id, r.local_block_ids, r.remote_block_ids)

    def finished(self, finished_req_ids: Set[str]) -> Tuple[Optional[Set[str]], Optional[Set[str]]]:
        if self.peer is None:
            return None, None
        now = time.monotonic()
        for rid in finished_req_ids:
            self._finished_seen[rid] = now
        sent, received, failed = self.peer.finished()
        self._load_errors |= failed
        quiet = received & self._unawaited
        self._unawaited -= quiet
        received -= quiet
        for rid, why in self.peer.errors().items():
            logger.warning("weft: request %s: its KV could not be read (%s); vLLM recomputes it", rid, why)
        # vLLM frees a sent request's blocks only once the worker has seen it finish.
        self._sent_held |= sent
        ready = {rid for rid in self._sent_held if rid in self._finished_seen}
        self._sent_held -= ready
        for rid in ready:
            del self._finished_seen[rid]
        horizon = now - 2 * self.settings.abort_timeout_s
        for rid in [r for r, t in self._finished_seen.items() if t < horizon]:
            del self._finished_seen[rid]  # finished without a transfer
        return ready or None, received or None

    def take_load_errors(self) -> Set[int]:
        out, self._load_errors = self._load_errors, set()
        return out

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None
