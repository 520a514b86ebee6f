"""Prefill -> decode KV-cache block transfer over the transfer engine, with no serving engine in it.

A serving engine (vLLM, SGLang) keeps its KV cache as paged tensors: per layer, a tensor whose block
dimension indexes fixed-size blocks, and per request a block table (the block ids it owns). Moving a
prefilled request to a decoder means copying the prefiller's blocks of that request into the
decoder's blocks, for every layer. This module does that with one :class:`weft.TransferEngine` per
worker; :mod:`weft.vllm` is vLLM's connector on top of it.

The decoder pulls: it reads the prefiller's blocks with one batch of one-sided READs per request,
and the batch's notification (delivered after the data) tells the prefiller that it may free them.

    prefill worker                                decode worker
    KVPeer(caches, rpc_port=P)                    KVPeer(caches)
    expect_read("req-7", deadline)                start_read("req-7", "host:P", "req-7",
                                                             local_ids, remote_ids)
                        <- layout request (once per prefiller; notification)
    layout reply ->
                        <- READs of every layer's blocks, then the "done" notification
    finished() -> sent {"req-7"}                  finished() -> received {"req-7"}

A read that fails (the prefiller died, a timeout, incompatible layouts) finishes the request with
its local block ids in ``failed_blocks`` (vLLM then recomputes them); nothing waits past the
deadlines. A prefiller frees a request nobody read once its deadline passes.

Memory: torch tensors (host or CUDA), numpy arrays and anything with ``__array_interface__`` or
``__cuda_array_interface__``; torch is never imported. The block dimension is the one of size
``num_blocks`` (the first such; without ``num_blocks``, dimension 1 for the [2, num_blocks, ...]
K/V layout, else 0); everything inside a block must be contiguous. Every index of the dimensions
before the block dimension (K and V) is a region of its own.
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from . import InvalidArgument, Mismatch, NotSupported, Timeout, Error
from .trans import READ, TransferEngine

# Notification names (weft's, sent between KVPeers).
LAYOUT_REQUEST = "weft.pd/layout?"
LAYOUT_REPLY = "weft.pd/layout"
READ_DONE = "weft.pd/done"

LAYOUT_VERSION = 1
# A "done" for a request the scheduler has not handed over yet is kept this long (seconds).
EARLY_DONE_KEEP_S = 600.0


@dataclass(frozen=True)
class KVRegion:
    """One run of equal blocks: block i is ``[base + i * block_stride, + block_bytes)``."""

    base: int
    block_stride: int
    block_bytes: int
    num_blocks: int

    def block(self, i: int) -> int:
        return self.base + i * self.block_stride

    def span(self) -> Tuple[int, int]:
        """[start, end) of the bytes the region's blocks cover."""
        return self.base, self.base + (self.num_blocks - 1) * self.block_stride + self.block_bytes


def _geometry(tensor: Any) -> Tuple[int, Tuple[int, ...], Tuple[int, ...], int]:
    """(address, shape, strides in bytes, item size) of a torch tensor or an array interface."""
    if all(hasattr(tensor, a) for a in ("data_ptr", "element_size", "stride", "shape")):
        item = int(tensor.element_size())
        return (int(tensor.data_ptr()), tuple(int(s) for s in tensor.shape),
                tuple(int(s) * item for s in tensor.stride()), item)
    iface = getattr(tensor, "__cuda_array_interface__", None) or getattr(tensor, "__array_interface__", None)
    if iface is None:
        raise InvalidArgument(f"KV cache: a {type(tensor).__name__} is not a tensor (pass torch tensors, numpy arrays "
                              f"or objects with __cuda_array_interface__ / __array_interface__)")
    shape = tuple(int(s) for s in iface["shape"])
    item = int(iface["typestr"][2:])
    strides = iface.get("strides")
    if strides is None:  # C-contiguous
        acc, out = item, []
        for s in reversed(shape):
            out.append(acc)
            acc *= s
        strides = tuple(reversed(out))
    return int(iface["data"][0]), shape, tuple(int(s) for s in strides), item


