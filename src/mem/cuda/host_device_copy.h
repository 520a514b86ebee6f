// Plain host <-> device copies for code outside weft_cuda (the transfer engine's staging of
// device buffers over tcp). No CUDA headers here, so callers need none; built only with CUDA
// (WEFT_HAVE_CUDA), the callers guard their use with that macro.
#pragma once

#include <cstdint>
#include <memory>

#include "base/result.h"

namespace weft::mem::cuda {

// Whether a GPU is usable in this process (the runtime initialised, at least one device).
bool DevicesPresent();
// Whether p points into device memory (cudaMalloc'd, VMM-mapped or managed-on-device); false for
// host memory, unknown pointers and when there is no GPU. Leaves no CUDA error behind.
bool IsDevicePointer(const void* p);
// The ordinal of the device that p's memory belongs to, or -1 as IsDevicePointer is false. Lets a
// caller name the location ("cuda:N") of a bare address, as Mooncake does for "*".
int DeviceOfPointer(const void* p);
// Waits until the work queued on `stream` (a cudaStream_t as an integer; 0 is the legacy default
// stream of the calling thread's current device) has completed. CUDA when the runtime refuses the
// stream (a destroyed or foreign handle may also crash the driver: the caller owns that contract,
// as with any cudaStream_t).
Status SynchronizeStream(uint64_t stream);
// Copies len bytes either way (cudaMemcpyDefault), synchronously, on the device that owns the
// device end; the calling thread's current device is restored. CUDA/INVALID_ARGUMENT on failure.
Status CopyHostDevice(void* dst, const void* src, uint64_t len);

// Pinned (page-locked, portable) host memory for bounce buffers: the copy engine DMAs straight
// from and to it, where pageable memory is staged by the driver through its own pinned buffer.
// POOL_FULL when pinned memory is exhausted, CUDA for other failures.
Result<void*> AllocPinnedHost(uint64_t bytes);
void FreePinnedHost(void* p);
// Device memory of `device` (cudaMalloc), for tools and tests that need a device buffer without
// CUDA headers. POOL_FULL when the device is out of memory, INVALID_ARGUMENT for a bad device.
Result<void*> AllocDevice(int device, uint64_t bytes);
void FreeDevice(void* p);

// Host <-> device copies on streams of weft's own, created non-blocking: unlike cudaMemcpy (the
// legacy default stream), they do not wait for, nor hold up, the application's work on other
// streams of the device. One stream per concurrent caller and device, created on demand and kept
// until the copier goes. Thread-safe.
class HostDeviceCopier {
 public:
  HostDeviceCopier();
  ~HostDeviceCopier();
  HostDeviceCopier(const HostDeviceCopier&) = delete;
  HostDeviceCopier& operator=(const HostDeviceCopier&) = delete;
  // As CopyHostDevice: either way, synchronously (returns once the bytes are there); the calling
  // thread's current device is restored; no CUDA error left behind.
  Status Copy(void* dst, const void* src, uint64_t len);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::mem::cuda
