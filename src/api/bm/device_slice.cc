#include "api/bm/device_slice.h"

#include <unistd.h>

#include "api/cuda_availability.h"

#if WEFT_HAVE_CUDA
#include "mem/cuda/cuda_api.h"
#include "mem/cuda/device_segment.h"
#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::bm {

Status DeviceSlicesUsable() { return CudaUsable(); }

#if WEFT_HAVE_CUDA

namespace {
DeviceSlice Wrap(std::unique_ptr<mem::cuda::DeviceSegment> seg, uint64_t size) {
  DeviceSlice s;
  s.data = seg->data();
  s.size = size;
  s.gpu = seg->home_device();
  s.hold = std::shared_ptr<mem::cuda::DeviceSegment>(std::move(seg));
  return s;
}
}  // namespace

int UsableGpuCount() {
  auto n = mem::cuda::Probe();
  return n.ok() ? *n : 0;
}

Result<DeviceSlice> CreateDeviceSlice(int device, uint64_t size) {
  WEFT_RETURN_IF_ERROR(DeviceSlicesUsable());
  WEFT_ASSIGN_OR_RETURN(auto seg, mem::cuda::DeviceSegment::Create(device, size));
  return Wrap(std::move(seg), size);
}

Result<int> ExportDeviceSlice(const DeviceSlice& slice) {
  auto* seg = static_cast<mem::cuda::DeviceSegment*>(slice.hold.get());
  if (!seg) return Error(Code::kInvalidArgument, "exporting a device slice that is not mapped");
  return seg->ExportFd();
}

transport::DeviceStagingOps TcpDeviceStaging() {
  if (!mem::cuda::DevicesPresent()) return {};
  auto copier = std::make_shared<mem::cuda::HostDeviceCopier>();
  transport::DeviceStagingOps ops;
  ops.copy = [copier](void* dst, const void* src, uint64_t len) { return copier->Copy(dst, src, len); };
  ops.host.alloc = [](uint64_t bytes) { return mem::cuda::AllocPinnedHost(bytes); };
  ops.host.free = [](void* p, uint64_t) { mem::cuda::FreePinnedHost(p); };
  return ops;
}

Result<DeviceSlice> ImportDeviceSlice(int fd, uint64_t size, int device) {
  if (Status usable = DeviceSlicesUsable(); !usable.ok()) {
    if (fd >= 0) ::close(fd);
    return usable;
  }
  WEFT_ASSIGN_OR_RETURN(auto seg, mem::cuda::DeviceSegment::Import(fd, size, device));
  return Wrap(std::move(seg), size);
}

#else  // !WEFT_HAVE_CUDA

int UsableGpuCount() { return 0; }

Result<DeviceSlice> CreateDeviceSlice(int, uint64_t) { return DeviceSlicesUsable(); }

Result<int> ExportDeviceSlice(const DeviceSlice&) { return DeviceSlicesUsable(); }

transport::DeviceStagingOps TcpDeviceStaging() { return {}; }

Result<DeviceSlice> ImportDeviceSlice(int fd, uint64_t, int) {
  if (fd >= 0) ::close(fd);
  return DeviceSlicesUsable();
}

#endif

}  // namespace weft::bm
