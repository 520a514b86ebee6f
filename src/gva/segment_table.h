// Translation of GVAs to mapped local addresses: one slot per (medium, rank). A copy pins the
// slots it touches; a peer going down is detached only after its pins drain, so no copy ever
// reads memory that is being unmapped, and copies started after the detach fail with PEER_DOWN.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "gva/layout.h"

namespace weft::gva {

class SegmentTable {
 public:
  explicit SegmentTable(Layout layout);
  ~SegmentTable();
  SegmentTable(const SegmentTable&) = delete;
  SegmentTable& operator=(const SegmentTable&) = delete;

  // A slice is reachable at `base` (size bytes); a null base means it is not mapped here and
  // only a network transport reaches it (Pin::ptr() is then null). `release` runs once the slice is detached and
  // no copy uses it (it unmaps). ALREADY_EXISTS if the slot is attached. `device`: the CUDA
  // device whose memory backs a device slice mapped here (-1: unknown or host memory); copies
  // then need not ask the driver what the memory is.
  Status Attach(Location slot, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                std::function<void()> release, int device = -1);
  // A slice not mapped here, reached through the copy engine's remote ends: `remote_peer` is the
  // engine's id of the peer (engine::PeerId), whose advertised region starts at the slice's
  // GVA. Pins of it have a null ptr() and this remote_peer().
  Status AttachRemote(Location slot, uint64_t size, std::string peer_name, uint64_t remote_peer,
                      std::function<void()> release);
  // A peer holds the slot but this process has no way to reach it (no transport could use what
  // the peer advertised): copies to it fail with UNAVAILABLE quoting `reason`. ALREADY_EXISTS if
  // the slot is attached. Detach then turns it into a departed slot like any other.
  Status MarkUnreachable(Location slot, std::string peer_name, std::string reason);
  // Marks the slot down (`dead` chooses the message later copies get), waits for pinned copies
  // to finish, then runs the release. No-op for an empty slot.
  void Detach(Location slot, bool dead);

  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept
        : counter_(o.counter_), ptr_(o.ptr_), local_(o.local_), device_(o.device_), mapping_id_(o.mapping_id_),
          remote_peer_(o.remote_peer_) {
      o.counter_ = nullptr;
    }
    Pin& operator=(Pin&& o) noexcept;
    ~Pin();
    uint8_t* ptr() const { return ptr_; }
    bool local() const { return local_; }  // the slice is this process's own
    int device() const { return device_; }  // CUDA device of a device slice, -1 if not known
    // Unique per attach within this table (never reused): what a transport may key what it
    // learned about the mapping by (it outlives no detach).
    uint64_t mapping_id() const { return mapping_id_; }
    // For a slice attached with AttachRemote: the engine's peer id that reaches it; else 0.
    uint64_t remote_peer() const { return remote_peer_; }

   private:
    friend class SegmentTable;
    std::atomic<int64_t>* counter_ = nullptr;
    uint8_t* ptr_ = nullptr;
    bool local_ = false;
    int device_ = -1;
    uint64_t mapping_id_ = 0;
    uint64_t remote_peer_ = 0;
  };

  // The mapped address of [gva, gva+len). INVALID_ADDRESS outside the pool or in a slot no peer
  // holds; PEER_DOWN for a slot whose peer left or died; UNAVAILABLE for one this process cannot
  // reach (MarkUnreachable); OUT_OF_RANGE when the range runs past the slice.
  Result<Pin> Resolve(uint64_t gva, uint64_t len) const;
  bool IsUp(Location slot) const;
  std::string PeerName(Location slot) const;
  const Layout& layout() const { return layout_; }

 private:
  enum State : int { kEmpty = 0, kUp = 1, kLeft = 2, kDead = 3, kUnreachable = 4 };
  struct Slot {
    std::atomic<int> state{kEmpty};
    mutable std::atomic<int64_t> pins{0};
    uint8_t* base = nullptr;
    uint64_t size = 0;
    bool local = false;
    int device = -1;
    uint64_t mapping_id = 0;
    uint64_t remote_peer = 0;
    std::string peer_name;
    std::string unreachable_reason;  // under attach_mu_
    std::function<void()> release;
  };
  Status AttachSlot(Location slot, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                    std::function<void()> release, int device, uint64_t remote_peer);
  Status UnreachableError(uint64_t gva, const Location& loc, Pin pin) const;
  Slot& slot(Location loc) const;

  Layout layout_;
  mutable std::mutex attach_mu_;  // serialises Attach/Detach; Resolve takes no lock
  uint64_t attaches_ = 0;         // under attach_mu_: the last mapping id given
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace weft::gva
