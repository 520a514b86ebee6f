// Helpers for tests/gpu: the skip on machines without a GPU, device buffers, and filling and
// checking device memory through host staging (fresh random data, poisoned destinations,
// every byte compared).
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "base/random.h"
#include "mem/cuda/cuda_api.h"

namespace weft::gputest {

// Empty when a GPU is usable, else the reason (for the skip message).
inline std::optional<std::string> NoGpuReason() {
  auto n = mem::cuda::Probe();
  if (n.ok()) return std::nullopt;
  std::string why = n.status().message();
  const std::string prefix = "no CUDA GPU: ";
  return why.rfind(prefix, 0) == 0 ? why.substr(prefix.size()) : why;
}

#define WEFT_REQUIRE_GPU()                                                          \
  do {                                                                              \
    if (auto why = ::weft::gputest::NoGpuReason()) GTEST_SKIP() << "no CUDA GPU: " << *why; \
  } while (0)

#define CUDA_OK(expr)                                                                     \
  do {                                                                                    \
    cudaError_t e_ = (expr);                                                              \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorName(e_) << " " << cudaGetErrorString(e_); \
  } while (0)

inline int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

// Fills [p, p+n) (host or device) with FillRandom(seed) bytes.
inline void Fill(void* p, size_t n, uint64_t seed) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeDevice) {
    std::vector<uint8_t> tmp(n);
    FillRandom(tmp.data(), n, seed);
    ASSERT_EQ(cudaMemcpy(p, tmp.data(), n, cudaMemcpyDefault), cudaSuccess);
    // From pageable memory cudaMemcpy may return before the DMA lands; weft copies on streams
    // that do not wait for the legacy stream, so the bytes must be there first.
    ASSERT_EQ(cudaStreamSynchronize(cudaStreamLegacy), cudaSuccess);
  } else {
    (void)cudaGetLastError();
    FillRandom(p, n, seed);
  }
}

// Sets [p, p+n) to `byte` (host or device).
inline void Poison(void* p, size_t n, uint8_t byte = 0xA5) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) == cudaSuccess && a.type == cudaMemoryTypeDevice) {
    ASSERT_EQ(cudaMemset(p, byte, n), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  } else {
    (void)cudaGetLastError();
    std::memset(p, byte, n);
  }
}

// A copy of [p, p+n) in host memory.
inline std::vector<uint8_t> Read(const void* p, size_t n) {
  std::vector<uint8_t> out(n);
  if (n) {
    EXPECT_EQ(cudaMemcpy(out.data(), p, n, cudaMemcpyDefault), cudaSuccess);
  }
  return out;
}

// Offset of the first byte that differs from FillRandom(seed), or nullopt.
inline std::optional<size_t> Mismatch(const void* p, size_t n, uint64_t seed) {
  std::vector<uint8_t> got = Read(p, n);
  return FirstMismatch(got.data(), n, seed);
}

// True when every byte of [p, p+n) is `byte`.
inline bool AllBytes(const void* p, size_t n, uint8_t byte = 0xA5) {
  std::vector<uint8_t> got = Read(p, n);
  for (uint8_t b : got)
    if (b != byte) return false;
  return true;
}

struct DeviceBuffer {
  explicit DeviceBuffer(size_t n, int device = 0) : size(n) {
    cudaSetDevice(device);
    if (cudaMalloc(&ptr, n) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  uint8_t* data() const { return static_cast<uint8_t*>(ptr); }
  void* ptr = nullptr;
  size_t size;
};

struct PinnedBuffer {
  explicit PinnedBuffer(size_t n) : size(n) {
    if (cudaMallocHost(&ptr, n) != cudaSuccess) ptr = nullptr;
  }
  ~PinnedBuffer() {
    if (ptr) cudaFreeHost(ptr);
  }
  uint8_t* data() const { return static_cast<uint8_t*>(ptr); }
  void* ptr = nullptr;
  size_t size;
};

inline uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

}  // namespace weft::gputest
