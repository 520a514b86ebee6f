// What a front end needs to know about device memory before it hands an address to the transfer
// engine, answered by the CUDA layer of this build (src/mem/cuda) or, in a build without CUDA, by
// NOT_SUPPORTED saying so. Compiled in weft_api, where WEFT_HAVE_CUDA is defined for this build:
// callers outside the library's directory (the Python extension) need no CUDA headers and no
// definition of their own.
#pragma once

#include <cstdint>

#include "base/status.h"

namespace weft::trans {

// OK when a GPU is usable in this process; otherwise NOT_SUPPORTED naming why (no CUDA in this
// build, no driver, no device, a driver older than the runtime).
Status DevicesUsable();
// The CUDA device that the memory at p belongs to, or -1 (host memory, an unknown address, no
// usable GPU).
int DeviceOfPointer(const void* p);
// Waits for the work queued on a CUDA stream (a cudaStream_t as an integer; 0: the legacy default
// stream of the calling thread's current device). NOT_SUPPORTED without a usable GPU, CUDA when
// the runtime refuses the stream.
Status SynchronizeStream(uint64_t stream);

}  // namespace weft::trans
