// Translation of GVAs to mapped local addresses: one slot per (medium, rank). Each attach is an
// incarnation of its slot (a Mapping), and a copy pins the incarnation it resolved. Detaching a
// peer marks the slot down and returns at once: the control thread that does it must never wait
// for a copy (one stuck on a dead peer's socket would stall every control message). The
// incarnation's release (the unmap) runs when its last pin goes, so no copy ever reads memory
// being unmapped; copies resolved after the detach fail with PEER_DOWN, and a peer rejoining
// under the rank gets a new incarnation that the old pins never touch.
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
  // Marks the slot down (`dead` chooses the message later copies get) and returns without
  // waiting: the release runs here if no copy pins the slice, else when the last pin goes (on
  // that copy's thread). No-op for an empty slot.
  void Detach(Location slot, bool dead);
  // Whether the slot's last detached incarnation has not finished its release (a copy still
  // pins it, or the unmap is under way): memory at its address is still in use.
  bool Draining(Location slot) const;

  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept = default;
    Pin& operator=(Pin&& o) noexcept = default;
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
    std::shared_ptr<const void> hold_;  // the incarnation: its release waits for this
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
  // One attach of a slot. Immutable once published; shared by the slot (while up) and the pins
  // taken of it, and its destructor is the release: it runs once, after the last of them.
  struct Mapping {
    uint8_t* base = nullptr;
    uint64_t size = 0;
    bool local = false;
    int device = -1;
    uint64_t mapping_id = 0;
    uint64_t remote_peer = 0;
    std::function<void()> release;
    // Set once the release has returned (not when the last pin went: the unmap may still be
    // under way then, and a new mapping at the same address must not race it).
    std::shared_ptr<std::atomic<bool>> released = std::make_shared<std::atomic<bool>>(false);
    ~Mapping() {
      if (release) release();
      released->store(true);
    }
  };
  struct Slot {
    std::atomic<int> state{kEmpty};
    // The incarnation copies resolve to; null unless up. Resolve loads it without a lock.
    std::atomic<std::shared_ptr<const Mapping>> mapping;
    std::shared_ptr<const std::atomic<bool>> last_released;  // under attach_mu_: of the last detached
    std::string peer_name;                  // under attach_mu_
    std::string unreachable_reason;         // under attach_mu_
  };
  Status AttachSlot(Location slot, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                    std::function<void()> release, int device, uint64_t remote_peer);
  Status NotUpError(uint64_t gva, const Location& loc) const;
  Slot& slot(Location loc) const;

  Layout layout_;
  mutable std::mutex attach_mu_;  // serialises Attach/Detach; Resolve takes no lock
  uint64_t attaches_ = 0;         // under attach_mu_: the last mapping id given
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace weft::gva