def _block_dim(shape: Tuple[int, ...], num_blocks: Optional[int]) -> int:
    if num_blocks is not None:
        for i, s in enumerate(shape):
            if s == num_blocks:
                return i
        raise InvalidArgument(f"KV cache of shape {list(shape)} has no dimension of num_blocks={num_blocks}")
    return 1 if len(shape) >= 3 and shape[0] == 2 else 0


def regions_of(tensor: Any, num_blocks: Optional[int] = None) -> List[KVRegion]:
    """The block regions of one layer's KV cache tensor (one, or one per leading index: K and V)."""
    addr, shape, strides, item = _geometry(tensor)
    if not shape:
        raise InvalidArgument("KV cache: a 0-dimensional tensor has no blocks")
    bd = _block_dim(shape, num_blocks)
    block_bytes = item
    for k in range(len(shape) - 1, bd, -1):
        if strides[k] != block_bytes:
            raise NotSupported(f"KV cache of shape {list(shape)}, strides {list(strides)} (bytes): a block is not "
                               f"contiguous (dimension {k}); weft moves whole blocks of contiguous bytes")
        block_bytes *= shape[k]
    if shape[bd] == 0 or block_bytes == 0:
        raise InvalidArgument(f"KV cache of shape {list(shape)} holds no bytes")
    bases = [addr]
    for k in range(bd):
        bases = [b + i * strides[k] for b in bases for i in range(shape[k])]
    return [KVRegion(b, strides[bd], block_bytes, shape[bd]) for b in bases]


@dataclass(frozen=True)
class KVLayout:
    """A worker's KV cache as its peers see it: the regions in layer order, and its place in the
    tensor-parallel group."""

    regions: Tuple[KVRegion, ...]
    tp_rank: int = 0
    tp_size: int = 1

    @staticmethod
    def of(caches: Sequence[Any], num_blocks: Optional[int] = None, tp_rank: int = 0, tp_size: int = 1) -> "KVLayout":
        regions: List[KVRegion] = []
        for t in caches:
            regions.extend(regions_of(t, num_blocks))
        if not regions:
            raise InvalidArgument("KV cache: no tensors given")
        return KVLayout(tuple(regions), tp_rank, tp_size)

    def to_json(self) -> bytes:
        return json.dumps({"v": LAYOUT_VERSION, "tp_rank": self.tp_rank, "tp_size": self.tp_size,
                           "regions": [[r.base, r.block_stride, r.block_bytes, r.num_blocks] for r in self.regions]}
                          ).encode()

    @staticmethod
    def from_json(data: bytes) -> "KVLayout":
        try:
            d = json.loads(data)
            if d.get("v") != LAYOUT_VERSION:
                raise ValueError(f"layout version {d.get('v')!r}, this weft speaks {LAYOUT_VERSION}")
            if not isinstance(d["regions"], list) or any(not isinstance(r, list) or len(r) != 4 for r in d["regions"]):
                raise ValueError("a region is not [base, stride, block_bytes, num_blocks]")
            regions = tuple(KVRegion(*(int(x) for x in r)) for r in d["regions"])
            return KVLayout(regions, int(d["tp_rank"]), int(d["tp_size"]))
        except (ValueError, KeyError, TypeError) as e:
            raise Mismatch(f"KV layout from the peer is malformed: {e}") from None

    def mismatch(self, remote: "KVLayout") -> Optional[str]:
        """Why blocks cannot be copied between this layout and ``remote``, or None."""
        if remote.tp_size != self.tp_size:
            return (f"tensor-parallel sizes differ (prefill {remote.tp_size}, decode {self.tp_size}): weft pairs "
                    f"rank r with rank r and needs equal sizes")
        if len(remote.regions) != len(self.regions):
            return f"the prefiller has {len(remote.regions)} KV regions, this worker {len(self.regions)}: not the same model"
        for i, (a, b) in enumerate(zip(self.regions, remote.regions)):
            if a.block_bytes != b.block_bytes:
                return f"region {i}: blocks of {b.block_bytes} bytes on the prefiller, {a.block_bytes} here"
        return None


