// The pool allocator: global malloc/free over every rank's slice of the GVA space.
// Thread-safe. Algorithm and the reasons for it: docs/allocator.md.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "base/status.h"
#include "gva/layout.h"

namespace weft::gva {

using weft::Placement;  // public (include/weft/copy.h)

struct SliceStats {
  uint64_t capacity = 0;
  uint64_t used = 0;            // bytes in live allocations (after alignment)
  uint64_t largest_free = 0;    // the largest single block that could be allocated now
  uint64_t allocations = 0;     // live allocations
  uint64_t free_blocks = 0;     // fragments in the free list
};

class Allocator {
 public:
  // alignment: every allocation starts at a multiple of it (power of two, >= 8).
  explicit Allocator(Layout layout, uint64_t alignment = 64);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // A rank's slice becomes allocatable with `capacity` bytes (<= layout.rank_size()).
  // ALREADY_EXISTS if added twice; OUT_OF_RANGE if the rank or capacity exceed the layout.
  Status AddSlice(uint32_t rank, Medium medium, uint64_t capacity);
  // The rank left or died: its slice and every allocation in it are forgotten. Later Free of
  // such a GVA returns PEER_DOWN. No-op if unknown.
  void RemoveSlice(uint32_t rank, Medium medium);

  // size > 0. INVALID_ARGUMENT for size 0; PEER_DOWN/NOT_FOUND for a rank without a slice;
  // POOL_FULL (message: requested size, largest free block, slice) when nothing fits.
  Result<uint64_t> Alloc(uint64_t size, Placement placement, uint32_t caller_rank);
  // Marks [gva, gva + size) as one live allocation exactly as if Alloc had returned gva for
  // `size` (the same rounding up to the alignment; Free and AllocationSize then work on it): a
  // new leader rebuilding its allocation map from the store's journal. INVALID_ARGUMENT for
  // size 0; INVALID_ADDRESS when gva is not in a live slice, the block would run past the
  // slice's end, or gva is not aligned as Alloc aligns; ALREADY_EXISTS when any byte of the
  // rounded block is allocated already.
  Status Reserve(uint64_t gva, uint64_t size);
  // INVALID_ADDRESS if gva is outside the pool or inside a live block but not its start;
  // DOUBLE_FREE if it lies in free space; PEER_DOWN if its slice was removed.
  Status Free(uint64_t gva);
  // Size of the live allocation starting at gva (as requested, before alignment).
  Result<uint64_t> AllocationSize(uint64_t gva) const;

  Result<SliceStats> Stats(uint32_t rank, Medium medium) const;
  // Every live slice of `medium`, by rank.
  std::vector<std::pair<uint32_t, SliceStats>> Slices(Medium medium) const;
  const Layout& layout() const { return layout_; }
  uint64_t alignment() const { return alignment_; }

 private:
  struct Slice;
  static SliceStats StatsOf(const Slice& slice);
  Layout layout_;
  uint64_t alignment_;
  mutable std::mutex mu_;
  std::map<std::pair<uint32_t, Medium>, std::unique_ptr<Slice>> slices_;
  std::map<std::pair<uint32_t, Medium>, bool> removed_;  // ranks that were removed (for PEER_DOWN)
};

}  // namespace weft::gva
