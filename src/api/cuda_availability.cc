#include "api/cuda_availability.h"

#include <cstdlib>

#include <fmt/format.h>

#if WEFT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace weft {

std::string_view CudaStateName(CudaState state) {
  switch (state) {
    case CudaState::kNotBuilt: return "not built";
    case CudaState::kNoDriver: return "no driver";
    case CudaState::kNoGpu: return "no GPU";
    case CudaState::kAvailable: return "available";
  }
  return "unknown";
}

std::string CudaAvailability::ToString() const { return fmt::format("{}: {}", CudaStateName(state), reason); }

bool CudaBuilt() { return WEFT_HAVE_CUDA != 0; }

Status CudaUsable() {
  const CudaAvailability cuda = ProbeCuda();
  if (cuda.available()) return OkStatus();
  return Error(Code::kNotSupported, "no CUDA GPU is usable here ({})", cuda.ToString());
}

#if WEFT_HAVE_CUDA

namespace {

std::string CudaVersionText(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

// The driver's side of a cudaErrorInsufficientDriver: absent (version 0, the runtime could not
// load libcuda) or present but older than the runtime linked into weft.
CudaAvailability DriverProblem() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  (void)cudaGetLastError();
  if (driver == 0) {
    return {CudaState::kNoDriver, 0,
            "libcuda.so.1 cannot be loaded (no NVIDIA driver here); install the NVIDIA driver, or run on a "
            "machine with a GPU, to use device memory"};
  }
  return {CudaState::kNoDriver, 0,
          fmt::format("the NVIDIA driver supports CUDA {} but weft's CUDA runtime is {}: update the driver",
                      CudaVersionText(driver), CudaVersionText(CUDART_VERSION))};
}

// What CUDA_VISIBLE_DEVICES says, when it is set: the usual reason a machine with GPUs shows none.
std::string VisibleDevicesNote() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  if (!v) return "";
  return fmt::format(" (CUDA_VISIBLE_DEVICES='{}' hides the others)", v);
}

}  // namespace

CudaAvailability ProbeCuda() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0)
    return {CudaState::kAvailable, n, fmt::format("{} CUDA GPU{}", n, n == 1 ? "" : "s")};
  (void)cudaGetLastError();  // do not leave the error for an unrelated later call to find
  switch (e) {
    case cudaSuccess:
    case cudaErrorNoDevice:
      return {CudaState::kNoGpu, 0,
              fmt::format("the NVIDIA driver is loaded but sees no CUDA device{}", VisibleDevicesNote())};
    case cudaErrorInsufficientDriver:
      return DriverProblem();
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
      return {CudaState::kNoDriver, 0,
              fmt::format("the NVIDIA driver is not usable: {} ({}); reinstall or update the driver",
                          cudaGetErrorName(e), cudaGetErrorString(e))};
    default:
      return {CudaState::kNoGpu, 0,
              fmt::format("cudaGetDeviceCount says {} ({}){}", cudaGetErrorName(e),
                          cudaGetErrorString(e), VisibleDevicesNote())};
  }
}

#else  // !WEFT_HAVE_CUDA

CudaAvailability ProbeCuda() {
  return {CudaState::kNotBuilt, 0,
          "this weft was built without CUDA (no nvcc at build time, or WEFT_ENABLE_CUDA=OFF); rebuild it "
          "where nvcc is on PATH or at /usr/local/cuda/bin to use device memory"};
}

#endif

}  // namespace weft
