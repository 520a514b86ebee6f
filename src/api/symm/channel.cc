#include "api/symm/channel.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "base/status.h"

namespace weft::symm {
namespace {

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace

std::string_view KindName(uint8_t kind) {
  switch (static_cast<Kind>(kind)) {
    case Kind::kBarrier: return "barrier";
    case Kind::kMalloc: return "malloc";
    case Kind::kFree: return "free";
    case Kind::kSplit: return "split";
    case Kind::kBroadcast: return "broadcast";
    case Kind::kScatter: return "scatter";
    case Kind::kGather: return "gather";
    case Kind::kAllGather: return "allgather";
    case Kind::kReduce: return "reduce";
    case Kind::kReduceScatter: return "reduce_scatter";
    case Kind::kAllReduce: return "allreduce";
    case Kind::kAllToAll: return "alltoall";
  }
  return "unknown";
}

std::string OpDesc::ToString() const {
  return fmt::format("{}(count={}, dtype={}, op={}, root={})", KindName(kind), count,
                     DTypeName(static_cast<DType>(dtype)), ReduceOpName(static_cast<ReduceOp>(op)), root);
}

uint64_t Channel::Bytes(uint32_t members, uint64_t slot_bytes) {
  return uint64_t{members} * 64 + 2 * uint64_t{members} * (kHeader + slot_bytes);
}

Channel::Channel(std::shared_ptr<Heaps> heaps, std::vector<uint32_t> members, uint32_t me, uint64_t offset,
                 uint64_t slot_bytes)
    : heaps_(std::move(heaps)), members_(std::move(members)), me_(me), offset_(offset), slot_bytes_(slot_bytes),
      sent_(members_.size(), false) {
  static_assert(sizeof(Header) <= kHeader);
}

uint64_t Channel::SlotOffset(uint64_t round, uint32_t sender) const {
  uint64_t n = members_.size();
  return offset_ + n * 64 + ((round % 2) * n + sender) * (kHeader + slot_bytes_);
}

uint64_t Channel::OwnFlag(uint32_t sender) const {
  auto* word = reinterpret_cast<uint64_t*>(heaps_->own() + FlagOffset(sender));
  return std::atomic_ref<uint64_t>(*word).load(std::memory_order_acquire);
}

void Channel::ResetOwnFlags() { std::memset(heaps_->own() + offset_, 0, members_.size() * 64); }

void Channel::Begin(const OpDesc& desc) {
  ++round_;
  desc_ = desc;
  std::fill(sent_.begin(), sent_.end(), false);
}

Status Channel::Send(uint32_t to, const void* data, uint64_t len) {
  if (to == me_ || to >= members_.size() || sent_[to] || len > slot_bytes_)
    return Error(Code::kInternal, "symm channel: message to member {} of {} bytes is not valid in this round", to, len);
  sent_[to] = true;
  Header header{desc_, round_, len};
  uint32_t peer = members_[to];
  uint64_t slot = SlotOffset(round_, me_);
  if (mapped(to)) {
    WEFT_RETURN_IF_ERROR(heaps_->Write(peer, slot + kHeader, data, len));
    WEFT_RETURN_IF_ERROR(heaps_->Write(peer, slot, &header, sizeof header));
  } else {  // one copy through the engine for header and payload
    staging_.resize(kHeader + len);
    std::memcpy(staging_.data(), &header, sizeof header);
    if (len) std::memcpy(staging_.data() + kHeader, data, len);
    Status s = heaps_->Write(peer, slot, staging_.data(), staging_.size());
    if (!s.ok()) return s.Annotate(fmt::format("sending to team rank {}", to));
  }
  Status s = heaps_->StoreWord(peer, FlagOffset(me_), round_);
  return s.ok() ? s : s.Annotate(fmt::format("signalling team rank {}", to));
}

Status Channel::Finish(Deadline deadline) {
  for (uint32_t m = 0; m < members_.size(); ++m)
    if (m != me_ && !sent_[m]) WEFT_RETURN_IF_ERROR(Send(m, nullptr, 0));
  WEFT_RETURN_IF_ERROR(WaitAll(deadline));
  return CheckDescriptions();
}

// Spins briefly (a round among mapped peers takes microseconds), then yields, checking the
// deadline and the peers' liveness about every millisecond.
Status Channel::WaitAll(Deadline deadline) {
  using Clock = std::chrono::steady_clock;
  auto next_check = Clock::now() + std::chrono::milliseconds(1);
  for (uint64_t spin = 0;; ++spin) {
    bool all = true;
    for (uint32_t m = 0; m < members_.size() && all; ++m)
      if (m != me_ && OwnFlag(m) < round_) all = false;
    if (all) return OkStatus();
    if (spin < 2000) {
      CpuRelax();
      continue;
    }
    std::this_thread::yield();
    if (Clock::now() < next_check) continue;
    next_check = Clock::now() + std::chrono::milliseconds(1);
    for (uint32_t m = 0; m < members_.size(); ++m) {
      if (m == me_ || OwnFlag(m) >= round_ || heaps_->Alive(members_[m])) continue;
      return Error(Code::kPeerDown, "team rank {} (pool rank {}) left the pool during {}: the team cannot "
                   "finish collectives without it; make a new team of the live peers",
                   m, heaps_->peer(members_[m]).pool_rank, desc_.ToString());
    }
    if (deadline.expired()) {
      std::string missing;
      for (uint32_t m = 0; m < members_.size(); ++m)
        if (m != me_ && OwnFlag(m) < round_) missing += fmt::format("{}{}", missing.empty() ? "" : ", ", m);
      return Error(Code::kTimeout, "{} did not finish before its deadline: team ranks {} have not taken part (every "
                   "rank must call the same collectives in the same order)", desc_.ToString(), missing);
    }
  }
}

Status Channel::CheckDescriptions() const {
  std::string differ;
  for (uint32_t m = 0; m < members_.size(); ++m) {
    if (m == me_) continue;
    Header h;
    std::memcpy(&h, heaps_->own() + SlotOffset(round_, m), sizeof h);
    if (h.desc == desc_) continue;
    differ += fmt::format("{}team rank {} called {}", differ.empty() ? "" : "; ", m, h.desc.ToString());
  }
  if (differ.empty()) return OkStatus();
  return Error(Code::kMismatch, "this rank (team rank {}) called {} but {}: every rank must call the same collective "
               "with the same count, dtype, op and root", me_, desc_.ToString(), differ);
}

const uint8_t* Channel::Received(uint32_t from) const { return heaps_->own() + SlotOffset(round_, from) + kHeader; }

uint64_t Channel::ReceivedBytes(uint32_t from) const {
  Header h;
  std::memcpy(&h, heaps_->own() + SlotOffset(round_, from), sizeof h);
  return h.bytes;
}

}  // namespace weft::symm
