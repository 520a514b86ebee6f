// A compute-bound FP32 GEMM for `weft bench-gpu`: the model compute that copy kernels compete
// with for SMs. A plain tiled kernel (128 × 128 tiles, 8 × 8 outputs per thread) rather than
// cuBLAS, so the GPU bundle stays small; it only has to keep every SM busy with arithmetic for
// milliseconds, not to be fast.
#include "tools/weft/bench_gemm.h"

namespace weft::tools {

namespace {

constexpr int kTile = 128;
constexpr int kDepth = 8;

// C (m × n) = A (m × k) × B (k × n), row-major; m, n multiples of 128, k a multiple of 8.
__global__ void __launch_bounds__(256) Sgemm128(const float* __restrict__ a, const float* __restrict__ b,
                                                float* __restrict__ c, int m, int n, int k) {
  __shared__ float as[kDepth][kTile];  // A's tile transposed: as[kk][row]
  __shared__ float bs[kDepth][kTile];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  float acc[8][8] = {};
  // Loads per step: A 128 × 8 and B 8 × 128, four floats per thread each.
  const int ar = threadIdx.x / 2, ac = (threadIdx.x % 2) * 4;
  const int br = threadIdx.x / 32, bc = (threadIdx.x % 32) * 4;
  for (int k0 = 0; k0 < k; k0 += kDepth) {
    const float4 av = *reinterpret_cast<const float4*>(a + static_cast<size_t>(row0 + ar) * k + k0 + ac);
    as[ac + 0][ar] = av.x;
    as[ac + 1][ar] = av.y;
    as[ac + 2][ar] = av.z;
    as[ac + 3][ar] = av.w;
    *reinterpret_cast<float4*>(&bs[br][bc]) =
        *reinterpret_cast<const float4*>(b + static_cast<size_t>(k0 + br) * n + col0 + bc);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kDepth; ++kk) {
      float ra[8], rb[8];
      // Rows ty*4.. and 64+ty*4.., columns tx*4.. and 64+tx*4..: float4 reads, few bank conflicts.
      const float4 a0 = *reinterpret_cast<const float4*>(&as[kk][ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&as[kk][64 + ty * 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&bs[kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&bs[kk][64 + tx * 4]);
      ra[0] = a0.x, ra[1] = a0.y, ra[2] = a0.z, ra[3] = a0.w, ra[4] = a1.x, ra[5] = a1.y, ra[6] = a1.z, ra[7] = a1.w;
      rb[0] = b0.x, rb[1] = b0.y, rb[2] = b0.z, rb[3] = b0.w, rb[4] = b1.x, rb[5] = b1.y, rb[6] = b1.z, rb[7] = b1.w;
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int row = row0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int col = col0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
      c[static_cast<size_t>(row) * n + col] = acc[i][j];
    }
  }
}

}  // namespace

cudaError_t LaunchBenchGemm(const float* a, const float* b, float* c, int m, int n, int k, cudaStream_t stream) {
  if (m % kTile || n % kTile || k % kDepth) return cudaErrorInvalidValue;
  const dim3 grid(n / kTile, m / kTile);
  Sgemm128<<<grid, 256, 0, stream>>>(a, b, c, m, n, k);
  return cudaGetLastError();
}

}  // namespace weft::tools
