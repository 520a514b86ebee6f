// The pool's device slices: GPU memory (CUDA VMM, mem::cuda::DeviceSegment) that a peer
// contributes to the pool's device region, and the same-node peers' slices it maps by fd. This
// file keeps the pool free of CUDA includes and #ifs: without CUDA in the build, or without a GPU
// on the machine, every call here answers NOT_SUPPORTED with the reason.
#pragma once

#include <cstdint>
#include <memory>

#include "base/result.h"
#include "transport/staging/staging_pipeline.h"

namespace weft::bm {

// A device slice mapped in this process; the mapping lives as long as `hold` (or a copy of it).
struct DeviceSlice {
  uint8_t* data = nullptr;  // device address, valid on `gpu` (and peers granted access)
  uint64_t size = 0;        // bytes as asked for (the allocation may be rounded up to 2 MiB)
  int gpu = -1;             // the GPU whose HBM holds the bytes
  std::shared_ptr<void> hold;
};

// Why device slices cannot be used here, or OK when they can (a CUDA build and a GPU).
Status DeviceSlicesUsable();
// GPUs this process can use (0 when DeviceSlicesUsable() is not OK).
int UsableGpuCount();

// This peer's own slice: `size` bytes on GPU `device`. POOL_FULL when the GPU's memory is
// exhausted, INVALID_ARGUMENT for a GPU that does not exist, NOT_SUPPORTED without a GPU.
Result<DeviceSlice> CreateDeviceSlice(int device, uint64_t size);

// A new fd for the slice (POSIX-fd handle of its allocation) to pass to same-node peers; the
// caller owns it. Only for slices made by CreateDeviceSlice.
Result<int> ExportDeviceSlice(const DeviceSlice& slice);

// How the tcp path reaches device memory here: host <-> device copies on weft's own streams and
// pinned bounce buffers. Empty (no copy) without CUDA or a GPU: device ends are then refused.
transport::DeviceStagingOps TcpDeviceStaging();

// Maps a peer's slice from the fd it exported (taken over in every case), with access granted to
// `device`, the GPU this process copies with, when it can reach the owner's GPU.
Result<DeviceSlice> ImportDeviceSlice(int fd, uint64_t size, int device);

}  // namespace weft::bm
