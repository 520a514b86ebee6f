// What a CUDA kernel needs to reach a team's device heaps (Team::DeviceHeaps()): every rank's
// device heap as mapped in this process. Plain data, C++17 and free of CUDA headers, so that
// kernels compiled by nvcc (with include/weft/symm_device.cuh) and host code share it.
#pragma once

#include <cstdint>

namespace weft::symm {

struct DeviceHeapView {
  static constexpr uint32_t kMaxRanks = 8;
  uint8_t* heap[kMaxRanks] = {};  // rank r's device heap, mapped here (NVLink, PCIe or the same GPU)
  uint64_t heap_bytes = 0;
  uint32_t rank = 0;  // this rank
  uint32_t size = 0;  // ranks of the team
};

}  // namespace weft::symm
