#include "api/symm/heap_allocator.h"

namespace weft::symm {

HeapAllocator::HeapAllocator(uint64_t bytes)
    : capacity_(bytes / kAlign * kAlign), free_bytes_(capacity_) {
  if (capacity_ > 0) free_[0] = capacity_;
}

Result<uint64_t> HeapAllocator::Allocate(uint64_t bytes) {
  if (bytes == 0) return Error(Code::kInvalidArgument, "cannot allocate 0 bytes of the symmetric heap");
  if (bytes > capacity_)
    return Error(Code::kPoolFull, "{} bytes do not fit a symmetric heap of {} bytes: create the team with a larger "
                 "heap_bytes", bytes, capacity_);
  uint64_t need = (bytes + kAlign - 1) / kAlign * kAlign;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    uint64_t offset = it->first;
    uint64_t left = it->second - need;
    free_.erase(it);
    if (left > 0) free_[offset + need] = left;
    used_[offset] = need;
    free_bytes_ -= need;
    return offset;
  }
  return Error(Code::kPoolFull, "no free block of {} bytes in the symmetric heap ({} of {} bytes free, fragmented): "
               "free blocks or create the team with a larger heap_bytes", need, free_bytes_, capacity_);
}

Status HeapAllocator::Release(uint64_t offset) {
  auto it = used_.find(offset);
  if (it == used_.end())
    return Error(Code::kInvalidAddress, "heap offset {} is not the start of a block allocated with Malloc", offset);
  uint64_t len = it->second;
  used_.erase(it);
  free_bytes_ += len;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && next->first == offset + len) {  // merge with the block after
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // merge with the block before
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += len;
      return OkStatus();
    }
  }
  free_[offset] = len;
  return OkStatus();
}

}  // namespace weft::symm
