// Pool layout: GVA = base + medium region + rank * rank_stride + offset.
// Translation is arithmetic (O(1)); the region of a medium is max_ranks * rank_stride bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <weft/copy.h>

#include "base/status.h"

namespace weft::gva {

using weft::Medium;  // public (include/weft/copy.h)
inline constexpr int kMediumCount = 2;
const char* MediumName(Medium m);

struct Location {
  Medium medium;
  uint32_t rank;
  uint64_t offset;  // within the rank's slice
  bool operator==(const Location&) const = default;
};

class Layout {
 public:
  // rank_stride is rank_size rounded up to 2 MiB (so slices can be mapped with huge pages);
  // the whole window must fit below 2^47 (the x86-64 user address space).
  static Result<Layout> Make(uint64_t base, uint64_t rank_size, uint32_t max_ranks);

  uint64_t base() const { return base_; }
  uint64_t rank_size() const { return rank_size_; }
  uint64_t rank_stride() const { return rank_stride_; }
  uint32_t max_ranks() const { return max_ranks_; }
  uint64_t region_size() const { return rank_stride_ * max_ranks_; }
  uint64_t end() const { return base_ + region_size() * kMediumCount; }

  bool Contains(uint64_t addr) const { return addr >= base_ && addr < end(); }
  uint64_t Encode(Location loc) const {
    return base_ + static_cast<uint64_t>(loc.medium) * region_size() + loc.rank * rank_stride_ + loc.offset;
  }
  // nullopt when addr lies outside the pool window.
  std::optional<Location> Decode(uint64_t addr) const {
    if (!Contains(addr)) return std::nullopt;
    uint64_t rel = addr - base_;
    uint64_t region = rel / region_size();
    uint64_t in_region = rel % region_size();
    return Location{static_cast<Medium>(region), static_cast<uint32_t>(in_region / rank_stride_),
                    in_region % rank_stride_};
  }
  // First GVA of a rank's slice of a medium.
  uint64_t SliceBase(Medium m, uint32_t rank) const { return Encode({m, rank, 0}); }

 private:
  uint64_t base_ = 0;
  uint64_t rank_size_ = 0;
  uint64_t rank_stride_ = 0;
  uint32_t max_ranks_ = 0;
};

}  // namespace weft::gva
