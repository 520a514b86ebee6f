// The slice of CUDA that weft uses, reached without linking libcuda: the runtime is linked
// statically (it dlopens the driver itself) and every driver function weft needs comes from
// cudaGetDriverEntryPointByVersion. On a machine without a GPU or a driver nothing here aborts;
// Probe() says why there is no GPU and the caller leaves the device paths out.
//
// Internal to weft_cuda: this header includes the CUDA headers.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string_view>

#include "base/result.h"

namespace weft::mem::cuda {

// A Status for a failed runtime call, with the CUDA error's name and text
// and what to do. Device memory exhausted is POOL_FULL; an invalid argument INVALID_ARGUMENT;
// anything else CUDA. Clears the runtime's last (non-sticky) error so it does not leak into the
// next unrelated call.
Status CudaStatus(cudaError_t err, std::string_view what);
// True after errors that poison the CUDA context for the rest of the process (an illegal
// address in a kernel, say): every later call fails, so the message says to restart.
bool IsStickyError(cudaError_t err);

// Driver functions, loaded once per owner (no process-global table): a CudaTransport and each
// device segment hold a shared_ptr to one.
struct DriverApi {
  decltype(&::cuGetErrorName) GetErrorName = nullptr;
  decltype(&::cuDeviceGet) DeviceGet = nullptr;
  decltype(&::cuMemCreate) MemCreate = nullptr;
  decltype(&::cuMemRelease) MemRelease = nullptr;
  decltype(&::cuMemAddressReserve) MemAddressReserve = nullptr;
  decltype(&::cuMemAddressFree) MemAddressFree = nullptr;
  decltype(&::cuMemMap) MemMap = nullptr;
  decltype(&::cuMemUnmap) MemUnmap = nullptr;
  decltype(&::cuMemSetAccess) MemSetAccess = nullptr;
  decltype(&::cuMemGetAllocationGranularity) MemGetAllocationGranularity = nullptr;
  decltype(&::cuMemExportToShareableHandle) MemExportToShareableHandle = nullptr;
  decltype(&::cuMemImportFromShareableHandle) MemImportFromShareableHandle = nullptr;
  decltype(&::cuMemGetAllocationPropertiesFromHandle) MemGetAllocationPropertiesFromHandle = nullptr;
  decltype(&::cuMemGetAddressRange) MemGetAddressRange = nullptr;
  decltype(&::cuMemGetAccess) MemGetAccess = nullptr;
  decltype(&::cuPointerGetAttributes) PointerGetAttributes = nullptr;
  decltype(&::cuMemRetainAllocationHandle) MemRetainAllocationHandle = nullptr;
  // Green contexts (CUDA 12.4+); null when the driver lacks them.
  decltype(&::cuDeviceGetDevResource) DeviceGetDevResource = nullptr;
  decltype(&::cuDevSmResourceSplitByCount) DevSmResourceSplitByCount = nullptr;
  decltype(&::cuDevResourceGenerateDesc) DevResourceGenerateDesc = nullptr;
  decltype(&::cuGreenCtxCreate) GreenCtxCreate = nullptr;
  decltype(&::cuGreenCtxDestroy) GreenCtxDestroy = nullptr;
  decltype(&::cuGreenCtxStreamCreate) GreenCtxStreamCreate = nullptr;

  bool has_green_contexts() const {
    return DeviceGetDevResource && DevSmResourceSplitByCount && DevResourceGenerateDesc && GreenCtxCreate &&
           GreenCtxDestroy && GreenCtxStreamCreate;
  }
  // A Status for a failed driver call (CUDA, or POOL_FULL for out of memory).
  Status Check(CUresult r, std::string_view what) const;
};

// Restores the calling thread's current device on scope exit: weft switches devices to run a
// copy, and must not leave the application's thread (torch's current device) switched.
class DeviceGuard {
 public:
  DeviceGuard() {
    if (cudaGetDevice(&saved_) != cudaSuccess) {
      (void)cudaGetLastError();
      saved_ = -1;
    }
  }
  ~DeviceGuard() {
    if (saved_ >= 0) cudaSetDevice(saved_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int saved_ = -1;
};

// The number of CUDA devices, or NOT_SUPPORTED with the reason there are none (no driver, no
// device, driver older than the runtime). Initialises the runtime; never aborts.
Result<int> Probe();

// Loads the driver functions (NOT_SUPPORTED without a driver).
Result<std::shared_ptr<const DriverApi>> LoadDriverApi();

}  // namespace weft::mem::cuda
