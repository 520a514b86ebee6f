#include "mem/cuda/host_device_copy.h"

#include <mutex>
#include <utility>
#include <vector>

#include "mem/cuda/cuda_api.h"

namespace weft::mem::cuda {

bool DevicesPresent() {
  auto n = Probe();
  return n.ok() && *n > 0;
}

namespace {

// The device of a device pointer, or -1.
int DeviceOf(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();  // an unknown host pointer is not an error worth keeping
    return -1;
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

}  // namespace

bool IsDevicePointer(const void* p) { return DevicesPresent() && DeviceOf(p) >= 0; }

int DeviceOfPointer(const void* p) { return DevicesPresent() ? DeviceOf(p) : -1; }

Status SynchronizeStream(uint64_t stream) {
  if (auto n = Probe(); !n.ok()) return n.status();
  return CudaStatus(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)),
                    fmt::format("waiting for the work queued on stream {:#x}", stream));
}

Status CopyHostDevice(void* dst, const void* src, uint64_t len) {
  if (len == 0) return OkStatus();
  DeviceGuard guard;
  int device = DeviceOf(dst);
  if (device < 0) device = DeviceOf(src);
  if (device >= 0) {
    if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return CudaStatus(e, "selecting the device");
  }
  WEFT_RETURN_IF_ERROR(
      CudaStatus(cudaMemcpy(dst, src, len, cudaMemcpyDefault), "copying between host and device memory"));
  // From pageable host memory, cudaMemcpy returns once the bytes are in the driver's staging
  // buffer, before the DMA into the device has landed (CUDA's "API synchronization behavior").
  // A later read of that device memory on a non-blocking stream (weft's own copy streams) does
  // not wait for that DMA and may see the old bytes: wait for it here, as "synchronously" says.
  return CudaStatus(cudaStreamSynchronize(cudaStreamLegacy), "waiting for a host-to-device copy to land");
}

}  // namespace weft::mem::cuda

namespace weft::mem::cuda {

Result<void*> AllocPinnedHost(uint64_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (e != cudaSuccess) return CudaStatus(e, fmt::format("allocating {} bytes of pinned host memory", bytes));
  return p;
}

void FreePinnedHost(void* p) {
  if (p && cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
}

Result<void*> AllocDevice(int device, uint64_t bytes) {
  DeviceGuard guard;
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return CudaStatus(e, "selecting the device");
  void* p = nullptr;
  if (cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess)
    return CudaStatus(e, fmt::format("allocating {} bytes on device {}", bytes, device));
  return p;
}

void FreeDevice(void* p) {
  if (p && cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

struct HostDeviceCopier::Impl {
  std::mutex mu;
  std::vector<std::pair<int, cudaStream_t>> idle;  // (device, stream) not in use
  std::vector<cudaStream_t> all;
};

HostDeviceCopier::HostDeviceCopier() : impl_(std::make_unique<Impl>()) {}

HostDeviceCopier::~HostDeviceCopier() {
  for (cudaStream_t s : impl_->all)
    if (cudaStreamDestroy(s) != cudaSuccess) (void)cudaGetLastError();
}

Status HostDeviceCopier::Copy(void* dst, const void* src, uint64_t len) {
  if (len == 0) return OkStatus();
  DeviceGuard guard;
  int device = DeviceOf(dst);
  if (device < 0) device = DeviceOf(src);
  if (device < 0) return CopyHostDevice(dst, src, len);  // no device end: let the runtime say what it is
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return CudaStatus(e, "selecting the device");
  cudaStream_t stream = nullptr;
  {
    std::lock_guard lk(impl_->mu);
    for (size_t i = 0; i < impl_->idle.size(); ++i) {
      if (impl_->idle[i].first != device) continue;
      stream = impl_->idle[i].second;
      impl_->idle.erase(impl_->idle.begin() + static_cast<ptrdiff_t>(i));
      break;
    }
  }
  if (!stream) {
    if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess)
      return CudaStatus(e, "creating a copy stream");
    std::lock_guard lk(impl_->mu);
    impl_->all.push_back(stream);
  }
  Status s = CudaStatus(cudaMemcpyAsync(dst, src, len, cudaMemcpyDefault, stream),
                        "copying between host and device memory");
  Status synced = CudaStatus(cudaStreamSynchronize(stream), "waiting for a host/device copy");
  {
    std::lock_guard lk(impl_->mu);
    impl_->idle.emplace_back(device, stream);
  }
  return s.ok() ? synced : s;
}

}  // namespace weft::mem::cuda
