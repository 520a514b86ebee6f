#include "mem/cuda/cuda_api.h"

#include <fmt/format.h>

namespace weft::mem::cuda {

namespace {

const char* Hint(cudaError_t err) {
  switch (err) {
    case cudaErrorMemoryAllocation: return "device memory is exhausted: free some, or ask for less";
    case cudaErrorInvalidValue: return "an argument is not valid for this call (a pointer from another process, or freed?)";
    case cudaErrorInvalidDevicePointer: return "the pointer is not device memory of this process (freed?)";
    case cudaErrorInvalidDevice: return "no such device: check CUDA_VISIBLE_DEVICES";
    case cudaErrorInvalidResourceHandle: return "the stream or event belongs to another device or was destroyed";
    case cudaErrorNoDevice: return "no CUDA GPU is visible: device paths are off";
    case cudaErrorInsufficientDriver: return "the NVIDIA driver is missing or older than the CUDA runtime";
    case cudaErrorPeerAccessUnsupported: return "these GPUs cannot reach each other's memory: copies stage through host memory";
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
      return "a kernel touched memory it may not; the CUDA context is lost, restart the process";
    default: return "see the CUDA documentation for this error";
  }
}

}  // namespace

bool IsStickyError(cudaError_t err) {
  switch (err) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorECCUncorrectable:
      return true;
    default:
      return false;
  }
}

Status CudaStatus(cudaError_t err, std::string_view what) {
  if (err == cudaSuccess) return OkStatus();
  (void)cudaGetLastError();  // clear the non-sticky error state so it does not surface later
  Code code = Code::kCuda;
  if (err == cudaErrorMemoryAllocation) code = Code::kPoolFull;
  if (err == cudaErrorInvalidValue || err == cudaErrorInvalidDevicePointer) code = Code::kInvalidArgument;
  return Status(code, fmt::format("{}: {} ({}); {}", what, cudaGetErrorName(err), cudaGetErrorString(err), Hint(err)));
}

Status DriverApi::Check(CUresult r, std::string_view what) const {
  if (r == CUDA_SUCCESS) return OkStatus();
  const char* name = nullptr;
  if (!GetErrorName || GetErrorName(r, &name) != CUDA_SUCCESS || !name) name = "CUDA_ERROR_UNKNOWN";
  (void)cudaGetLastError();
  if (r == CUDA_ERROR_OUT_OF_MEMORY)
    return Status(Code::kPoolFull, fmt::format("{}: {}; device memory is exhausted: free some, or ask for less", what, name));
  if (r == CUDA_ERROR_INVALID_VALUE)
    return Status(Code::kInvalidArgument, fmt::format("{}: {}; an argument is not valid for this call", what, name));
  return Status(Code::kCuda, fmt::format("{}: {} (driver error {})", what, name, static_cast<int>(r)));
}

Result<int> Probe() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Error(Code::kNotSupported, "no CUDA GPU: cudaGetDeviceCount says {} ({})", cudaGetErrorName(e),
                 cudaGetErrorString(e));
  }
  if (n == 0) return Error(Code::kNotSupported, "no CUDA GPU: the driver sees no device");
  return n;
}

Result<std::shared_ptr<const DriverApi>> LoadDriverApi() {
  auto api = std::make_shared<DriverApi>();
  auto load = [](const char* name, auto& fn, bool required) -> Status {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    // The version is the one these headers describe, so struct layouts (CUdevResource) match.
    cudaError_t e = cudaGetDriverEntryPointByVersion(name, &p, CUDA_VERSION, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !p) {
      (void)cudaGetLastError();
      if (!required) return OkStatus();
      return Error(Code::kNotSupported, "the CUDA driver has no {} ({}): update the NVIDIA driver", name,
                   cudaGetErrorName(e));
    }
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    return OkStatus();
  };
  WEFT_RETURN_IF_ERROR(load("cuGetErrorName", api->GetErrorName, true));
  WEFT_RETURN_IF_ERROR(load("cuDeviceGet", api->DeviceGet, true));
  WEFT_RETURN_IF_ERROR(load("cuMemCreate", api->MemCreate, true));
  WEFT_RETURN_IF_ERROR(load("cuMemRelease", api->MemRelease, true));
  WEFT_RETURN_IF_ERROR(load("cuMemAddressReserve", api->MemAddressReserve, true));
  WEFT_RETURN_IF_ERROR(load("cuMemAddressFree", api->MemAddressFree, true));
  WEFT_RETURN_IF_ERROR(load("cuMemMap", api->MemMap, true));
  WEFT_RETURN_IF_ERROR(load("cuMemUnmap", api->MemUnmap, true));
  WEFT_RETURN_IF_ERROR(load("cuMemSetAccess", api->MemSetAccess, true));
  WEFT_RETURN_IF_ERROR(load("cuMemGetAllocationGranularity", api->MemGetAllocationGranularity, true));
  WEFT_RETURN_IF_ERROR(load("cuMemExportToShareableHandle", api->MemExportToShareableHandle, true));
  WEFT_RETURN_IF_ERROR(load("cuMemImportFromShareableHandle", api->MemImportFromShareableHandle, true));
  WEFT_RETURN_IF_ERROR(load("cuMemGetAllocationPropertiesFromHandle", api->MemGetAllocationPropertiesFromHandle, true));
  WEFT_RETURN_IF_ERROR(load("cuMemGetAddressRange", api->MemGetAddressRange, true));
  WEFT_RETURN_IF_ERROR(load("cuMemGetAccess", api->MemGetAccess, true));
  WEFT_RETURN_IF_ERROR(load("cuPointerGetAttributes", api->PointerGetAttributes, true));
  WEFT_RETURN_IF_ERROR(load("cuMemRetainAllocationHandle", api->MemRetainAllocationHandle, true));
  WEFT_RETURN_IF_ERROR(load("cuDeviceGetDevResource", api->DeviceGetDevResource, false));
  WEFT_RETURN_IF_ERROR(load("cuDevSmResourceSplitByCount", api->DevSmResourceSplitByCount, false));
  WEFT_RETURN_IF_ERROR(load("cuDevResourceGenerateDesc", api->DevResourceGenerateDesc, false));
  WEFT_RETURN_IF_ERROR(load("cuGreenCtxCreate", api->GreenCtxCreate, false));
  WEFT_RETURN_IF_ERROR(load("cuGreenCtxDestroy", api->GreenCtxDestroy, false));
  WEFT_RETURN_IF_ERROR(load("cuGreenCtxStreamCreate", api->GreenCtxStreamCreate, false));
  return std::shared_ptr<const DriverApi>(std::move(api));
}

}  // namespace weft::mem::cuda
