"""The one weft package for machines with and without a GPU: it imports everywhere, says whether CUDA
is usable and why not (weft.cuda_available / weft.cuda_status), weft.mooncake.SUPPORT_CUDA agrees,
and a device call without a GPU is refused with that reason.

The expected answer is worked out here from the machine itself, independently of weft: nvcc present
means the package must have been built with CUDA (pip install . runs on the machine that tests it:
scripts/test.sh); libcuda.so.1 not loadable means "no driver"; a driver without GPUs (nvidia-smi -L)
"no GPU"; otherwise "available" with nvidia-smi's GPU count."""

import ctypes
import os
import shutil
import subprocess
import tomllib
import uuid

import pytest

import weft
import weft.mooncake
from weft import _weft

PYPROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml")
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.access("/usr/local/cuda/bin/nvcc", os.X_OK) else None)


def driver_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def gpus_listed() -> int:
    """GPUs nvidia-smi lists (0 without nvidia-smi or driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")) if out.returncode == 0 else 0


def expected_state() -> str:
    if not _weft.cuda_built:
        return "not built"
    if not driver_loadable():
        return "no driver"
    return "available" if gpus_listed() > 0 else "no GPU"


def test_the_package_imports_and_exports_the_probe():
    assert "cuda_available" in weft.__all__ and "cuda_status" in weft.__all__
    assert isinstance(weft.cuda_available(), bool)
    assert isinstance(weft.cuda_status(), str)
    assert isinstance(_weft.cuda_built, bool)


def archs_asked_for() -> str:
    """The CUDA architectures the package under test was built for: the ones scripts/test.sh passed
    (WEFT_EXPECT_CUDA_ARCHS), else pyproject.toml's (a plain `pip install .`)."""
    if "WEFT_EXPECT_CUDA_ARCHS" in os.environ:
        return os.environ["WEFT_EXPECT_CUDA_ARCHS"]
    with open(PYPROJECT, "rb") as f:
        return ",".join(tomllib.load(f)["tool"]["scikit-build"]["cmake"]["define"]["CMAKE_CUDA_ARCHITECTURES"].split(";"))


def test_built_with_cuda_where_nvcc_exists():
    if _weft.cuda_built:
        assert _weft.cuda_architectures == archs_asked_for()
        return
    assert NVCC is None, f"nvcc is at {NVCC} but the package was built without CUDA: check pyproject.toml"
    assert _weft.cuda_architectures == ""
    assert weft.cuda_status().startswith("not built: ")
    assert "nvcc" in weft.cuda_status()


def test_status_names_the_reason():
    state = expected_state()
    status = weft.cuda_status()
    assert status.startswith(state + ": "), f"expected {state!r}, weft says {status!r}"
    assert weft.cuda_available() == (state == "available")
    if state == "no driver":
        assert "libcuda.so.1 cannot be loaded" in status or "update the driver" in status
        assert "driver" in status
    elif state == "no GPU":
        assert "sees no CUDA device" in status or "cudaGetDeviceCount" in status
    elif state == "available":
        count = int(status.split(": ", 1)[1].split()[0])
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            assert count > 0
        else:
            assert count == gpus_listed()
    # Asked twice, the same answer (the probe has no state of its own to go stale).
    assert weft.cuda_status() == status


def test_mooncake_support_cuda_follows_the_probe():
    assert weft.mooncake.SUPPORT_CUDA is weft.cuda_available()
    assert "SUPPORT_CUDA" in weft.mooncake.__all__


def test_a_device_slice_without_a_gpu_is_refused_with_the_reason():
    name = f"py-cuda-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    pool = weft.Pool(pool_name=name, rank_size="4MiB", device_size="2MiB", mode="host")
    if weft.cuda_available():
        # With a GPU the same call gives the peer a device slice.
        with pool:
            assert pool.device_size == 2 << 20
        return
    with pytest.raises(weft.NotSupported) as caught:
        pool.join()
    message = str(caught.value)
    assert caught.value.name == "NOT_SUPPORTED"
    assert weft.cuda_status() in message, message
    assert "device_size=0" in message  # what to do instead
