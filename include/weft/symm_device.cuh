// One-sided operations on a team's device heaps from CUDA kernels, through the mappings of every
// rank's heap in this process (no proxy thread, no host call): NVSHMEM's NVLink path, for weft's
// teams. Get the view on the host with Team::DeviceHeaps() and pass it to the kernel by value.
//
//   __global__ void ring(weft::symm::DeviceHeapView h, uint64_t data, uint64_t sig, uint64_t n) {
//     uint32_t next = (h.rank + 1) % h.size;
//     weft::symm::device::PutSignal(h, next, data, weft::symm::device::Local(h, data), n, sig, 1);
//     weft::symm::device::WaitUntilGe(h, sig, 1);
//   }
//
// Offsets are heap offsets (Team::DeviceMalloc), the same on every rank. Nothing here checks
// bounds: check on the host before the launch. Puts and gets are per thread (a loop of 16-byte
// or byte copies); for large transfers spread them over a block and signal once after
// __syncthreads(). Include from .cu files (nvcc, C++17).
#pragma once

#include <cstdint>

#include <weft/symm_device_view.h>

namespace weft::symm::device {

// Rank r's heap at offset, as this process reaches it.
__device__ inline uint8_t* At(const DeviceHeapView& h, uint32_t rank, uint64_t offset) {
  return h.heap[rank] + offset;
}
__device__ inline uint8_t* Local(const DeviceHeapView& h, uint64_t offset) { return At(h, h.rank, offset); }

__device__ inline void CopyBytes(uint8_t* dst, const uint8_t* src, uint64_t len) {
  uint64_t i = 0;
  if ((reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src)) % 16 == 0)
    for (; i + 16 <= len; i += 16) *reinterpret_cast<uint4*>(dst + i) = __ldcg(reinterpret_cast<const uint4*>(src + i));
  for (; i < len; ++i) dst[i] = __ldcg(src + i);
}

// len bytes from this thread's src into rank's heap at dst_offset.
__device__ inline void Put(const DeviceHeapView& h, uint32_t rank, uint64_t dst_offset, const void* src,
                           uint64_t len) {
  CopyBytes(At(h, rank, dst_offset), static_cast<const uint8_t*>(src), len);
}
// len bytes of rank's heap at src_offset into this thread's dst.
__device__ inline void Get(const DeviceHeapView& h, void* dst, uint32_t rank, uint64_t src_offset, uint64_t len) {
  CopyBytes(static_cast<uint8_t*>(dst), At(h, rank, src_offset), len);
}

// Orders this thread's earlier puts before its later ones as every GPU and the host see them.
__device__ inline void Fence() { __threadfence_system(); }
__device__ inline void Quiet() { __threadfence_system(); }

// The put, then rank's 8-byte signal word at sig_offset set to (or, with add, increased by) value
// once the data is visible there (release at system scope).
__device__ inline void PutSignal(const DeviceHeapView& h, uint32_t rank, uint64_t dst_offset, const void* src,
                                 uint64_t len, uint64_t sig_offset, uint64_t value, bool add = false) {
  Put(h, rank, dst_offset, src, len);
  __threadfence_system();
  auto* sig = reinterpret_cast<uint64_t*>(At(h, rank, sig_offset));
  if (add)
    asm volatile("red.release.sys.global.add.u64 [%0], %1;" ::"l"(sig), "l"(value) : "memory");
  else
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(sig), "l"(value) : "memory");
}

// This rank's signal word at sig_offset, read with acquire at system scope.
__device__ inline uint64_t SignalValue(const DeviceHeapView& h, uint64_t sig_offset) {
  uint64_t v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(Local(h, sig_offset)) : "memory");
  return v;
}

// Spins until this rank's signal word reaches value or more; false after timeout_ns (0: never
// gives up — only where every writer is sure to come).
__device__ inline bool WaitUntilGe(const DeviceHeapView& h, uint64_t sig_offset, uint64_t value,
                                   uint64_t timeout_ns = 10'000'000'000ull) {
  uint64_t start;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  for (uint32_t spin = 1; SignalValue(h, sig_offset) < value; ++spin) {
    if (timeout_ns == 0 || spin % 64 != 0) continue;
    uint64_t now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    if (now - start > timeout_ns) return false;
  }
  return true;
}

}  // namespace weft::symm::device
