// The copy kernel's unit of work, shared by the planner (C++20) and the kernel (.cu, C++17).
#pragma once

#include <cstdint>

namespace weft::transport::cuda {

// A whole small copy or a chunk of a larger one. A block copies one descriptor at a time.
struct DeviceCopyDesc {
  uint64_t dst;
  uint64_t src;
  uint32_t len;
  uint32_t reserved;
};
static_assert(sizeof(DeviceCopyDesc) == 24, "the kernel reads 24-byte descriptors");

}  // namespace weft::transport::cuda
