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
// two index lists (8 bytes a page). Every thread of a block reads the unit's two indices (one
// broadcast load each); 8 resident blocks per SM hide that latency behind each other's copies.
// kVec16: every unit agrees with its source mod 16 (the usual KV case: 16-byte multiple pages,
// bases agreeing mod 16), so only the 16-byte path is compiled in; otherwise each unit picks its
// access width. The minimum of kCopyKernelBlocksPerSm blocks holds the kernel to 32 registers:
// the persistent grid (ChooseGrid) assumes all its blocks are resident at once (at 40 registers,
// seen without the bound, only 6 fit per SM and a quarter of the grid ran as a second wave).
template <bool kVec16>
__global__ void __launch_bounds__(kCopyKernelThreads, kCopyKernelBlocksPerSm) PageKernel(const PageCopyParams p) {
  const uint32_t units = static_cast<uint32_t>(p.units);
  for (uint32_t u = blockIdx.x; u < units; u += gridDim.x) {
    const uint32_t page = PageOfUnit(p, u);
    const PageUnit w = PageUnitAt(p, u, page, __ldg(p.dst_pages + page), __ldg(p.src_pages + page));
    if (kVec16) {
      CopyAligned<uint4>(reinterpret_cast<uint8_t*>(w.dst), reinterpret_cast<const uint8_t*>(w.src), w.len);
    } else {
      CopyAny(w.dst, w.src, w.len);
    }
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
  // Unit starts advance by whole pages and chunks: with both multiples of 16 (or one unit per
  // page), every unit has the bases' relative alignment.
  const bool vec16 = ((params.dst_base ^ params.src_base) & 15) == 0 && params.page_bytes % 16 == 0 &&
                     (params.chunk % 16 == 0 || params.chunks_per_page == 1);
  if (vec16)
    PageKernel<true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
  else
    PageKernel<false><<<grid, kCopyKernelThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace weft::transport::cuda
