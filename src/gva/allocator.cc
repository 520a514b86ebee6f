// Pool allocator: address-ordered best fit with immediate coalescing, one instance per
// (rank, medium) slice. Why this policy, and its costs: docs/allocator.md.
//
// Considered instead: a buddy allocator (fast, but internal fragmentation up to 50% for
// sizes just above a power of two, and GVA slices are expensive memory), TLSF (O(1), but
// approximate best fit and many tuning knobs for a path that is not hot), and jemalloc /
// mimalloc-style size classes (they manage process memory, not a remote address range, and
// cannot be pointed at an arbitrary [0, capacity) window without their own metadata in it).
#include "gva/allocator.h"

#include <algorithm>
#include <optional>
#include <set>
#include <utility>

namespace weft::gva {

namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

bool ValidMedium(Medium m) { return static_cast<int>(m) < kMediumCount; }

}  // namespace

// One rank's slice of one medium. Every block (free or live) starts at a multiple of the
// allocator's alignment and has a size that is a multiple of it; `capacity` is the usable
// capacity (the contributed capacity rounded down to the alignment).
struct Allocator::Slice {
  struct Live {
    uint64_t requested;  // as asked for
    uint64_t rounded;    // as taken from the free list
  };

  explicit Slice(uint64_t cap) : capacity(cap) { InsertFree(0, cap); }

  uint64_t capacity;
  uint64_t used = 0;
  std::map<uint64_t, uint64_t> free_by_offset;             // offset -> size, address ordered
  std::set<std::pair<uint64_t, uint64_t>> free_by_size;    // (size, offset), for best fit
  std::map<uint64_t, Live> live;                           // offset -> sizes

  uint64_t LargestFree() const { return free_by_size.empty() ? 0 : free_by_size.rbegin()->first; }
  uint64_t FreeBytes() const { return capacity - used; }

  void InsertFree(uint64_t off, uint64_t size) {
    free_by_offset.emplace(off, size);
    free_by_size.emplace(size, off);
  }
  void EraseFree(std::map<uint64_t, uint64_t>::iterator it) {
    free_by_size.erase({it->second, it->first});
    free_by_offset.erase(it);
  }

  // Best fit: the smallest free block of at least `rounded` bytes, the lowest address among
  // blocks of that size. nullopt if none.
  std::optional<uint64_t> Take(uint64_t requested, uint64_t rounded) {
    auto fit = free_by_size.lower_bound({rounded, 0});
    if (fit == free_by_size.end()) return std::nullopt;
    const uint64_t size = fit->first;
    const uint64_t off = fit->second;
    free_by_size.erase(fit);
    free_by_offset.erase(off);
    if (size > rounded) InsertFree(off + rounded, size - rounded);
    live.emplace(off, Live{requested, rounded});
    used += rounded;
    return off;
  }

  // Takes [off, off + rounded) out of the free block holding all of it, leaving what is free on
  // either side free. false when no single free block holds it (some of it is live).
  bool TakeAt(uint64_t off, uint64_t requested, uint64_t rounded) {
    auto it = free_by_offset.upper_bound(off);
    if (it == free_by_offset.begin()) return false;
    --it;
    const uint64_t start = it->first, end = it->first + it->second;
    if (off + rounded > end) return false;
    EraseFree(it);
    if (start < off) InsertFree(start, off - start);
    if (off + rounded < end) InsertFree(off + rounded, end - off - rounded);
    live.emplace(off, Live{requested, rounded});
    used += rounded;
    return true;
  }

  // Returns the live block at `it` to the free list, merging with free neighbours.
  void Release(std::map<uint64_t, Live>::iterator it) {
    uint64_t off = it->first;
    uint64_t size = it->second.rounded;
    used -= size;
    live.erase(it);
    auto next = free_by_offset.lower_bound(off);
    if (next != free_by_offset.end() && next->first == off + size) {
      size += next->second;
      auto after = std::next(next);
      EraseFree(next);
      next = after;
    }
    if (next != free_by_offset.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        off = prev->first;
        size += prev->second;
        EraseFree(prev);
      }
    }
    InsertFree(off, size);
  }
};

