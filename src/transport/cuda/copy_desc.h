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
// src_base + src index × page_bytes to dst_base + dst index × page_bytes. The indices are
// interleaved, pairs[2i] = dst index and pairs[2i + 1] = src index of page i (one 8-byte load
// gives both), in device memory. A block copies one unit at a time: `chunk` bytes of a page (the
// last unit of a page may be shorter), so large pages are shared between blocks.
struct PageCopyParams {
  uint64_t dst_base;
  uint64_t src_base;
  uint64_t page_bytes;
  const uint32_t* pairs;     // 8-byte aligned
  uint32_t units;            // pages × chunks_per_page (the transport refuses 2^32 or more)
  uint32_t chunk;            // bytes per unit: a multiple of 16, or the whole page
  uint32_t chunks_per_page;
  // Both ends' extents ((largest index + 1) × page_bytes) are below 2^32: every offset fits
  // 32 bits, and the kernel's address arithmetic is done in 32 bits (fewer registers).
  uint32_t offsets32;
  // Index pairs the host has not seen (already in device memory, CopyPagesDeviceIndexed): a
  // pair past max_dst / max_src is not copied and sets *bad (mapped pinned memory) to 1. Null
  // when the host scanned the indices itself (nothing to check on the GPU).
  uint32_t* bad;
  uint32_t max_dst;
  uint32_t max_src;
};

// The page kernel's code. kLean is the default; kLegacy is the kernel before it (two 4-byte index
// loads per unit, 64-bit address arithmetic, held to 32 registers by __launch_bounds__ with
// spills), kept so that `weft bench-gpu` measures both in one run.
enum class PageKernelVariant : uint8_t { kLean = 0, kLegacy = 1 };

// The bytes one unit of the page kernel copies.
struct PageUnit {
  uint64_t dst;
  uint64_t src;
  uint32_t len;
};

// The page (index into the lists) that unit u belongs to. Units are counted in 32 bits: a 64-bit
// division is a slow call on the GPU that cost the kernel registers and spills.
WEFT_HOST_DEVICE inline uint32_t PageOfUnit(const PageCopyParams& p, uint32_t u) {
  return p.chunks_per_page == 1 ? u : u / p.chunks_per_page;
}

// Unit u of page `page`, given that page's destination and source indices (64-bit arithmetic;
// the kernel's 32-bit variant must give the same answer where offsets32 is set, which the unit
// tests check with PageUnitAt32).
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

// The same in 32-bit arithmetic, valid when offsets32 is set (both extents below 2^32, so the
// page size, each page's offset and the offset inside it all fit).
WEFT_HOST_DEVICE inline PageUnit PageUnitAt32(const PageCopyParams& p, uint32_t u, uint32_t page, uint32_t dst_index,
                                              uint32_t src_index) {
  const uint32_t page_bytes = static_cast<uint32_t>(p.page_bytes);
  const uint32_t off = (u - page * p.chunks_per_page) * p.chunk;
  const uint32_t rest = page_bytes - off;
  PageUnit out;
  out.dst = p.dst_base + (dst_index * page_bytes + off);
  out.src = p.src_base + (src_index * page_bytes + off);
  out.len = rest < p.chunk ? rest : p.chunk;
  return out;
}

}  // namespace weft::transport::cuda
