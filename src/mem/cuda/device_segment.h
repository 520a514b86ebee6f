// Device segments: GPU memory from the CUDA VMM API (cuMemCreate with a POSIX-fd shareable
// handle), mapped into this process and shareable with same-node peers by passing the fd, like
// host segments' memfds. The importer maps the same physical memory at an address of its own and
// is granted access from the owning GPU, and from its own GPU when the two have peer access.
#pragma once

#include <cstdint>
#include <memory>

#include "base/result.h"

namespace weft::mem::cuda {

struct DriverApi;

class DeviceSegment {
 public:
  // `size` bytes (rounded up to the allocation granularity, usually 2 MiB) on `device`.
  // POOL_FULL when the device memory is exhausted; NOT_SUPPORTED without a GPU.
  static Result<std::unique_ptr<DeviceSegment>> Create(int device, uint64_t size);
  // Maps a segment another process exported. Takes ownership of fd in all cases. `device` is
  // the GPU this process copies with; it is granted access when it can reach the owner's GPU
  // (the owner's GPU always is). OUT_OF_RANGE if size exceeds the exported allocation.
  static Result<std::unique_ptr<DeviceSegment>> Import(int fd, uint64_t size, int device);
  ~DeviceSegment();
  DeviceSegment(const DeviceSegment&) = delete;
  DeviceSegment& operator=(const DeviceSegment&) = delete;

  // A new fd for the allocation (close-on-exec is the receiver's business); the caller owns it.
  Result<int> ExportFd() const;

  uint8_t* data() const { return reinterpret_cast<uint8_t*>(ptr_); }
  uint64_t size() const { return size_; }
  int home_device() const { return home_device_; }  // the GPU whose HBM holds the bytes
  bool imported() const { return imported_; }

 private:
  DeviceSegment(std::shared_ptr<const DriverApi> api, uint64_t handle, uint64_t ptr, uint64_t size, int home,
                bool imported)
      : api_(std::move(api)), handle_(handle), ptr_(ptr), size_(size), home_device_(home), imported_(imported) {}
  // Reserves, maps and grants access; releases the handle on failure.
  static Result<std::unique_ptr<DeviceSegment>> MapHandle(std::shared_ptr<const DriverApi> api, uint64_t handle,
                                                          uint64_t size, int home, int extra_device, bool imported);
  std::shared_ptr<const DriverApi> api_;
  uint64_t handle_;  // CUmemGenericAllocationHandle
  uint64_t ptr_;     // CUdeviceptr
  uint64_t size_;
  int home_device_;
  bool imported_;
};

}  // namespace weft::mem::cuda
