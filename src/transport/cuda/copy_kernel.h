// The batched copy kernels: one launch copies every descriptor of a batch (the KV-page case:
// thousands of scattered pages in one launch instead of one cudaMemcpyAsync each), or every page
// of a page batch whose addresses it computes from page indices (Engine::CopyPages).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "transport/cuda/copy_desc.h"

namespace weft::transport::cuda {

inline constexpr int kCopyKernelThreads = 256;
inline constexpr int kCopyKernelBlocksPerSm = 8;  // 2048 threads per SM: full occupancy on Hopper

// Enqueues the kernel over `count` descriptors already in device memory. Returns the launch
// error (configuration errors only; faults surface at the next synchronisation).
cudaError_t LaunchCopyKernel(const DeviceCopyDesc* descs, uint32_t count, uint32_t grid, cudaStream_t stream);

const char* PageKernelVariantName(PageKernelVariant v);

// Enqueues the page kernel (index pairs already in device memory). Same error contract.
cudaError_t LaunchPageKernel(const PageCopyParams& params, uint32_t grid, cudaStream_t stream,
                             PageKernelVariant variant = PageKernelVariant::kLean);

// Whether every unit of the launch starts 16-byte aligned at both ends and is a multiple of 16
// bytes long (the lean kernel's fast instantiation).
bool PageUnitsAligned(const PageCopyParams& params);

// Blocks of the page kernel instantiation that a launch with these properties uses, resident at
// once on one SM of the current device: a persistent grid larger than sms × this would run its
// last blocks as a second wave. 0 when CUDA cannot say. Ask once per device, not per call.
int PageKernelBlocksPerSm(PageKernelVariant variant, bool offsets32, bool aligned);

}  // namespace weft::transport::cuda
