// A team's device heap: each rank's block of its pool device slice (config device_size),
//   [ heap: heap_bytes, DeviceMalloc's space ][ sync area of the collectives' kernel ]
// mapped in this process for every rank of the team (the pool's imported device slices: one
// node, NVLink or PCIe peer access, or the same GPU), and the launches of the collectives'
// kernel (src/api/symm/cuda/device_kernel.h) with their waits.
//
// No CUDA includes here: without CUDA in the build, or without a GPU, Create answers
// NOT_SUPPORTED with the reason (on every rank, so none waits).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <weft/deadline.h>
#include <weft/pool.h>

#include "api/symm/cuda/device_kernel.h"
#include "api/symm/heap_allocator.h"
#include "base/result.h"
#include "gva/segment_table.h"

namespace weft::symm {

// A team's own barrier flags in the device heaps: where its sync area lies in every member's block,
// and the epoch its next launch starts at. The root team's follows its heap; a sub-team's is
// allocated from the heap at Split.
struct DeviceSync {
  uint64_t offset = 0;
  uint64_t epoch = 1;  // the sync areas start zeroed
};

class DeviceHeap {
 public:
  // Collective over the pool: every peer calls it in Team::Create, after the host heap, with the
  // same heap_bytes. `pool_ranks` are the team's pool ranks by team rank; `me` this one's.
  static Result<std::unique_ptr<DeviceHeap>> Create(bm::Pool& pool, uint64_t heap_bytes,
                                                    const std::vector<uint32_t>& pool_ranks, uint32_t me,
                                                    Deadline deadline);
  ~DeviceHeap();  // frees this rank's block
  DeviceHeap(const DeviceHeap&) = delete;
  DeviceHeap& operator=(const DeviceHeap&) = delete;

  uint64_t heap_bytes() const { return heap_bytes_; }
  // Where the root team's sync area lies (after the heap).
  uint64_t root_sync_offset() const { return heap_bytes_; }
  uint8_t* own() const { return blocks_[me_]; }
  uint8_t* block(uint32_t team_rank) const { return blocks_[team_rank]; }
  int gpu() const { return gpu_; }
  // Whether [p, p + len) lies in this rank's heap.
  bool Contains(const void* p, uint64_t len = 1) const;
  uint64_t OffsetOf(const void* p) const { return static_cast<const uint8_t*>(p) - own(); }
  // Whether p is device memory of this heap's GPU (a recv outside the heap), of another GPU or
  // host memory: what the collectives tell apart before choosing a path.
  enum class Where : uint8_t { kHost, kHeap, kThisGpu, kOtherDevice };
  Where Locate(const void* p) const;

  HeapAllocator& allocator() { return allocator_; }
  // Zeroes [offset, offset + len) of this rank's block (a sub-team's sync area, before use).
  Status ZeroOwn(uint64_t offset, uint64_t len);

  // Enqueues one launch of the team whose members (root-team ranks, by team rank) and sync area
  // are given, on `stream` (null: the legacy default stream), and returns at once: the slot of
  // its status word and event, to be given to Wait exactly once. Blocks, the epoch and the
  // control words are filled in here; the kernel's own barriers give up at `deadline` (a
  // backstop: Wait cancels them sooner). BUSY when kSlots launches of this heap are in flight.
  Result<uint32_t> Launch(cuda::DeviceLaunch launch, const std::vector<uint32_t>& members, uint32_t me,
                          DeviceSync& sync, void* stream, Deadline deadline);
  // Whether the launch in `slot` has finished (Wait then returns without waiting).
  bool Finished(uint32_t slot) const;
  // Waits for the launch in `slot` and frees the slot: the kernel's barriers end early, and this
  // returns, when the deadline passes (TIMEOUT) or `peers_alive` turns false (PEER_DOWN); both
  // cancel every launch of this heap still in flight. MISMATCH when the ranks described
  // different calls (every rank gets it).
  Status Wait(uint32_t slot, Deadline deadline, const std::function<bool()>& peers_alive);
  // Launch, then Wait.
  Status Run(const cuda::DeviceLaunch& launch, const std::vector<uint32_t>& members, uint32_t me, DeviceSync& sync,
             void* stream, Deadline deadline, const std::function<bool()>& peers_alive);

  static constexpr uint32_t kSlots = 1024;  // launches in flight at once, over the heap's teams

  struct Control;  // host-mapped words the kernel reads and writes

 private:
  DeviceHeap(bm::Pool& pool, uint64_t heap_bytes, uint64_t own_gva, uint32_t me, int gpu);

  bm::Pool& pool_;
  uint64_t heap_bytes_;
  uint64_t own_gva_;
  uint32_t me_;
  int gpu_;
  std::vector<uint8_t*> blocks_;
  std::vector<gva::SegmentTable::Pin> pins_;  // every rank's block stays mapped while the team lives
  std::shared_ptr<Control> control_;
  HeapAllocator allocator_;
};

}  // namespace weft::symm
