// Plain host <-> device copies for code outside weft_cuda (the transfer engine's staging of
// device buffers over tcp). No CUDA headers here, so callers need none; built only with CUDA
// (WEFT_HAVE_CUDA), the callers guard their use with that macro.
#pragma once

#include <cstdint>

#include "base/result.h"

namespace weft::mem::cuda {

// Whether a GPU is usable in this process (the runtime initialised, at least one device).
bool DevicesPresent();
// Whether p points into device memory (cudaMalloc'd, VMM-mapped or managed-on-device); false for
// host memory, unknown pointers and when there is no GPU. Leaves no CUDA error behind.
bool IsDevicePointer(const void* p);
// Copies len bytes either way (cudaMemcpyDefault), synchronously, on the device that owns the
// device end; the calling thread's current device is restored. CUDA/INVALID_ARGUMENT on failure.
Status CopyHostDevice(void* dst, const void* src, uint64_t len);

}  // namespace weft::mem::cuda