Allocator::Allocator(Layout layout, uint64_t alignment)
    // Invalid alignments (not a power of two, or below 8) fall back to the default 64: the
    // constructor cannot return a Status (documented in docs/allocator.md).
    : layout_(layout), alignment_(IsPowerOfTwo(alignment) && alignment >= 8 ? alignment : 64) {}

Allocator::~Allocator() = default;

Status Allocator::AddSlice(uint32_t rank, Medium medium, uint64_t capacity) {
  if (!ValidMedium(medium))
    return Error(Code::kInvalidArgument, "unknown medium {}", static_cast<int>(medium));
  if (rank >= layout_.max_ranks())
    return Error(Code::kOutOfRange, "rank {} is outside the pool layout (max_ranks {})", rank,
                 layout_.max_ranks());
  if (capacity == 0)
    return Error(Code::kInvalidArgument, "slice of rank {} {} must have a positive capacity", rank,
                 MediumName(medium));
  if (capacity > layout_.rank_size())
    return Error(Code::kOutOfRange,
                 "slice of rank {} {} has capacity {} bytes, more than the pool's rank_size {}", rank,
                 MediumName(medium), capacity, layout_.rank_size());
  const uint64_t usable = capacity / alignment_ * alignment_;
  if (usable == 0)
    return Error(Code::kInvalidArgument,
                 "slice of rank {} {} has capacity {} bytes, less than the allocation alignment {}", rank,
                 MediumName(medium), capacity, alignment_);
  std::lock_guard lock(mu_);
  auto key = std::make_pair(rank, medium);
  if (slices_.count(key))
    return Error(Code::kAlreadyExists, "rank {} already has a {} slice", rank, MediumName(medium));
  slices_.emplace(key, std::make_unique<Slice>(usable));
  removed_.erase(key);  // a peer rejoined under a reused rank
  return OkStatus();
}

void Allocator::RemoveSlice(uint32_t rank, Medium medium) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(rank, medium);
  if (slices_.erase(key) > 0) removed_[key] = true;
}

