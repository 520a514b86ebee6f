#include "gva/segment_table.h"

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
  auto m = std::make_shared<Mapping>();
  m->base = base;
  m->size = size;
  m->local = local;
  m->device = device;
  m->mapping_id = ++attaches_;
  m->remote_peer = remote_peer;
  m->release = std::move(release);
  s.peer_name = std::move(peer_name);
  // A previous incarnation still pinned keeps its own Mapping: its release is not this one's.
  s.mapping.store(std::move(m));
  s.state.store(kUp);
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
  std::shared_ptr<const Mapping> gone;  // dropped outside the lock: the release may run here
  {
    std::lock_guard lock(attach_mu_);
    Slot& s = slot(loc);
    const int state = s.state.load();
    if (state != kUp && state != kUnreachable) return;
    s.state.store(dead ? kDead : kLeft);
    // Copies that resolved the incarnation before this keep it (and its memory) until they end;
    // later ones find no mapping and see the state.
    gone = s.mapping.exchange(nullptr);
    s.last_released = gone ? gone->released : nullptr;
  }
}

bool SegmentTable::Draining(Location loc) const {
  if (loc.rank >= layout_.max_ranks()) return false;
  std::lock_guard lock(attach_mu_);
  const auto& released = slot(loc).last_released;
  return released && !released->load();
}

Result<SegmentTable::Pin> SegmentTable::Resolve(uint64_t gva, uint64_t len) const {
  auto loc = layout_.Decode(gva);
  if (!loc) return Error(Code::kInvalidAddress, "{:#x} is not a GVA of this pool", gva);
  std::shared_ptr<const Mapping> m = slot(*loc).mapping.load();
  if (!m) return NotUpError(gva, *loc);
  if (loc->offset > m->size || len > m->size - loc->offset)
    return Error(Code::kOutOfRange, "[{:#x}, +{}) runs past the end of rank {}'s {} slice ({} bytes)", gva, len,
                 loc->rank, MediumName(loc->medium), m->size);
  Pin pin;
  pin.ptr_ = m->base ? m->base + loc->offset : nullptr;  // null: reachable only over the network
  pin.local_ = m->local;
  pin.device_ = m->device;
  pin.mapping_id_ = m->mapping_id;
  pin.remote_peer_ = m->remote_peer;
  pin.hold_ = std::move(m);
  return pin;
}

// Why a slot has no incarnation to pin. The names and reasons are strings a rejoin may replace,
// so they are read under attach_mu_ (which no one holds for long: Detach does not wait).
Status SegmentTable::NotUpError(uint64_t gva, const Location& loc) const {
  std::lock_guard lock(attach_mu_);
  const Slot& s = slot(loc);
  switch (s.state.load()) {
    case kUp:  // attached meanwhile: the caller may retry
      return Error(Code::kUnavailable, "GVA {:#x}: rank {} changed state during the copy", gva, loc.rank);
    case kEmpty:
      return Error(Code::kInvalidAddress, "GVA {:#x} is in the {} slice of rank {}, which no peer holds", gva,
                   MediumName(loc.medium), loc.rank);
    case kUnreachable:
      return Error(Code::kUnavailable,
                   "GVA {:#x}: rank {} ({}) is in the pool but this peer cannot reach its {} slice: {}", gva,
                   loc.rank, s.peer_name, MediumName(loc.medium), s.unreachable_reason);
    case kLeft:
      return Error(Code::kPeerDown, "GVA {:#x}: rank {} ({}) left the pool", gva, loc.rank, s.peer_name);
    default:
      return Error(Code::kPeerDown, "GVA {:#x}: rank {} ({}) died; its memory is gone", gva, loc.rank, s.peer_name);
  }
}

bool SegmentTable::IsUp(Location loc) const {
  return loc.rank < layout_.max_ranks() && slot(loc).state.load() == kUp;
}

std::string SegmentTable::PeerName(Location loc) const {
  if (loc.rank >= layout_.max_ranks()) return {};
  std::lock_guard lock(attach_mu_);
  return slot(loc).peer_name;
}

}  // namespace weft::gva
