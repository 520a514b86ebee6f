// A kernel for tests/gpu/symm_device_test.cc that uses include/weft/symm_device.cuh: each rank
// puts its block into the next rank's heap and signals it, then waits for its own signal.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include <weft/symm_device_view.h>

namespace weft::symm::testing {

// One block: rank r's heap bytes [data + r × len, + len) go to the same place in rank r+1's heap,
// then rank r+1's signal word at sig is increased by 1; the kernel then waits until its own signal
// reaches `expect` and writes 1 into *arrived (0 if the wait timed out).
cudaError_t LaunchRing(const DeviceHeapView& view, uint64_t data, uint64_t sig, uint64_t len, uint64_t expect,
                       int* arrived, cudaStream_t stream);

}  // namespace weft::symm::testing