Result<uint64_t> Allocator::Alloc(uint64_t size, Placement placement, uint32_t caller_rank) {
  const Medium medium = placement.medium;
  if (size == 0) return Error(Code::kInvalidArgument, "cannot allocate 0 bytes");
  if (!ValidMedium(medium))
    return Error(Code::kInvalidArgument, "unknown medium {}", static_cast<int>(medium));
  // Nothing larger than rank_size can fit anywhere; checking first also keeps the rounding
  // below from overflowing (rank_size < 2^47, alignment <= 2^63).
  const bool too_big = size > layout_.rank_size();
  const uint64_t rounded = too_big ? 0 : (size + alignment_ - 1) / alignment_ * alignment_;

  std::lock_guard lock(mu_);
  Slice* slice = nullptr;
  uint32_t rank = 0;
  switch (placement.kind) {
    case Placement::Kind::kLocal:
    case Placement::Kind::kRank: {
      rank = placement.kind == Placement::Kind::kLocal ? caller_rank : placement.rank;
      auto it = slices_.find({rank, medium});
      if (it == slices_.end()) {
        if (removed_.count({rank, medium}))
          return Error(Code::kPeerDown, "rank {} has left the pool; its {} slice is gone", rank,
                       MediumName(medium));
        return Error(Code::kNotFound, "rank {} has no {} slice in this pool", rank, MediumName(medium));
      }
      slice = it->second.get();
      break;
    }
    case Placement::Kind::kSpread: {
      // The slice with the most free bytes among those where the request fits (ties: lowest
      // rank, since slices_ is ordered by rank). Skipping slices that cannot fit it means a
      // spread allocation only fails when no slice of the medium could take it.
      Slice* best_any = nullptr;
      uint32_t best_any_rank = 0;
      size_t live_slices = 0;
      for (auto& [key, s] : slices_) {
        if (key.second != medium) continue;
        ++live_slices;
        if (!best_any || s->LargestFree() > best_any->LargestFree()) {
          best_any = s.get();
          best_any_rank = key.first;
        }
        if (too_big || s->LargestFree() < rounded) continue;
        if (!slice || s->FreeBytes() > slice->FreeBytes()) {
          slice = s.get();
          rank = key.first;
        }
      }
      if (live_slices == 0)
        return Error(Code::kNotFound, "no rank has a {} slice in this pool", MediumName(medium));
      if (!slice)
        return Error(Code::kPoolFull,
                     "cannot allocate {} bytes anywhere in the {} pool ({} live slices): the largest free "
                     "block is {} bytes (rank {} {}); free memory, or join more peers / use a larger "
                     "rank_size",
                     size, MediumName(medium), live_slices, best_any->LargestFree(), best_any_rank,
                     MediumName(medium));
      break;
    }
    default:
      return Error(Code::kInvalidArgument, "unknown placement kind {}", static_cast<int>(placement.kind));
  }

  std::optional<uint64_t> off;
  if (!too_big) off = slice->Take(size, rounded);
  if (!off)
    return Error(Code::kPoolFull,
                 "cannot allocate {} bytes on rank {} {}: the largest free block is {} bytes ({} of {} "
                 "bytes free, free blocks: {}); free memory, or join more peers / use a larger rank_size",
                 size, rank, MediumName(medium), slice->LargestFree(), slice->FreeBytes(), slice->capacity,
                 slice->free_by_offset.size());
  return layout_.Encode({medium, rank, *off});
}

Status Allocator::Reserve(uint64_t gva, uint64_t size) {
  if (size == 0) return Error(Code::kInvalidArgument, "cannot reserve 0 bytes at {:#x}", gva);
  auto loc = layout_.Decode(gva);
  if (!loc) return Error(Code::kInvalidAddress, "reserve: {:#x} is not an address of this pool", gva);
  std::lock_guard lock(mu_);
  auto sit = slices_.find({loc->rank, loc->medium});
  if (sit == slices_.end())
    return Error(Code::kInvalidAddress, "reserve: {:#x} lies in the {} slice of rank {}, which has no memory", gva,
                 MediumName(loc->medium), loc->rank);
  Slice& slice = *sit->second;
  if (loc->offset % alignment_ != 0)
    return Error(Code::kInvalidAddress, "reserve: {:#x} is not aligned to {} bytes as allocations are", gva,
                 alignment_);
  // Checked before rounding so that the rounding cannot overflow (capacity <= rank_size < 2^47).
  if (loc->offset >= slice.capacity || size > slice.capacity - loc->offset)
    return Error(Code::kInvalidAddress, "reserve: {} bytes at {:#x} run past the end of rank {} {} ({} bytes)", size,
                 gva, loc->rank, MediumName(loc->medium), slice.capacity);
  // Blocks are multiples of the alignment and so is capacity: the rounded block fits too.
  const uint64_t rounded = (size + alignment_ - 1) / alignment_ * alignment_;
  if (!slice.TakeAt(loc->offset, size, rounded))
    return Error(Code::kAlreadyExists, "reserve: {} bytes at {:#x} (rank {} {}) overlap a live allocation", size, gva,
                 loc->rank, MediumName(loc->medium));
  return OkStatus();
}

