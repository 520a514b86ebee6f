#include "mem/cuda/host_device_copy.h"

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

Status CopyHostDevice(void* dst, const void* src, uint64_t len) {
  if (len == 0) return OkStatus();
  DeviceGuard guard;
  int device = DeviceOf(dst);
  if (device < 0) device = DeviceOf(src);
  if (device >= 0) {
    if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) return CudaStatus(e, "selecting the device");
  }
  return CudaStatus(cudaMemcpy(dst, src, len, cudaMemcpyDefault), "copying between host and device memory");
}

}  // namespace weft::mem::cuda
