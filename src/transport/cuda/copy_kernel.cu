#include "transport/cuda/copy_kernel.h"

#include <algorithm>

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

// The kernel before PageKernelLean (PageKernelVariant::kLegacy), unchanged but for reading the
// interleaved pairs with two 4-byte loads as it read the two lists: 64-bit address arithmetic
// and a runtime block size, held to 32 registers by the 8-block minimum (24-32 bytes of spills).
template <bool kVec16>
__global__ void __launch_bounds__(kCopyKernelThreads, kCopyKernelBlocksPerSm) PageKernelLegacy(const PageCopyParams p) {
  const uint32_t units = p.units;
  for (uint32_t u = blockIdx.x; u < units; u += gridDim.x) {
    const uint32_t page = PageOfUnit(p, u);
    const PageUnit w = PageUnitAt(p, u, page, __ldg(p.pairs + 2 * page), __ldg(p.pairs + 2 * page + 1));
    if (kVec16) {
      CopyAligned<uint4>(reinterpret_cast<uint8_t*>(w.dst), reinterpret_cast<const uint8_t*>(w.src), w.len);
    } else {
      CopyAny(w.dst, w.src, w.len);
    }
  }
}

// len bytes from src to dst, both 16-byte aligned and len a multiple of 16: no head or tail. The
// block size is a compile-time constant so that the four loads of a step are one address plus
// immediate offsets (fewer registers than CopyAligned, which takes blockDim.x at run time).
__device__ __forceinline__ void CopyVec16(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src, uint32_t len) {
  constexpr uint32_t kT = kCopyKernelThreads;
  const uint32_t nvec = len >> 4;
  uint4* __restrict__ d = reinterpret_cast<uint4*>(dst);
  const uint4* __restrict__ s = reinterpret_cast<const uint4*>(src);
  uint32_t i = threadIdx.x;
  for (; i + 3 * kT < nvec; i += 4 * kT) {
    const uint4 a = s[i], b = s[i + kT], c = s[i + 2 * kT], e = s[i + 3 * kT];
    d[i] = a;
    d[i + kT] = b;
    d[i + 2 * kT] = c;
    d[i + 3 * kT] = e;
  }
  for (; i < nvec; i += kT) d[i] = s[i];
}

// Addresses come from the page indices: no descriptor per page is built or uploaded, only the
// index pairs (8 bytes a page; one broadcast 8-byte load per unit gives both indices).
// kOff32: every offset fits 32 bits (PageCopyParams::offsets32), so the arithmetic is 32-bit.
// kAligned: both bases 16-byte aligned and every unit a multiple of 16 bytes (the usual KV case),
// so only the head- and tail-free 16-byte loop is compiled in: 32 registers and no spills at
// 8 blocks per SM (ptxas -v). Loading the next unit's pair before copying the current one took
// 40 registers (6 blocks per SM) or spills at 32, so it is not done: 8 resident blocks hide that
// latency behind each other's copies. The general instantiations (any alignment) are not held
// to 8 blocks (the 64-bit one would spill); the persistent grid is sized from the occupancy CUDA
// reports (PageKernelBlocksPerSm), so no block waits for a second wave.
// kChecked: the pairs come from device memory the host never read, so each is checked against
// the stated maxima (the same answer for every thread of the block: no divergence).
template <bool kOff32, bool kAligned, bool kChecked = false>
__global__ void __launch_bounds__(kCopyKernelThreads, kAligned ? kCopyKernelBlocksPerSm : 1) PageKernelLean(const PageCopyParams p) {
  const uint32_t units = p.units;
  const uint2* __restrict__ pairs = reinterpret_cast<const uint2*>(p.pairs);
  for (uint32_t u = blockIdx.x; u < units; u += gridDim.x) {
    const uint32_t page = PageOfUnit(p, u);
    const uint2 pair = __ldg(pairs + page);
    if (kChecked && (pair.x > p.max_dst || pair.y > p.max_src)) {
      if (threadIdx.x == 0) *reinterpret_cast<volatile uint32_t*>(p.bad) = 1;
      continue;
    }
    const PageUnit w = kOff32 ? PageUnitAt32(p, u, page, pair.x, pair.y) : PageUnitAt(p, u, page, pair.x, pair.y);
    if (kAligned) {
      CopyVec16(reinterpret_cast<uint8_t*>(w.dst), reinterpret_cast<const uint8_t*>(w.src), w.len);
    } else {
      CopyAny(w.dst, w.src, w.len);
    }
  }
}

template <typename K>
int Resident(K kernel) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kCopyKernelThreads, 0) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace

cudaError_t LaunchCopyKernel(const DeviceCopyDesc* descs, uint32_t count, uint32_t grid, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  CopyKernel<<<grid, kCopyKernelThreads, 0, stream>>>(descs, count);
  return cudaGetLastError();
}

const char* PageKernelVariantName(PageKernelVariant v) {
  return v == PageKernelVariant::kLegacy ? "legacy" : "lean";
}

bool PageUnitsAligned(const PageCopyParams& params) {
  return ((params.dst_base | params.src_base) & 15) == 0 && params.page_bytes % 16 == 0 &&
         (params.chunk % 16 == 0 || params.chunks_per_page == 1);
}

cudaError_t LaunchPageKernel(const PageCopyParams& params, uint32_t grid, cudaStream_t stream, PageKernelVariant variant) {
  if (params.units == 0) return cudaSuccess;
  if (variant == PageKernelVariant::kLegacy) {
    // Unit starts advance by whole pages and chunks: with both multiples of 16 (or one unit per
    // page), every unit keeps the bases' relative alignment, and CopyAligned handles the head.
    const bool units16 = params.page_bytes % 16 == 0 && (params.chunk % 16 == 0 || params.chunks_per_page == 1);
    if (((params.dst_base ^ params.src_base) & 15) == 0 && units16)
      PageKernelLegacy<true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else
      PageKernelLegacy<false><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    return cudaGetLastError();
  }
  const bool aligned = PageUnitsAligned(params);
  if (params.bad) {
    if (params.offsets32 && aligned)
      PageKernelLean<true, true, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else if (params.offsets32)
      PageKernelLean<true, false, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else if (aligned)
      PageKernelLean<false, true, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else
      PageKernelLean<false, false, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    return cudaGetLastError();
  }
  if (params.offsets32) {
    if (aligned)
      PageKernelLean<true, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else
      PageKernelLean<true, false><<<grid, kCopyKernelThreads, 0, stream>>>(params);
  } else {
    if (aligned)
      PageKernelLean<false, true><<<grid, kCopyKernelThreads, 0, stream>>>(params);
    else
      PageKernelLean<false, false><<<grid, kCopyKernelThreads, 0, stream>>>(params);
  }
  return cudaGetLastError();
}

int PageKernelBlocksPerSm(PageKernelVariant variant, bool offsets32, bool aligned) {
  if (variant == PageKernelVariant::kLegacy)
    return std::min(Resident(PageKernelLegacy<true>), Resident(PageKernelLegacy<false>));
  if (offsets32) return aligned ? Resident(PageKernelLean<true, true>) : Resident(PageKernelLean<true, false>);
  return aligned ? Resident(PageKernelLean<false, true>) : Resident(PageKernelLean<false, false>);
}

}  // namespace weft::transport::cuda
