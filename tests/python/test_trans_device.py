"""Device memory in weft.TransferEngine and weft.mooncake, on any machine: which objects are
taken as device memory and with which location, how registering it fails where no GPU is usable
(weft.NotSupported naming why, never a crash), stream arguments, and the *_on_cuda methods'
argument checks. Each check that depends on a GPU asserts the behaviour of both cases (no GPU:
NOT_SUPPORTED; a GPU: the core's verdict), so none is skipped. Real GPU transfers between two
processes are in test_gpu_trans.py."""

from __future__ import annotations

import ctypes
import logging
import os
import types

import numpy as np
import pytest

import weft
import weft.mooncake as mc
from weft import trans
from fake_tensors import FakeCudaTensor

GPU, WHY_NOT = trans.device_status()


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for key in ("WEFT_CLUSTER_SECRET", "WEFT_PROTOCOL_FALLBACK", "MC_FORCE_TCP", "MC_TRANSFER_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def te():
    e = weft.TransferEngine("127.0.0.1", allow_unauthenticated=True)
    try:
        yield e
    finally:
        e.close()


class CudaArrayInterface:
    """An object with __cuda_array_interface__ (numba / cupy style) over the given address."""

    def __init__(self, addr: int, nbytes: int):
        self.__cuda_array_interface__ = {"data": (addr, False), "shape": (nbytes,), "typestr": "|u1",
                                         "strides": None, "version": 3}


class DLPackOnly:
    """A DLPack producer and nothing else (no buffer protocol, no array interface), whose
    __dlpack_device__ says `device`; the capsule comes from a numpy array (host memory)."""

    def __init__(self, arr: np.ndarray, device=(1, 0)):
        self.arr = arr
        self.device = device

    def __dlpack__(self, *args, **kwargs):
        return self.arr.__dlpack__()

    def __dlpack_device__(self):
        return self.device


def expect_no_gpu_or(exc_with_gpu, call, match_gpu=None):
    """Where no GPU is usable, `call` raises NotSupported naming the reason; with one, the core's
    verdict `exc_with_gpu` (its message matching `match_gpu`)."""
    if not GPU:
        with pytest.raises(weft.NotSupported, match="no GPU is usable") as info:
            call()
        assert WHY_NOT and WHY_NOT in str(info.value)
    else:
        with pytest.raises(exc_with_gpu, match=match_gpu):
            call()


def test_device_status_says_why():
    ok, why = trans.device_status()
    assert isinstance(ok, bool) and isinstance(why, str)
    assert ok == (why == "")  # a reason exactly when no GPU is usable
    assert trans.pointer_device(ctypes.addressof(ctypes.create_string_buffer(64))) == -1  # host memory
    assert trans.pointer_device(0) == -1


def test_device_objects_get_their_location():
    host = np.zeros(4096, np.uint8)
    assert trans.location_for(host, "*") == "*"
    assert trans.location_for(host.ctypes.data, "*") == "*"  # a host address stays "*"
    assert trans.location_for(host, "cpu:0") == "cpu:0"
    assert trans.location_for(DLPackOnly(host), "*") == "*"  # DLPack on the CPU is host memory
    assert trans.location_for(DLPackOnly(host, (3, 0)), "*") == "*"  # kDLCUDAHost: pinned host memory
    assert trans.location_for(FakeCudaTensor(host, "cpu"), "*") == "*"
    if GPU:
        assert trans.location_for(FakeCudaTensor(host, index=1), "*") == "cuda:1"
        assert trans.location_for(DLPackOnly(host, (2, 3)), None) == "cuda:3"
        assert trans.location_for(DLPackOnly(host, (13, 0)), "") == "cuda:0"  # managed memory
        assert trans.location_for(FakeCudaTensor(host, index=None), "*") == "cuda"  # the core checks it
    for obj in (FakeCudaTensor(host), DLPackOnly(host, (2, 0)), CudaArrayInterface(host.ctypes.data, 64)):
        expect_no_gpu_or(weft.InvalidArgument, lambda: trans.location_for(obj, "cpu:0"), "location")
    expect_no_gpu_or(weft.InvalidArgument, lambda: trans.location_for(FakeCudaTensor(host), "cuda:1"), "cuda:0")
    if GPU:
        assert trans.location_for(FakeCudaTensor(host, index=2), "cuda:2") == "cuda:2"
    with pytest.raises(weft.NotSupported, match="'mps'"):
        trans.location_for(FakeCudaTensor(host, "mps"), "*")
    with pytest.raises(weft.NotSupported, match="DLPack device type 10"):  # ROCm
        trans.location_for(DLPackOnly(host, (10, 0)), "*")
    with pytest.raises(weft.InvalidArgument, match="data pointer"):
        trans.location_for(types.SimpleNamespace(__cuda_array_interface__={"shape": (1,)}), "*")


def test_registering_device_memory_fails_cleanly_or_is_checked(te):
    host = np.zeros(1 << 16, np.uint8)
    # Objects on a CUDA device whose memory is really host memory: no GPU -> NOT_SUPPORTED with
    # the reason; a GPU -> the core sees host memory behind a device location.
    expect_no_gpu_or(weft.InvalidArgument, lambda: te.register_memory(FakeCudaTensor(host)), "host memory")
    expect_no_gpu_or(weft.InvalidArgument, lambda: te.register_memory(CudaArrayInterface(host.ctypes.data, 4096)),
                     "host memory")
    expect_no_gpu_or(weft.InvalidArgument, lambda: te.register_memory(host.ctypes.data, 4096, "cuda:0"),
                     "host memory")
    expect_no_gpu_or(weft.InvalidArgument, lambda: te.register_memory(host, location="cuda:0"), "host memory")
    assert te.local_buffers() == []  # nothing was registered by the refusals
    # The same memory as host memory registers.
    addr = te.register_memory(host)
    assert te.local_buffers()[0].location == "*" and addr == host.ctypes.data
    te.unregister_memory(host)


def test_dlpack_on_cpu_is_host_memory_and_moves(te):
    other = weft.TransferEngine("127.0.0.1", allow_unauthenticated=True)
    try:
        src = np.frombuffer(os.urandom(1 << 16), np.uint8).copy()
        dst = np.zeros(1 << 16, np.uint8)
        addr = te.register_memory(DLPackOnly(src))
        assert addr == src.ctypes.data and te.local_buffers()[0].location == "*"
        sink = other.register_memory(DLPackOnly(dst))
        te.transfer([("write", DLPackOnly(src), other.name, sink)])
        assert bytes(dst) == bytes(src)
        dst[:] = 0
        other.transfer([("read", DLPackOnly(dst), te.name, addr, 4096)])
        assert bytes(dst[:4096]) == bytes(src[:4096]) and not dst[4096:].any()
    finally:
        other.close()


def test_lengths(te):
    arr = np.zeros(4096, np.uint8)
    with pytest.raises(weft.OutOfRange):
        te.register_memory(DLPackOnly(arr), 4097)
    with pytest.raises(weft.OutOfRange):
        te.register_memory(arr, 4097)
    with pytest.raises(weft.InvalidArgument):
        te.register_memory(arr.ctypes.data, 0)
    with pytest.raises(weft.InvalidArgument):
        te.register_memory(arr.ctypes.data)  # an address needs a length
    te.register_memory(DLPackOnly(arr), 100)  # a prefix of the object
    assert te.local_buffers()[0].length == 100


def test_stream_arguments():
    assert trans.stream_handle(None) == 0
    assert trans.stream_handle(0) == 0
    assert trans.stream_handle(0x7F00DEAD) == 0x7F00DEAD
    assert trans.stream_handle(types.SimpleNamespace(cuda_stream=1234)) == 1234  # torch.cuda.Stream
    assert trans.stream_handle(types.SimpleNamespace(__cuda_stream__=lambda: (0, 99))) == 99
    for bad in (True, "0", 1.5, object(), [0], types.SimpleNamespace(cuda_stream="x"),
                types.SimpleNamespace(cuda_stream=None)):
        with pytest.raises(TypeError):
            trans.stream_handle(bad)
    for bad in (-1, 1 << 64):
        with pytest.raises(weft.InvalidArgument):
            trans.stream_handle(bad)


def test_mooncake_device_registration(caplog):
    caplog.set_level(logging.ERROR, logger="weft.mooncake")
    te = mc.TransferEngine()
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    try:
        a = ctypes.create_string_buffer(8192)
        b = ctypes.create_string_buffer(8192)
        addr_a, addr_b = ctypes.addressof(a), ctypes.addressof(b)
        assert te.register_memory(addr_a, 8192) == 0  # host memory with "*"
        assert te.get_engine().local_buffers()[0].location == "*"
        assert te.unregister_memory(addr_a) == 0
        # A device location for host memory: -1, and the log says why.
        assert te.register_memory(addr_a, 8192, "cuda:0") == -1
        reason = WHY_NOT if not GPU else "host memory"
        assert any(reason in r.getMessage() for r in caplog.records)
        # All or nothing: the host buffer registered first is taken back.
        assert te.batch_register_memory([addr_b, addr_a], [8192, 8192], "cuda:0") == -1
        assert te.batch_register_memory([addr_a], [8192]) == 0
        assert te.get_engine().local_buffers()[0].addr == addr_a and len(te.get_engine().local_buffers()) == 1
    finally:
        te.close()


def test_mooncake_on_cuda_arguments():
    te = mc.TransferEngine()
    with pytest.raises(RuntimeError, match="not initialized"):
        te.transfer_write_on_cuda("127.0.0.1:1", 1, 1, 1)
    assert te.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    peer = mc.TransferEngine()
    assert peer.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    try:
        src = ctypes.create_string_buffer(os.urandom(4096), 4096)
        dst = ctypes.create_string_buffer(4096)
        assert te.register_memory(ctypes.addressof(src), 4096) == 0
        assert peer.register_memory(ctypes.addressof(dst), 4096) == 0
        target = f"127.0.0.1:{peer.get_rpc_port()}"
        args = (target, [ctypes.addressof(src)], [ctypes.addressof(dst)], [4096])
        with pytest.raises(TypeError, match="stream"):
            te.batch_transfer_write_on_cuda(*args, stream_ptr="default")
        with pytest.raises(TypeError, match="bool"):
            te.transfer_read_on_cuda(target, ctypes.addressof(src), ctypes.addressof(dst), 16, True)
        with pytest.raises(ValueError):
            te.batch_transfer_read_on_cuda(*args, stream_ptr=-5)
        with pytest.raises(RuntimeError, match="as long"):
            te.batch_transfer_write_on_cuda(target, [ctypes.addressof(src)], [], [4096])
        if not GPU:
            for name in ("batch_transfer_write_on_cuda", "batch_transfer_read_on_cuda"):
                with pytest.raises(RuntimeError, match="no CUDA stream") as info:
                    getattr(te, name)(*args)
                assert WHY_NOT in str(info.value)
            assert dst.raw == bytes(4096)  # nothing moved
        else:
            # Host buffers ordered on the legacy default stream: the write is done on return.
            te.batch_transfer_write_on_cuda(*args, stream_ptr=0)
            assert dst.raw == src.raw
            with pytest.raises(RuntimeError, match="transfer failed"):
                te.transfer_write_on_cuda(target, ctypes.addressof(src), ctypes.addressof(dst) + 4096, 16)
    finally:
        te.close()
        peer.close()
