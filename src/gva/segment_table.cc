#include "gva/segment_table.h"

#include <thread>

namespace weft::gva {

SegmentTable::SegmentTable(Layout layout)
    : layout_(layout), slots_(new Slot[static_cast<size_t>(layout.max_ranks()) * kMediumCount]) {}

SegmentTable::~SegmentTable() {
  for (int m = 0; m < kMediumCount; ++m)
    for (uint32_t r = 0; r < layout_.max_ranks(); ++r) Detach({static_cast<Medium>(m), r, 0}, false);
}

SegmentTable::Slot& SegmentTable::slot(Location loc) const {
  return slots_[static_cast<size_t>(loc.medium) * layout_.max_ranks() + loc.rank];
}

Status SegmentTable::Attach(Location loc, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                            std::function<void()> release, int device) {
  return AttachSlot(loc, base, size, local, std::move(peer_name), std::move(release), device, 0);
}

Status SegmentTable::AttachRemote(Location loc, uint64_t size, std::string peer_name, uint64_t remote_peer,
                                  std::function<void()> release) {
  if (remote_peer == 0) return Error(Code::kInvalidArgument, "a remote slice needs the engine's peer id");
  return AttachSlot(loc, nullptr, size, /*local=*/false, std::move(peer_name), std::move(release), -1, remote_peer);
}

Status SegmentTable::AttachSlot(Location loc, uint8_t* base, uint64_t size, bool local, std::string peer_name,
                                std::function<void()> release, int device, uint64_t remote_peer) {
  if (loc.rank >= layout_.max_ranks()) return Error(Code::kOutOfRange, "rank {} >= max_ranks {}", loc.rank, layout_.max_ranks());
  if (size > layout_.rank_stride())
    return Error(Code::kOutOfRange, "slice of {} bytes exceeds the rank stride {}", size, layout_.rank_stride());
  std::lock_guard lock(attach_mu_);
  Slot& s = slot(loc);
  if (s.state.load() == kUp)
    return Error(Code::kAlreadyExists, "rank {} {} slice is already attached", loc.rank, MediumName(loc.medium));
  s.base = base;
  s.size = size;
  s.local = local;
  s.device = device;
  s.mapping_id = ++attaches_;
  s.remote_peer = remote_peer;
  s.peer_name = std::move(peer_name);
  s.release = std::move(release);
  s.state.store(kUp);  // publishes the fields above to Resolve
  return OkStatus();
}

Status SegmentTable::MarkUnreachable(Location loc, std::string peer_name, std::string reason) {
  if (loc.rank >= layout_.max_ranks()) return Error(Code::kOutOfRange, "rank {} >= max_ranks {}", loc.rank, layout_.max_ranks());
  std::lock_guard lock(attach_mu_);
  Slot& s = slot(loc);
  if (s.state.load() == kUp)
    return Error(Code::kAlreadyExists, "rank {} {} slice is already attached", loc.rank, MediumName(loc.medium));
  s.peer_name = std::move(peer_name);
  s.unreachable_reason = std::move(reason);
  s.state.store(kUnreachable);
  return OkStatus();
}

void SegmentTable::Detach(Location loc, bool dead) {
  if (loc.rank >= layout_.max_ranks()) return;
  std::function<void()> release;
  {
    std::lock_guard lock(attach_mu_);
    Slot& s = slot(loc);
    if (s.state.load() == kUnreachable) {  // nothing mapped, nothing to release
      s.state.store(dead ? kDead : kLeft);
      return;
    }
    if (s.state.load() != kUp) return;
    s.state.store(dead ? kDead : kLeft);
    // Copies that pinned the slot before the store above finish first; later ones see the state.
    while (s.pins.load() != 0) std::this_thread::yield();
    release = std::move(s.release);
    s.release = nullptr;
  }
  if (release) release();
}

Result<SegmentTable::Pin> SegmentTable::Resolve(uint64_t gva, uint64_t len) const {
  auto loc = layout_.Decode(gva);
  if (!loc) return Error(Code::kInvalidAddress, "{:#x} is not a GVA of this pool", gva);
  Slot& s = slot(*loc);
  s.pins.fetch_add(1);
  Pin pin;
  pin.counter_ = &s.pins;  // from here the pin releases itself on every return
  switch (s.state.load()) {
    case kUp: break;
    case kEmpty:
      return Error(Code::kInvalidAddress, "GVA {:#x} is in the {} slice of rank {}, which no peer holds", gva,
                   MediumName(loc->medium), loc->rank);
    case kUnreachable:
      return UnreachableError(gva, *loc, std::move(pin));
    case kLeft:
      return Error(Code::kPeerDown, "GVA {:#x}: rank {} ({}) left the pool", gva, loc->rank, s.peer_name);
    default:
      return Error(Code::kPeerDown, "GVA {:#x}: rank {} ({}) died; its memory is gone", gva, loc->rank, s.peer_name);
  }
  if (loc->offset > s.size || len > s.size - loc->offset)
    return Error(Code::kOutOfRange, "[{:#x}, +{}) runs past the end of rank {}'s {} slice ({} bytes)", gva, len,
                 loc->rank, MediumName(loc->medium), s.size);
  pin.ptr_ = s.base ? s.base + loc->offset : nullptr;  // null: reachable only over the network
  pin.local_ = s.local;
  pin.device_ = s.device;
  pin.mapping_id_ = s.mapping_id;
  pin.remote_peer_ = s.remote_peer;
  return pin;
}

// The reason is a string a rejoin may replace, so it is read under attach_mu_, and the pin goes
// first: Detach holds that mutex while it waits for pins to drain.
Status SegmentTable::UnreachableError(uint64_t gva, const Location& loc, Pin pin) const {
  pin = Pin();
  std::lock_guard lock(attach_mu_);
  const Slot& s = slot(loc);
  if (s.state.load() != kUnreachable)  // changed meanwhile: the caller may retry
    return Error(Code::kUnavailable, "GVA {:#x}: rank {} changed state during the copy", gva, loc.rank);
  return Error(Code::kUnavailable, "GVA {:#x}: rank {} ({}) is in the pool but this peer cannot reach its {} slice: {}",
               gva, loc.rank, s.peer_name, MediumName(loc.medium), s.unreachable_reason);
}

bool SegmentTable::IsUp(Location loc) const {
  return loc.rank < layout_.max_ranks() && slot(loc).state.load() == kUp;
}

std::string SegmentTable::PeerName(Location loc) const {
  if (loc.rank >= layout_.max_ranks()) return {};
  std::lock_guard lock(attach_mu_);
  return slot(loc).peer_name;
}

SegmentTable::Pin& SegmentTable::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    if (counter_) counter_->fetch_sub(1);
    counter_ = o.counter_;
    ptr_ = o.ptr_;
    local_ = o.local_;
    device_ = o.device_;
    mapping_id_ = o.mapping_id_;
    remote_peer_ = o.remote_peer_;
    o.counter_ = nullptr;
  }
  return *this;
}

SegmentTable::Pin::~Pin() {
  if (counter_) counter_->fetch_sub(1);
}

}  // namespace weft::gva
