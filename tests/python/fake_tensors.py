"""Stand-ins for torch tensors in the tests that run without torch: torch.Tensor's memory methods
(data_ptr, numel, element_size, is_contiguous, device) over a numpy array."""

import types

import numpy as np


class TorchLike:
    """A tensor over host memory; ``device_type``/``index`` make it claim another device (a CUDA
    tensor without a GPU), ``contiguous=False`` a strided one."""

    def __init__(self, arr: np.ndarray, device_type: str = "cpu", index=None, contiguous: bool = True):
        self.arr = arr
        self.device = types.SimpleNamespace(type=device_type, index=index)
        self.contiguous = contiguous

    def data_ptr(self):
        return self.arr.ctypes.data

    def numel(self):
        return self.arr.size

    def element_size(self):
        return self.arr.itemsize

    def is_contiguous(self):
        return self.contiguous


def FakeCudaTensor(arr: np.ndarray, device_type: str = "cuda", index=0) -> TorchLike:
    """What torch gives for a CUDA tensor, minus the GPU: the memory is host memory."""
    return TorchLike(arr, device_type, index)
