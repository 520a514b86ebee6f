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
  // no copy uses it (it unmaps). ALREADY_EXISTS if the slot is attached.
  Status Attach(Location slot, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                std::function<void()> release);
  // Marks the slot down (`dead` chooses the message later copies get), waits for pinned copies
  // to finish, then runs the release. No-op for an empty slot.
  void Detach(Location slot, bool dead);

  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept : counter_(o.counter_), ptr_(o.ptr_), local_(o.local_) { o.counter_ = nullptr; }
    Pin& operator=(Pin&& o) noexcept;
    ~Pin();
    uint8_t* ptr() const { return ptr_; }
    bool local() const { return local_; }  // the slice is this process's own

   private:
    friend class SegmentTable;
    std::atomic<int64_t>* counter_ = nullptr;
    uint8_t* ptr_ = nullptr;
    bool local_ = false;
  };

  // The mapped address of [gva, gva+len). INVALID_ADDRESS outside the pool or in a slot no peer
  // holds; PEER_DOWN for a slot whose peer left or died; OUT_OF_RANGE when the range runs past
  // the slice.
  Result<Pin> Resolve(uint64_t gva, uint64_t len) const;
  bool IsUp(Location slot) const;
  std::string PeerName(Location slot) const;
  const Layout& layout() const { return layout_; }

 private:
  enum State : int { kEmpty = 0, kUp = 1, kLeft = 2, kDead = 3 };
  struct Slot {
    std::atomic<int> state{kEmpty};
    mutable std::atomic<int64_t> pins{0};
    uint8_t* base = nullptr;
    uint64_t size = 0;
    bool local = false;
    std::string peer_name;
    std::function<void()> release;
  };
  Slot& slot(Location loc) const;

  Layout layout_;
  mutable std::mutex attach_mu_;  // serialises Attach/Detach; Resolve takes no lock
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace weft::gva
