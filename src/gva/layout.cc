#include "gva/layout.h"

namespace weft::gva {

const char* MediumName(Medium m) { return m == Medium::kHost ? "host" : "device"; }

Result<Layout> Layout::Make(uint64_t base, uint64_t rank_size, uint32_t max_ranks) {
  constexpr uint64_t kAlign = 2ull << 20;
  constexpr uint64_t kUserLimit = 1ull << 47;
  if (rank_size == 0) return Error(Code::kInvalidArgument, "rank_size must be positive");
  if (max_ranks == 0) return Error(Code::kInvalidArgument, "max_ranks must be positive");
  if (base == 0 || base % kAlign != 0)
    return Error(Code::kInvalidArgument, "gva_base {:#x} must be a non-zero multiple of 2 MiB", base);
  if (rank_size > kUserLimit) return Error(Code::kInvalidArgument, "rank_size {} is larger than 128 TiB", rank_size);
  Layout l;
  l.base_ = base;
  l.rank_size_ = rank_size;
  l.rank_stride_ = (rank_size + kAlign - 1) / kAlign * kAlign;
  l.max_ranks_ = max_ranks;
  if (l.rank_stride_ > kUserLimit / max_ranks / kMediumCount || base > kUserLimit - l.region_size() * kMediumCount)
    return Error(Code::kInvalidArgument,
                 "pool window of {} ranks x {} bytes at {:#x} does not fit in the 47-bit address space; "
                 "lower max_ranks, rank_size or gva_base",
                 max_ranks, rank_size, base);
  return l;
}

}  // namespace weft::gva