namespace {

// Finds the slice of `gva` and checks that gva is the start of a live block in it; returns the
// error that Free / AllocationSize report otherwise. A template only so that it can name the
// private Slice type through deduction; the caller holds the allocator's mutex.
template <typename SliceT, typename Slices, typename Removed>
Status FindLive(const Layout& layout, const Slices& slices, const Removed& removed, uint64_t gva,
                const char* verb, SliceT** out_slice, uint64_t* out_offset) {
  auto loc = layout.Decode(gva);
  if (!loc) return Error(Code::kInvalidAddress, "{}: {:#x} is not an address of this pool", verb, gva);
  auto sit = slices.find({loc->rank, loc->medium});
  if (sit == slices.end()) {
    if (removed.count({loc->rank, loc->medium}))
      return Error(Code::kPeerDown, "{}: {:#x} lies in the {} slice of rank {}, which has left the pool",
                   verb, gva, MediumName(loc->medium), loc->rank);
    return Error(Code::kInvalidAddress, "{}: {:#x} lies in the {} slice of rank {}, which has no memory",
                 verb, gva, MediumName(loc->medium), loc->rank);
  }
  SliceT* slice = sit->second.get();
  if (loc->offset >= slice->capacity)
    return Error(Code::kInvalidAddress, "{}: {:#x} is past the end of rank {} {} ({} bytes)", verb, gva,
                 loc->rank, MediumName(loc->medium), slice->capacity);
  // The live block at or below the offset, if any.
  auto it = slice->live.upper_bound(loc->offset);
  if (it == slice->live.begin() || std::prev(it)->first + std::prev(it)->second.rounded <= loc->offset)
    return Error(Code::kDoubleFree, "{}: {:#x} (rank {} {} offset {}) is not allocated", verb, gva,
                 loc->rank, MediumName(loc->medium), loc->offset);
  --it;
  if (it->first != loc->offset) {
    const uint64_t into = loc->offset - it->first;
    return Error(Code::kInvalidAddress, "{}: {:#x} is {} bytes into the allocation at {:#x}, not its start",
                 verb, gva, into, gva - into);
  }
  *out_slice = slice;
  *out_offset = loc->offset;
  return OkStatus();
}

}  // namespace

Status Allocator::Free(uint64_t gva) {
  std::lock_guard lock(mu_);
  Slice* slice = nullptr;
  uint64_t offset = 0;
  WEFT_RETURN_IF_ERROR(FindLive(layout_, slices_, removed_, gva, "free", &slice, &offset));
  slice->Release(slice->live.find(offset));
  return OkStatus();
}

Result<uint64_t> Allocator::AllocationSize(uint64_t gva) const {
  std::lock_guard lock(mu_);
  Slice* slice = nullptr;
  uint64_t offset = 0;
  WEFT_RETURN_IF_ERROR(FindLive(layout_, slices_, removed_, gva, "allocation size", &slice, &offset));
  return slice->live.at(offset).requested;
}

std::vector<std::pair<uint32_t, SliceStats>> Allocator::Slices(Medium medium) const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint32_t, SliceStats>> out;
  for (const auto& [key, slice] : slices_) {
    if (key.second == medium) out.emplace_back(key.first, StatsOf(*slice));
  }
  return out;
}

SliceStats Allocator::StatsOf(const Slice& s) {
  SliceStats st;
  st.capacity = s.capacity;
  st.used = s.used;
  st.largest_free = s.LargestFree();
  st.allocations = s.live.size();
  st.free_blocks = s.free_by_offset.size();
  return st;
}

Result<SliceStats> Allocator::Stats(uint32_t rank, Medium medium) const {
  std::lock_guard lock(mu_);
  auto it = slices_.find({rank, medium});
  if (it == slices_.end()) {
    if (removed_.count({rank, medium}))
      return Error(Code::kPeerDown, "rank {} has left the pool; its {} slice is gone", rank,
                   ValidMedium(medium) ? MediumName(medium) : "?");
    return Error(Code::kNotFound, "rank {} has no {} slice in this pool", rank,
                 ValidMedium(medium) ? MediumName(medium) : "?");
  }
  return StatsOf(*it->second);
}

}  // namespace weft::gva
