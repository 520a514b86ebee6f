// The symmetric heap's allocator. Every rank of a team runs its own copy and feeds it the same
// calls in the same order (Malloc and Free are collective), so the copies stay identical and a
// block has the same offset on every rank; nothing is exchanged but the check that the calls
// agree. First fit over a sorted free list, 64-byte aligned blocks.
#pragma once

#include <cstdint>
#include <map>

#include "base/status.h"

namespace weft::symm {

class HeapAllocator {
 public:
  static constexpr uint64_t kAlign = 64;

  explicit HeapAllocator(uint64_t bytes);

  Result<uint64_t> Allocate(uint64_t bytes);  // POOL_FULL when no block fits
  Status Release(uint64_t offset);            // INVALID_ADDRESS if not a block's start
  uint64_t free_bytes() const { return free_bytes_; }
  uint64_t capacity() const { return capacity_; }

 private:
  uint64_t capacity_;
  uint64_t free_bytes_;
  std::map<uint64_t, uint64_t> free_;  // offset -> length, coalesced
  std::map<uint64_t, uint64_t> used_;  // offset -> length
};

}  // namespace weft::symm
