#include "mem/cuda/device_segment.h"

#include <unistd.h>

#include "base/log.h"
#include "mem/cuda/cuda_api.h"

namespace weft::mem::cuda {

namespace {

CUmemAllocationProp PropFor(int device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  return prop;
}

Result<std::shared_ptr<const DriverApi>> Api() {
  WEFT_RETURN_IF_ERROR(Probe().status());
  return LoadDriverApi();
}

}  // namespace

Result<std::unique_ptr<DeviceSegment>> DeviceSegment::MapHandle(std::shared_ptr<const DriverApi> api,
                                                                uint64_t handle, uint64_t size, int home,
                                                                int extra_device, bool imported) {
  CUdeviceptr ptr = 0;
  Status s = api->Check(api->MemAddressReserve(&ptr, size, 0, 0, 0), "cuMemAddressReserve");
  if (s.ok()) {
    s = api->Check(api->MemMap(ptr, size, 0, handle, 0), "cuMemMap");
    // A valid imported handle fails to map (INVALID_VALUE, or NOT_SUPPORTED on driver 580) when
    // asked for more bytes than the exporter allocated.
    if (!s.ok() && imported)
      s = Error(Code::kOutOfRange, "mapping {} bytes of an imported device segment failed ({}): more than the "
                "exporter allocated?", size, s.message());
    if (!s.ok()) api->MemAddressFree(ptr, size);
  }
  if (!s.ok()) {
    api->MemRelease(handle);
    return s;
  }
  CUmemAccessDesc access[2]{};
  int n = 0;
  access[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access[n].location.id = home;
  access[n++].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (extra_device >= 0 && extra_device != home) {
    int can = 0;
    if (cudaDeviceCanAccessPeer(&can, extra_device, home) == cudaSuccess && can) {
      access[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      access[n].location.id = extra_device;
      access[n++].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    } else {
      (void)cudaGetLastError();
      WEFT_LOG_INFO("GPU {} has no peer access to GPU {}: copies to its imported segment use GPU {}", extra_device,
                    home, home);
    }
  }
  s = api->Check(api->MemSetAccess(ptr, size, access, n), "cuMemSetAccess");
  if (!s.ok()) {
    api->MemUnmap(ptr, size);
    api->MemAddressFree(ptr, size);
    api->MemRelease(handle);
    return s;
  }
  return std::unique_ptr<DeviceSegment>(new DeviceSegment(std::move(api), handle, ptr, size, home, imported));
}

Result<std::unique_ptr<DeviceSegment>> DeviceSegment::Create(int device, uint64_t size) {
  if (size == 0) return Error(Code::kInvalidArgument, "a device segment needs a size above 0");
  WEFT_ASSIGN_OR_RETURN(auto api, Api());
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || device < 0 || device >= count)
    return Error(Code::kInvalidArgument, "no CUDA device {} (this process sees {})", device, count);
  CUmemAllocationProp prop = PropFor(device);
  size_t gran = 0;
  WEFT_RETURN_IF_ERROR(api->Check(api->MemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
                                  "cuMemGetAllocationGranularity"));
  if (gran == 0) gran = 2 << 20;
  const uint64_t rounded = (size + gran - 1) / gran * gran;
  CUmemGenericAllocationHandle handle = 0;
  WEFT_RETURN_IF_ERROR(api->Check(api->MemCreate(&handle, rounded, &prop, 0),
                                  fmt::format("cuMemCreate of {} bytes on GPU {}", rounded, device)));
  return MapHandle(std::move(api), handle, rounded, device, -1, false);
}

Result<std::unique_ptr<DeviceSegment>> DeviceSegment::Import(int fd, uint64_t size, int device) {
  auto close_fd = [fd] { if (fd >= 0) ::close(fd); };
  if (fd < 0) return Error(Code::kInvalidArgument, "importing a device segment from fd {}", fd);
  auto api = Api();
  if (!api.ok()) {
    close_fd();
    return api.status();
  }
  CUmemGenericAllocationHandle handle = 0;
  Status s = (*api)->Check((*api)->MemImportFromShareableHandle(&handle, reinterpret_cast<void*>(static_cast<uintptr_t>(fd)),
                                                                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
                           "cuMemImportFromShareableHandle");
  close_fd();  // the handle keeps the allocation alive; the fd is not needed any more
  WEFT_RETURN_IF_ERROR(s);
  CUmemAllocationProp prop{};
  s = (*api)->Check((*api)->MemGetAllocationPropertiesFromHandle(&prop, handle), "cuMemGetAllocationPropertiesFromHandle");
  size_t gran = 0;
  if (s.ok())
    s = (*api)->Check((*api)->MemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
                      "cuMemGetAllocationGranularity");
  if (s.ok() && (size == 0 || (gran && size % gran != 0)))
    s = Error(Code::kInvalidArgument, "an imported device segment's size ({}) must be a multiple of {} above 0", size, gran);
  if (!s.ok()) {
    (*api)->MemRelease(handle);
    return s;
  }
  return MapHandle(std::move(*api), handle, size, prop.location.id, device, true);
}

DeviceSegment::~DeviceSegment() {
  // Copies in flight must have finished (the segment table's pins make sure of it).
  api_->MemUnmap(ptr_, size_);
  api_->MemAddressFree(ptr_, size_);
  api_->MemRelease(handle_);
}

Result<int> DeviceSegment::ExportFd() const {
  int fd = -1;
  WEFT_RETURN_IF_ERROR(api_->Check(api_->MemExportToShareableHandle(&fd, handle_, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0),
                                   "cuMemExportToShareableHandle"));
  return fd;
}

}  // namespace weft::mem::cuda