def block_runs(local_ids: Sequence[int], remote_ids: Sequence[int]) -> List[Tuple[int, int, int]]:
    """(local start, remote start, count) runs of blocks consecutive on both sides, in order."""
    runs: List[Tuple[int, int, int]] = []
    for lo, re in zip(local_ids, remote_ids):
        if runs and runs[-1][0] + runs[-1][2] == lo and runs[-1][1] + runs[-1][2] == re:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((lo, re, 1))
    return runs


def read_spans(local: KVLayout, remote: KVLayout, local_ids: Sequence[int],
               remote_ids: Sequence[int]) -> Tuple["array[int]", "array[int]", "array[int]"]:
    """The READs that copy the remote blocks into the local ones, region by region, as three
    arrays of 8-byte integers (local addresses, remote addresses, lengths), which the engine takes
    without a Python object per request; a run of blocks consecutive on both sides whose stride
    equals its block size is one request."""
    locals_, remotes, lengths = array("Q"), array("Q"), array("Q")
    runs = block_runs(local_ids, remote_ids)
    for lr, rr in zip(local.regions, remote.regions):
        if lr.block_stride == lr.block_bytes and rr.block_stride == rr.block_bytes:
            for lo, ro, n in runs:
                locals_.append(lr.block(lo))
                remotes.append(rr.block(ro))
                lengths.append(n * lr.block_bytes)
        else:
            for lo, ro, n in runs:
                for i in range(n):
                    locals_.append(lr.block(lo + i))
                    remotes.append(rr.block(ro + i))
                    lengths.append(lr.block_bytes)
    return locals_, remotes, lengths


def read_requests(local: KVLayout, remote: KVLayout, target: str, local_ids: Sequence[int],
                  remote_ids: Sequence[int]) -> List[Tuple[int, int, str, int, int]]:
    """:func:`read_spans` as ``(READ, local, target, remote, length)`` requests."""
    locals_, remotes, lengths = read_spans(local, remote, local_ids, remote_ids)
    return [(READ, lo, target, ro, n) for lo, ro, n in zip(locals_, remotes, lengths)]


def _check_ids(what: str, ids: Sequence[int], layout: KVLayout) -> None:
    limit = min(r.num_blocks for r in layout.regions)
    for b in ids:
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < limit:
            raise InvalidArgument(f"{what}: block id {b!r} is not in [0, {limit})")


@dataclass
class _Reading:
    batch: int
    local_ids: Tuple[int, ...]


