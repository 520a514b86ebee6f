#include "transport/cuda/copy_kernel.h"

namespace weft::transport::cuda {

namespace {

// Copies len bytes with accesses of V (16, 8 or 4 bytes) once dst is V-aligned; src has the same
// misalignment, so it is aligned then too. Head and tail bytes go one per thread.
template <typename V>
__device__ __forceinline__ void CopyAligned(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, uint32_t len) {
  constexpr uint32_t kV = sizeof(V);
  const uint32_t tid = threadIdx.x;
  const uint32_t threads = blockDim.x;
  uint32_t head = static_cast<uint32_t>((kV - (reinterpret_cast<uintptr_t>(dst) & (kV - 1))) & (kV - 1));
  if (head > len) head = len;
  if (tid < head) dst[tid] = src[tid];
  const uint32_t nvec = (len - head) / kV;
  V* __restrict__ d = reinterpret_cast<V*>(dst + head);
  const V* __restrict__ s = reinterpret_cast<const V*>(src + head);
  uint32_t i = tid;
  // Four independent loads in flight per thread before the first store.
  for (; i + 3 * threads < nvec; i += 4 * threads) {
    V a = s[i], b = s[i + threads], c = s[i + 2 * threads], e = s[i + 3 * threads];
    d[i] = a;
    d[i + threads] = b;
    d[i + 2 * threads] = c;
    d[i + 3 * threads] = e;
  }
  for (; i < nvec; i += threads) d[i] = s[i];
  const uint32_t done = head + nvec * kV;
  if (tid < len - done) dst[done + tid] = src[done + tid];
}

__device__ __forceinline__ void CopyBytes(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, uint32_t len) {
  for (uint32_t i = threadIdx.x; i < len; i += blockDim.x) dst[i] = src[i];
}

// The widest access both ends allow: 16 bytes when dst and src agree in alignment mod 16.
__device__ __forceinline__ void CopyAny(uint64_t dst_addr, uint64_t src_addr, uint32_t len) {
  auto* dst = reinterpret_cast<uint8_t*>(dst_addr);
  const auto* src = reinterpret_cast<const uint8_t*>(src_addr);
  const uint32_t mis = static_cast<uint32_t>((dst_addr ^ src_addr) & 15);
  if (mis == 0) {
    CopyAligned<uint4>(dst, src, len);
  } else if ((mis & 7) == 0) {
    CopyAligned<uint2>(dst, src, len);
  } else if ((mis & 3) == 0) {
    CopyAligned<uint32_t>(dst, src, len);
  } else {
    CopyBytes(dst, src, len);
  }
}

__global__ void __launch_bounds__(kCopyKernelThreads) CopyKernel(const DeviceCopyDesc* __restrict__ descs, uint32_t count) {
  // Persistent grid: each block walks the descriptors with stride gridDim.x.
  for (uint32_t k = blockIdx.x; k < count; k += gridDim.x) {
    const DeviceCopyDesc desc = descs[k];
    CopyAny(desc.dst, desc.src, desc.len);
  }
}

// Addresses come from the page indices: no descriptor per page is built or uploaded, only the
// two index lists (8 bytes a page). Every thread of a block reads the same two indices (one
// broadcast load each).
__global__ void __launch_bounds__(kCopyKernelThreads) PageKernel(const PageCopyParams p) {
  for (uint64_t u = blockIdx.x; u < p.units; u += gridDim.x) {
    const uint64_t page = PageOfUnit(p, u);
    const PageUnit w = PageUnitAt(p, u, page, __ldg(p.dst_pages + page), __ldg(p.src_pages + page));
    CopyAny(w.dst, w.src, w.len);
  }
}

}  // namespace

cudaError_t LaunchCopyKernel(const DeviceCopyDesc* descs, uint32_t count, uint32_t grid, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  CopyKernel<<<grid, kCopyKernelThreads, 0, stream>>>(descs, count);
  return cudaGetLastError();
}

cudaError_t LaunchPageKernel(const PageCopyParams& params, uint32_t grid, cudaStream_t stream) {
  if (params.units == 0) return cudaSuccess;
  PageKernel<<<grid, kCopyKernelThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace weft::transport::cuda
