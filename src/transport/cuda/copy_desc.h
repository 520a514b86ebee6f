// The copy kernel's unit of work, shared by the planner (C++20) and the kernel (.cu, C++17).
#pragma once

#include <cstdint>

// The page kernel's address arithmetic is shared with the host (unit tests run it without a GPU).
#ifdef __CUDACC__
#define WEFT_HOST_DEVICE __host__ __device__
#else
#define WEFT_HOST_DEVICE
#endif

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

namespace weft::transport::cuda {

// One launch of the page kernel (Engine::CopyPages): page i of the batch goes from
// src_base + src_pages[i] × page_bytes to dst_base + dst_pages[i] × page_bytes. A block copies one
// unit at a time: `chunk` bytes of a page (the last unit of a page may be shorter), so large
// pages are shared between blocks. The index lists are in device memory.
struct PageCopyParams {
  uint64_t dst_base;
  uint64_t src_base;
  uint64_t page_bytes;
  const uint32_t* dst_pages;
  const uint32_t* src_pages;
  uint64_t units;            // pages × chunks_per_page (below 2^32)
  uint32_t chunk;            // bytes per unit: a multiple of 16, or the whole page
  uint32_t chunks_per_page;
};

// The bytes one unit of the page kernel copies.
struct PageUnit {
  uint64_t dst;
  uint64_t src;
  uint32_t len;
};

// The page (index into the lists) that unit u belongs to. Units are counted in 32 bits (the
// transport refuses batches of 2^32 units or more): a 64-bit division is a slow call on the GPU
// that cost the kernel registers and spills.
WEFT_HOST_DEVICE inline uint32_t PageOfUnit(const PageCopyParams& p, uint32_t u) {
  return p.chunks_per_page == 1 ? u : u / p.chunks_per_page;
}

// Unit u of page `page`, given that page's destination and source indices.
WEFT_HOST_DEVICE inline PageUnit PageUnitAt(const PageCopyParams& p, uint64_t u, uint64_t page, uint32_t dst_index,
                                            uint32_t src_index) {
  const uint64_t off = (u - page * p.chunks_per_page) * p.chunk;
  const uint64_t rest = p.page_bytes - off;
  PageUnit out;
  out.dst = p.dst_base + static_cast<uint64_t>(dst_index) * p.page_bytes + off;
  out.src = p.src_base + static_cast<uint64_t>(src_index) * p.page_bytes + off;
  out.len = rest < p.chunk ? static_cast<uint32_t>(rest) : p.chunk;
  return out;
}

}  // namespace weft::transport::cuda
