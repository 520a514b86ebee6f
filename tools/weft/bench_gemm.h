// The GEMM that `weft bench-gpu` runs next to the copy kernels (bench_gemm.cu).
#pragma once

#include <cuda_runtime_api.h>

namespace weft::tools {

// Enqueues C = A × B (FP32, row-major, m × k by k × n) on `stream`. m and n must be multiples of
// 128 and k of 8 (cudaErrorInvalidValue otherwise).
cudaError_t LaunchBenchGemm(const float* a, const float* b, float* c, int m, int n, int k, cudaStream_t stream);

}  // namespace weft::tools