class KVPeer:
    """One worker's end of prefill -> decode transfers: registers its KV cache with its own
    transfer engine, answers layout requests, reads peers' blocks and tracks what finished.

    ``caches``: the layer tensors in layer order. ``engine_options`` go to
    :class:`weft.TransferEngine` (``local_name``, ``rpc_port``, ``protocol``, ``cluster_secret``, ...).
    A prefiller needs a known ``rpc_port`` (its decoders address it as "host:port").
    """

    def __init__(self, caches: Sequence[Any], *, num_blocks: Optional[int] = None, tp_rank: int = 0,
                 tp_size: int = 1, handshake_timeout: float = 10.0, read_timeout: float = 30.0,
                 **engine_options: Any) -> None:
        self.layout = KVLayout.of(list(caches), num_blocks, tp_rank, tp_size)
        self.handshake_timeout = handshake_timeout
        self.read_timeout = read_timeout
        self.engine = TransferEngine(**engine_options)
        self._keep = list(caches)  # registered by address: keep the tensors alive
        try:
            for start, end in _merged_spans(r.span() for r in self.layout.regions):
                self.engine.register_memory(start, end - start)
        except BaseException:
            self.engine.close()
            raise
        self._lock = threading.Lock()
        self._layouts: Dict[str, KVLayout] = {}
        self._layout_waiters: Dict[str, threading.Event] = {}
        self._expected: Dict[str, float] = {}     # prefill: request id -> deadline (monotonic)
        self._sent: Set[str] = set()
        self._done_early: Dict[str, float] = {}   # prefill: read before expect_read -> when
        self._reads: Dict[str, _Reading] = {}     # decode: request id -> batch in flight
        self._received: Set[str] = set()
        self._failed_blocks: Set[int] = set()
        self._errors: Dict[str, str] = {}
        self._stop = threading.Event()
        self._pump = threading.Thread(target=self._pump_notifications, name="weft-pd-notify", daemon=True)
        self._pump.start()

    @property
    def name(self) -> str:
        """The name peers reach this worker by ("host:rpc_port")."""
        return self.engine.name

    def close(self) -> None:
        self._stop.set()
        self._pump.join()
        self.engine.close()

    def __enter__(self) -> "KVPeer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- prefill side ---------------------------------------------------------------------------

    def expect_read(self, request_id: str, timeout: float) -> None:
        """A request's blocks wait for a decoder; after ``timeout`` seconds unread they are freed
        anyway (reported in :meth:`finished`'s sent set)."""
        with self._lock:
            if self._done_early.pop(request_id, None) is not None:  # the decoder beat the scheduler's metadata
                self._sent.add(request_id)
                return
            self._expected[request_id] = time.monotonic() + timeout

    # -- decode side ----------------------------------------------------------------------------

    def start_read(self, request_id: str, remote: str, remote_request_id: str, local_ids: Sequence[int],
                   remote_ids: Sequence[int]) -> None:
        """Starts reading ``remote``'s blocks ``remote_ids`` into ``local_ids`` (pairwise); the
        prefiller is told ``remote_request_id`` is done after the data. Never raises for the
        transfer itself: a failure finishes the request with its blocks in ``failed_blocks``."""
        local_ids, remote_ids = tuple(local_ids), tuple(remote_ids)
        try:
            if len(local_ids) != len(remote_ids):
                raise InvalidArgument(f"request {request_id}: {len(local_ids)} local blocks for {len(remote_ids)} "
                                      f"remote ones")
            _check_ids(f"request {request_id}: local blocks", local_ids, self.layout)
            remote_layout = self.layout_of(remote)
            _check_ids(f"request {request_id}: the prefiller's blocks", remote_ids, remote_layout)
            why = self.layout.mismatch(remote_layout)
            if why:
                raise Mismatch(f"request {request_id}: cannot copy from {remote}: {why}")
            locals_, remotes, lengths = read_spans(self.layout, remote_layout, local_ids, remote_ids)
            notify = (READ_DONE, remote_request_id.encode())
            if not lengths:  # nothing to copy: only the prefiller is told
                self.engine.notify(remote, *notify, timeout=self.read_timeout)
                with self._lock:
                    self._received.add(request_id)
                return
            batch = self.engine.submit_spans(READ, remote, locals_, remotes, lengths, notify=notify,
                                             timeout=self.read_timeout)
        except Error as e:
            self._fail(request_id, local_ids, str(e))
            return
        with self._lock:
            self._reads[request_id] = _Reading(batch, local_ids)

    def layout_of(self, remote: str) -> KVLayout:
        """The remote worker's layout, asked for once (Timeout after ``handshake_timeout``)."""
        with self._lock:
            if remote in self._layouts:
                return self._layouts[remote]
            event = self._layout_waiters.setdefault(remote, threading.Event())
        ask = json.dumps({"reply_to": self.name, "as": remote}).encode()
        self.engine.notify(remote, LAYOUT_REQUEST, ask, timeout=self.handshake_timeout)
        if not event.wait(self.handshake_timeout):
            with self._lock:
                self._layout_waiters.pop(remote, None)
            raise Timeout(f"no KV layout from {remote} within {self.handshake_timeout} s: is it a weft KV peer "
                          f"(a prefill worker) and reachable?")
        with self._lock:
            if remote not in self._layouts:
                raise Mismatch(self._errors.pop(f"layout:{remote}", f"{remote} sent no usable KV layout"))
            return self._layouts[remote]

    # -- both -----------------------------------------------------------------------------------

    def finished(self) -> Tuple[Set[str], Set[str], Set[int]]:
        """(sent, received, failed_blocks) since the last call: prefilled requests whose blocks
        may be freed, requests whose blocks arrived (or failed), and the local blocks that did
        not arrive."""
        self._poll_reads()
        now = time.monotonic()
        with self._lock:
            for rid, deadline in list(self._expected.items()):
                if deadline <= now:
                    del self._expected[rid]
                    self._sent.add(rid)
            for rid, when in list(self._done_early.items()):
                if now - when > EARLY_DONE_KEEP_S:  # never expected: not a request of ours
                    del self._done_early[rid]
            sent, self._sent = self._sent, set()
            received, self._received = self._received, set()
            failed, self._failed_blocks = self._failed_blocks, set()
        return sent, received, failed

    def errors(self) -> Dict[str, str]:
        """Why each failed request failed, since the last call."""
        with self._lock:
            out, self._errors = {k: v for k, v in self._errors.items() if not k.startswith("layout:")}, {}
        return out

    def _poll_reads(self) -> None:
        with self._lock:
            reads = list(self._reads.items())
        for rid, reading in reads:
            ok = self.engine.poll_done(reading.batch)  # no per-request lists while it runs
            if ok is None:
                continue
            first = ""
            if not ok:
                status = self.engine.poll(reading.batch)
                first = next((str(r) for r in status.results if r is not None), str(status.notification))
            self.engine.free_batch(reading.batch)
            with self._lock:
                del self._reads[rid]
            if ok:
                with self._lock:
                    self._received.add(rid)
            else:
                self._fail(rid, reading.local_ids, first)

    def _fail(self, request_id: str, local_ids: Sequence[int], why: str) -> None:
        with self._lock:
            self._received.add(request_id)
            self._failed_blocks.update(local_ids)
            self._errors[request_id] = why

    def _pump_notifications(self) -> None:
        idle = 0.0005
        while not self._stop.is_set():
            try:
                notes = self.engine.take_notifications()
            except Error:
                return  # the engine closed
            for note in notes:
                self._dispatch(note.name, note.message)
            if not notes:
                self._stop.wait(idle)
                idle = min(idle * 2, 0.005)
            else:
                idle = 0.0005

    def _dispatch(self, name: str, message: bytes) -> None:
        if name == READ_DONE:
            rid = message.decode(errors="replace")
            with self._lock:
                # Only requests the scheduler handed over are reported: it frees what it is told.
                if self._expected.pop(rid, None) is not None:
                    self._sent.add(rid)
                else:
                    self._done_early[rid] = time.monotonic()
        elif name == LAYOUT_REQUEST:
            try:
                ask = json.loads(message)
                reply_to, known_as = str(ask["reply_to"]), str(ask["as"])
            except (ValueError, KeyError, TypeError):
                return  # not a layout request of ours
            try:  # the reply names us as the asker addressed us, which need not be self.name
                self.engine.notify(reply_to, LAYOUT_REPLY, known_as.encode() + b"\n" + self.layout.to_json(),
                                   timeout=self.handshake_timeout)
            except Error:
                pass  # the asker times out and says so
        elif name == LAYOUT_REPLY:
            sender, _, body = message.partition(b"\n")
            remote = sender.decode(errors="replace")
            with self._lock:
                try:
                    self._layouts[remote] = KVLayout.from_json(body)
                except Mismatch as e:
                    self._errors[f"layout:{remote}"] = f"{remote}: {e}"
                event = self._layout_waiters.pop(remote, None)
            if event:
                event.set()


def _merged_spans(spans: Any) -> List[Tuple[int, int]]:
    """Overlapping [start, end) spans merged (layers may share one allocation). Spans that only
    touch stay apart: they may be two allocations that happen to be adjacent."""
    out: List[Tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start < out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
