// Whether this process can use a CUDA GPU and, when it cannot, why: the answer behind Python's
// weft.cuda_available() / weft.cuda_status() and behind the pool's refusal of device slices.
// The header has no CUDA includes, so callers need no #if: a build without CUDA answers
// kNotBuilt.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace weft {

enum class CudaState {
  kNotBuilt,   // weft was built without nvcc: no CUDA code in this binary
  kNoDriver,   // no NVIDIA driver (libcuda cannot be loaded), or one too old for weft's runtime
  kNoGpu,      // a driver, but no GPU visible to this process (CUDA_VISIBLE_DEVICES, none fitted)
  kAvailable,  // `gpus` GPUs usable
};

struct CudaAvailability {
  CudaState state = CudaState::kNotBuilt;
  int gpus = 0;        // > 0 only when available
  std::string reason;  // one sentence: what was found and, when not available, what to do

  bool available() const { return state == CudaState::kAvailable; }
  // "<state name>: <reason>", e.g. "no driver: libcuda.so.1 cannot be loaded ...".
  std::string ToString() const;
};

// Asks the CUDA runtime (initialising it on the first call; never aborts, never links libcuda).
// Not cached here: the runtime keeps its own answer for the life of the process.
CudaAvailability ProbeCuda();

// OK where a GPU is usable; else NOT_SUPPORTED "no CUDA GPU is usable here (<ToString()>)", the
// one refusal every front end gives for device memory.
Status CudaUsable();

// Whether this build has CUDA code; touches no driver (safe before fork, at import).
bool CudaBuilt();

// "not built", "no driver", "no GPU", "available": the stable first words of ToString().
std::string_view CudaStateName(CudaState state);

}  // namespace weft
