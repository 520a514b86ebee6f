// The symmetric heaps of a team as this process reaches them, shared by the team and the
// sub-teams split from it. Each rank's block in its own pool slice is
//   [ heap: heap_bytes, Malloc's space ][ the root team's channel (channel.h) ]
// and every offset (heap or channel) is relative to the block's start.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <weft/pool.h>

#include "api/symm/heap_allocator.h"
#include "gva/segment_table.h"

namespace weft::symm {

// One rank's block as reached from here.
struct PeerHeap {
  uint32_t pool_rank = 0;
  uint64_t gva = 0;           // the block's first byte in the pool
  uint8_t* mapped = nullptr;  // where it is mapped here; null: reached through the copy engine
};

class Heaps {
 public:
  Heaps(bm::Pool& pool, uint64_t heap_bytes, uint64_t own_gva, std::vector<PeerHeap> peers,
        std::vector<gva::SegmentTable::Pin> pins);
  ~Heaps();  // frees this rank's block
  Heaps(const Heaps&) = delete;
  Heaps& operator=(const Heaps&) = delete;

  bm::Pool& pool() const { return pool_; }
  uint64_t heap_bytes() const { return heap_bytes_; }
  const PeerHeap& peer(uint32_t root_rank) const { return peers_[root_rank]; }
  uint8_t* own() const { return own_; }
  uint32_t own_root_rank() const { return own_root_rank_; }

  // Writes len bytes at offset of a rank's block (mapped: a memcpy; else a copy through the
  // pool, complete when it returns).
  Status Write(uint32_t root_rank, uint64_t offset, const void* src, uint64_t len) const;
  Status Read(void* dst, uint32_t root_rank, uint64_t offset, uint64_t len) const;
  // Stores an 8-byte word with release order (visible after everything written before it).
  Status StoreWord(uint32_t root_rank, uint64_t offset, uint64_t value) const;
  // Whether the rank's peer is still in the pool.
  bool Alive(uint32_t root_rank) const;

  // The root team's allocator: Malloc and Free run it on every rank in the same order.
  HeapAllocator& allocator() { return allocator_; }
  std::mutex& allocator_mu() { return allocator_mu_; }

 private:
  bm::Pool& pool_;
  uint64_t heap_bytes_;
  uint64_t own_gva_;
  uint8_t* own_ = nullptr;
  uint32_t own_root_rank_ = 0;
  std::vector<PeerHeap> peers_;
  // Keep every mapped peer's block mapped while the team lives, even past the peer's death, so
  // a store into it never faults (the pool would otherwise unmap a departed peer's slice).
  std::vector<gva::SegmentTable::Pin> pins_;
  std::mutex allocator_mu_;
  HeapAllocator allocator_;
};

}  // namespace weft::symm
