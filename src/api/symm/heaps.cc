#include "api/symm/heaps.h"

#include <atomic>
#include <cstring>

#include "base/log.h"

namespace weft::symm {

Heaps::Heaps(bm::Pool& pool, uint64_t heap_bytes, uint64_t own_gva, std::vector<PeerHeap> peers,
             std::vector<gva::SegmentTable::Pin> pins)
    : pool_(pool), heap_bytes_(heap_bytes), own_gva_(own_gva), peers_(std::move(peers)), pins_(std::move(pins)),
      allocator_(heap_bytes) {
  for (uint32_t r = 0; r < peers_.size(); ++r) {
    if (peers_[r].gva != own_gva_) continue;
    own_ = peers_[r].mapped;
    own_root_rank_ = r;
  }
}

Heaps::~Heaps() {
  pins_.clear();
  Status s = pool_.Free(own_gva_);
  // After the pool (or its coordinator) is gone the slice goes with it: nothing to warn about.
  if (!s.ok() && s.code() != Code::kCancelled && s.code() != Code::kUnavailable)
    WEFT_LOG_WARN("symm: freeing this rank's heap at {:#x}: {}", own_gva_, s.ToString());
}

Status Heaps::Write(uint32_t root_rank, uint64_t offset, const void* src, uint64_t len) const {
  const PeerHeap& p = peers_[root_rank];
  if (len == 0) return OkStatus();
  if (p.mapped) {
    std::memcpy(p.mapped + offset, src, len);
    return OkStatus();
  }
  return pool_.Copy(p.gva + offset, reinterpret_cast<uint64_t>(src), len);
}

Status Heaps::Read(void* dst, uint32_t root_rank, uint64_t offset, uint64_t len) const {
  const PeerHeap& p = peers_[root_rank];
  if (len == 0) return OkStatus();
  if (p.mapped) {
    std::memcpy(dst, p.mapped + offset, len);
    return OkStatus();
  }
  return pool_.Copy(reinterpret_cast<uint64_t>(dst), p.gva + offset, len);
}

Status Heaps::StoreWord(uint32_t root_rank, uint64_t offset, uint64_t value) const {
  const PeerHeap& p = peers_[root_rank];
  if (p.mapped) {
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p.mapped + offset)).store(value, std::memory_order_release);
    return OkStatus();
  }
  // The copy before this one has returned, so its bytes are in the peer's memory already.
  return pool_.Copy(p.gva + offset, reinterpret_cast<uint64_t>(&value), sizeof value);
}

bool Heaps::Alive(uint32_t root_rank) const { return pool_.HasSlice(peers_[root_rank].pool_rank); }

}  // namespace weft::symm
