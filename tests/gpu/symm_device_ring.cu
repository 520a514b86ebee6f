#include "tests/gpu/symm_device_ring.h"

#include <weft/symm_device.cuh>

namespace weft::symm::testing {
namespace {

__global__ void Ring(DeviceHeapView h, uint64_t data, uint64_t sig, uint64_t len, uint64_t expect, int* arrived) {
  const uint32_t next = (h.rank + 1) % h.size;
  const uint64_t mine = data + h.rank * len;
  // Each thread puts its share; thread 0 signals once every share is out.
  const uint64_t share = (len + blockDim.x - 1) / blockDim.x;
  const uint64_t first = threadIdx.x * share;
  if (first < len) {
    const uint64_t n = first + share > len ? len - first : share;
    device::Put(h, next, mine + first, device::Local(h, mine + first), n);
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  device::Fence();
  device::PutSignal(h, next, 0, nullptr, 0, sig, 1, /*add=*/true);
  *arrived = device::WaitUntilGe(h, sig, expect) ? 1 : 0;
}

}  // namespace

cudaError_t LaunchRing(const DeviceHeapView& view, uint64_t data, uint64_t sig, uint64_t len, uint64_t expect,
                       int* arrived, cudaStream_t stream) {
  Ring<<<1, 256, 0, stream>>>(view, data, sig, len, expect, arrived);
  return cudaGetLastError();
}

}  // namespace weft::symm::testing
