"""Collectives on GPU buffers from Python: two processes on one GPU (gpu_symm_peer.py) make a
team with a device heap and run allreduce and allgather on torch CUDA tensors (bf16, f16, f32),
every element compared with torch's own result; a host buffer next to a device one fails on
every rank.

Skipped, with the reason, where torch, a GPU or a CUDA build of weft is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from trans_util import require_gpu

torch = require_gpu("test_gpu_symm")

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_symm_peer.py")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_collectives_on_torch_tensors_in_the_device_heap(mode):
    pool = "gpusymm-" + uuid.uuid4().hex[:8]
    seed = int.from_bytes(os.urandom(4), "little")
    ranks = [subprocess.Popen([sys.executable, PEER, pool, str(seed), "2", str(i), mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for i, p in enumerate(ranks):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and "gpu symm ok" in out, f"rank {i}: rc {p.returncode}\n{out}\n{err}"
