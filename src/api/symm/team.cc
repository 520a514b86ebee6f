// A team's life (Create, Split, the collective heap allocation) and its one-sided operations.
// The collectives are in collectives.cc.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "api/bm/pool_internal.h"
#include "api/symm/device_collectives.h"
#include "api/symm/team_impl.h"
#include "base/log.h"
#include "base/status.h"
#include "wire/codec.h"

namespace weft::symm {
namespace {

constexpr uint32_t kCreateMagic = 0x57534d31;  // "WSM1": a Team::Create contribution
constexpr uint64_t kMaxSlotBytes = 64 << 20;
constexpr size_t kMaxUserContext = 64 << 10;

// What each peer states at Create; all must agree on the shape.
struct Shape {
  uint64_t heap_bytes = 0;
  uint64_t slot_bytes = 0;
  uint64_t one_shot_max_bytes = 0;
  uint64_t device_heap_bytes = 0;
  bool operator==(const Shape&) const = default;
};

std::vector<uint8_t> EncodeShape(const Shape& s, std::span<const uint8_t> context) {
  wire::Writer w;
  w.U32(kCreateMagic);
  w.U64(s.heap_bytes);
  w.U64(s.slot_bytes);
  w.U64(s.one_shot_max_bytes);
  w.U64(s.device_heap_bytes);
  w.Bytes(context);
  return w.Take();
}

Result<std::pair<Shape, std::vector<uint8_t>>> DecodeShape(std::span<const uint8_t> data, uint32_t pool_rank) {
  wire::Reader r(data);
  Shape s;
  uint32_t magic = 0;
  std::vector<uint8_t> context;
  if (!r.U32(magic).ok() || magic != kCreateMagic || !r.U64(s.heap_bytes).ok() || !r.U64(s.slot_bytes).ok() ||
      !r.U64(s.one_shot_max_bytes).ok() || !r.U64(s.device_heap_bytes).ok() || !r.Bytes(context, kMaxUserContext).ok() || !r.ExpectEnd().ok())
    return Error(Code::kMismatch, "pool rank {} is not creating a symmetric team (another collective of the pool "
                 "is under way there): every peer must call Team::Create together", pool_rank);
  return std::pair{s, std::move(context)};
}

Status CheckOptions(const TeamOptions& o) {
  if (o.heap_bytes == 0 || o.heap_bytes > (uint64_t{1} << 46))
    return Error(Code::kInvalidArgument, "heap_bytes {} is out of range (1 byte to 64 TiB)", o.heap_bytes);
  if (o.slot_bytes < 64 || o.slot_bytes > kMaxSlotBytes || o.slot_bytes % 64 != 0)
    return Error(Code::kInvalidArgument, "slot_bytes {} must be a multiple of 64 from 64 to {}", o.slot_bytes,
                 kMaxSlotBytes);
  if (o.user_context.size() > kMaxUserContext)
    return Error(Code::kInvalidArgument, "user_context of {} bytes is over {} bytes", o.user_context.size(),
                 kMaxUserContext);
  if (o.timeout_ms == 0) return Error(Code::kInvalidArgument, "timeout_ms must be at least 1");
  if (o.device_heap_bytes > (uint64_t{1} << 46))
    return Error(Code::kInvalidArgument, "device_heap_bytes {} is out of range (0 to 64 TiB)", o.device_heap_bytes);
  return OkStatus();
}

using Gathered = std::vector<std::pair<uint32_t, std::vector<uint8_t>>>;

// Step 1 of Create: every peer's shape and context, in pool-rank order.
Result<Gathered> AgreeOnShape(bm::Pool& pool, const Shape& mine, const TeamOptions& o, Deadline dl,
                              std::vector<std::vector<uint8_t>>& contexts) {
  WEFT_ASSIGN_OR_RETURN(Gathered all, pool.Allgather(EncodeShape(mine, o.user_context), dl));
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string differ;
  for (const auto& entry : all) {
    WEFT_ASSIGN_OR_RETURN(auto decoded, DecodeShape(entry.second, entry.first));
    if (!(decoded.first == mine))
      differ += fmt::format("{}pool rank {} asked for heap_bytes={} slot_bytes={} one_shot_max_bytes={} "
                            "device_heap_bytes={}", differ.empty() ? "" : "; ", entry.first,
                            decoded.first.heap_bytes, decoded.first.slot_bytes, decoded.first.one_shot_max_bytes,
                            decoded.first.device_heap_bytes);
    contexts.push_back(std::move(decoded.second));
  }
  if (!differ.empty())
    return Error(Code::kMismatch, "team options differ across peers (this peer: heap_bytes={} slot_bytes={} "
                 "one_shot_max_bytes={} device_heap_bytes={}; {}): every peer must create the team with the same "
                 "ones", mine.heap_bytes, mine.slot_bytes, mine.one_shot_max_bytes, mine.device_heap_bytes, differ);
  return all;
}

std::vector<uint8_t> EncodeU64(uint64_t v) {
  std::vector<uint8_t> out(8);
  std::memcpy(out.data(), &v, 8);
  return out;
}

// Step 2: every peer's block address (0 where it could not allocate one), in pool-rank order.
Result<std::vector<PeerHeap>> ExchangeBlocks(bm::Pool& pool, uint64_t own_gva, uint64_t block, Deadline dl) {
  WEFT_ASSIGN_OR_RETURN(Gathered all, pool.Allgather(EncodeU64(own_gva), dl));
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<PeerHeap> peers;
  for (const auto& [rank, data] : all) {
    uint64_t gva = 0;
    if (data.size() == 8) std::memcpy(&gva, data.data(), 8);
    if (gva == 0)
      return Error(Code::kPoolFull, "pool rank {} could not allocate its symmetric block of {} bytes in its own "
                   "slice: create the team with a smaller heap_bytes or join with a larger rank_size", rank, block);
    peers.push_back(PeerHeap{rank, gva, nullptr});
  }
  return peers;
}

uint64_t Fnv1a(std::span<const uint32_t> v) {
  uint64_t h = 1469598103934665603ull;
  for (uint32_t x : v)
    for (int b = 0; b < 4; ++b) h = (h ^ ((x >> (8 * b)) & 0xff)) * 1099511628211ull;
  return h;
}

bool Compare(uint64_t a, Cmp cmp, uint64_t b) {
  switch (cmp) {
    case Cmp::kEq: return a == b;
    case Cmp::kNe: return a != b;
    case Cmp::kGt: return a > b;
    case Cmp::kGe: return a >= b;
    case Cmp::kLt: return a < b;
    case Cmp::kLe: return a <= b;
  }
  return false;
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: case DType::kI32: return 4;
    case DType::kBF16: case DType::kF16: return 2;
    case DType::kI64: return 8;
    case DType::kU8: return 1;
  }
  return 1;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
    case DType::kU8: return "u8";
  }
  return "unknown";
}

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kProd: return "prod";
  }
  return "unknown";
}

Team::Team(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Team::~Team() {
  // A kernel still in flight reads this rank's heap and the peers'.
  if (impl_ && !impl_->in_flight.empty()) (void)symm::DeviceSynchronize(*impl_, impl_->DeadlineOf(std::nullopt));
}

Result<std::unique_ptr<Team>> Team::Create(bm::Pool& pool, const TeamOptions& options, OptDeadline deadline) {
  WEFT_RETURN_IF_ERROR(CheckOptions(options));
  Deadline dl = deadline ? *deadline : Deadline::After(std::chrono::milliseconds(options.timeout_ms));
  Shape shape{(options.heap_bytes + 63) / 64 * 64, options.slot_bytes,
              options.one_shot_max_bytes ? options.one_shot_max_bytes : kDefaultOneShotMaxBytes,
              (options.device_heap_bytes + 63) / 64 * 64};
  std::vector<std::vector<uint8_t>> contexts;
  WEFT_ASSIGN_OR_RETURN(Gathered all, AgreeOnShape(pool, shape, options, dl, contexts));
  uint32_t n = static_cast<uint32_t>(all.size());
  uint64_t block = shape.heap_bytes + Channel::Bytes(n, shape.slot_bytes);
  // A failed allocation still takes part in the exchange (as 0), so every peer learns of it.
  auto own = pool.Alloc(block, Placement::Local());
  uint64_t own_gva = own.ok() ? *own : 0;
  if (own.ok()) {
    WEFT_ASSIGN_OR_RETURN(void* local, pool.LocalAddress(own_gva, block));
    std::memset(static_cast<uint8_t*>(local) + shape.heap_bytes, 0, uint64_t{n} * 64);  // the channel's flags
  }
  auto peers = ExchangeBlocks(pool, own_gva, block, dl);
  if (!peers.ok()) {
    if (own.ok()) (void)pool.Free(own_gva);
    return own.ok() ? peers.status() : own.status().Annotate("allocating this peer's symmetric block");
  }
  std::vector<gva::SegmentTable::Pin> pins;
  uint32_t me = 0;
  for (uint32_t r = 0; r < n; ++r) {
    PeerHeap& p = (*peers)[r];
    if (p.pool_rank == pool.rank()) me = r;
    auto pin = bm::PoolAccess::PinRange(pool, p.gva, block);
    if (!pin.ok()) {
      (void)pool.Free(own_gva);
      return pin.status().Annotate(fmt::format("reaching pool rank {}'s symmetric block", p.pool_rank));
    }
    p.mapped = pin->ptr();
    pins.push_back(std::move(*pin));
  }
  auto impl = std::make_unique<Impl>();
  impl->heaps = std::make_shared<Heaps>(pool, shape.heap_bytes, own_gva, *peers, std::move(pins));
  if (shape.device_heap_bytes > 0) {
    std::vector<uint32_t> pool_ranks;
    for (const PeerHeap& p : *peers) pool_ranks.push_back(p.pool_rank);
    WEFT_ASSIGN_OR_RETURN(impl->device, DeviceHeap::Create(pool, shape.device_heap_bytes, pool_ranks, me, dl));
    impl->device_sync.offset = impl->device->root_sync_offset();
  }
  for (uint32_t r = 0; r < n; ++r) impl->members.push_back(r);
  impl->me = me;
  impl->id = (*peers)[0].gva;
  impl->slot_bytes = shape.slot_bytes;
  impl->one_shot_max_bytes = shape.one_shot_max_bytes;
  impl->timeout_ms = options.timeout_ms;
  impl->device_async = options.device_async;
  impl->contexts = std::move(contexts);
  impl->channel = std::make_unique<Channel>(impl->heaps, impl->members, me, shape.heap_bytes, shape.slot_bytes);
  std::unique_ptr<Team> team(new Team(std::move(impl)));
  WEFT_LOG_INFO("symm: team {:#x}, rank {} of {}: {}", team->id(), me, n, team->Plan("allreduce", 0).ToString());
  return team;
}

Result<std::unique_ptr<Team>> Team::Split(std::span<const uint32_t> ranks, OptDeadline deadline) {
  Impl& t = *impl_;
  Deadline dl = t.DeadlineOf(deadline);
  OpDesc desc{static_cast<uint8_t>(Kind::kSplit), 0, 0, 0, static_cast<uint32_t>(ranks.size()), Fnv1a(ranks)};
  Status bad = OkStatus();
  std::vector<bool> seen(t.size(), false);
  for (uint32_t r : ranks) {
    if (r >= t.size()) bad = Error(Code::kInvalidArgument, "rank {} is not a rank of this team of {}", r, t.size());
    else if (seen[r]) bad = Error(Code::kInvalidArgument, "rank {} is listed twice in the sub-team", r);
    else seen[r] = true;
  }
  if (ranks.empty()) bad = Error(Code::kInvalidArgument, "a sub-team needs at least one rank");
  if (!t.root) bad = Error(Code::kNotSupported, "split the team Team::Create made, not a sub-team");
  if (!bad.ok()) desc.pad = 1;  // the others fail with MISMATCH instead of waiting for this rank
  Status agreed = t.Round(desc, dl, [] { return OkStatus(); });
  if (!bad.ok()) return bad;
  if (!agreed.ok()) return agreed;
  uint64_t channel_bytes = Channel::Bytes(static_cast<uint32_t>(ranks.size()), t.slot_bytes);
  uint64_t offset;
  {
    std::lock_guard lock(t.heaps->allocator_mu());
    WEFT_ASSIGN_OR_RETURN(offset, t.heaps->allocator().Allocate(channel_bytes));
  }
  // Every rank allocates the sub-team's device sync area too, so the heaps' allocators stay alike.
  uint64_t device_sync_offset = 0;
  if (t.device) {
    WEFT_ASSIGN_OR_RETURN(device_sync_offset, t.device->allocator().Allocate(cuda::kSyncBytes));
  }
  auto where = std::find(ranks.begin(), ranks.end(), t.me);
  std::unique_ptr<Impl> sub;
  Status zeroed = OkStatus();
  if (where != ranks.end()) {
    sub = std::make_unique<Impl>();
    sub->heaps = t.heaps;
    for (uint32_t r : ranks) sub->members.push_back(t.members[r]);
    sub->me = static_cast<uint32_t>(where - ranks.begin());
    sub->id = t.id ^ (offset * 0x9e3779b97f4a7c15ull);
    sub->root = false;
    sub->slot_bytes = t.slot_bytes;
    sub->one_shot_max_bytes = t.one_shot_max_bytes;
    sub->timeout_ms = t.timeout_ms;
    for (uint32_t r : ranks) sub->contexts.push_back(t.contexts[r]);
    sub->channel = std::make_unique<Channel>(sub->heaps, sub->members, sub->me, offset, t.slot_bytes);
    sub->device = t.device;
    sub->device_sync.offset = device_sync_offset;
    sub->device_async = t.device_async;
    if (t.device) zeroed = t.device->ZeroOwn(device_sync_offset, cuda::kSyncBytes);
    sub->channel->ResetOwnFlags();
  }
  // No member sends on the new channel (or its device flags) before every member has zeroed its
  // flags; a member that could not still takes part, then says why.
  WEFT_RETURN_IF_ERROR(Barrier(dl));
  WEFT_RETURN_IF_ERROR(zeroed);
  if (!sub) return std::unique_ptr<Team>();
  return std::unique_ptr<Team>(new Team(std::move(sub)));
}

uint64_t Team::id() const { return impl_->id; }
uint32_t Team::rank() const { return impl_->me; }
uint32_t Team::size() const { return impl_->size(); }
uint32_t Team::pool_rank(uint32_t team_rank) const {
  return team_rank < size() ? impl_->peer(team_rank).pool_rank : UINT32_MAX;
}
uint64_t Team::heap_bytes() const { return impl_->heaps->heap_bytes(); }
const std::vector<std::vector<uint8_t>>& Team::user_contexts() const { return impl_->contexts; }

Result<uint64_t> Team::Malloc(uint64_t bytes, OptDeadline deadline) {
  Impl& t = *impl_;
  if (!t.root) return Error(Code::kNotSupported, "allocate on the team Team::Create made (sub-teams share its heap)");
  OpDesc desc{static_cast<uint8_t>(Kind::kMalloc), 0, 0, 0, 0, bytes};
  WEFT_RETURN_IF_ERROR(t.Round(desc, t.DeadlineOf(deadline), [] { return OkStatus(); }));
  std::lock_guard lock(t.heaps->allocator_mu());
  return t.heaps->allocator().Allocate(bytes);  // the same answer on every rank: same calls, same order
}

Status Team::Free(uint64_t offset, OptDeadline deadline) {
  Impl& t = *impl_;
  if (!t.root) return Error(Code::kNotSupported, "free on the team Team::Create made (sub-teams share its heap)");
  OpDesc desc{static_cast<uint8_t>(Kind::kFree), 0, 0, 0, 0, offset};
  WEFT_RETURN_IF_ERROR(t.Round(desc, t.DeadlineOf(deadline), [] { return OkStatus(); }));
  std::lock_guard lock(t.heaps->allocator_mu());
  return t.heaps->allocator().Release(offset);
}

uint64_t Team::device_heap_bytes() const { return impl_->device ? impl_->device->heap_bytes() : 0; }

Result<uint64_t> Team::DeviceMalloc(uint64_t bytes, OptDeadline deadline) {
  Impl& t = *impl_;
  if (!t.device) return Error(Code::kNotSupported, "this team has no device heap: create it with device_heap_bytes");
  if (!t.root) return Error(Code::kNotSupported, "allocate on the team Team::Create made (sub-teams share its heap)");
  OpDesc desc{static_cast<uint8_t>(Kind::kMalloc), 1, 0, 0, 0, bytes};
  WEFT_RETURN_IF_ERROR(t.Round(desc, t.DeadlineOf(deadline), [] { return OkStatus(); }));
  return t.device->allocator().Allocate(bytes);  // the same answer on every rank: same calls, same order
}

Status Team::DeviceFree(uint64_t offset, OptDeadline deadline) {
  Impl& t = *impl_;
  if (!t.device) return Error(Code::kNotSupported, "this team has no device heap: create it with device_heap_bytes");
  if (!t.root) return Error(Code::kNotSupported, "free on the team Team::Create made (sub-teams share its heap)");
  // The launches in flight may read the block; their failures stay for DeviceSynchronize.
  if (!t.in_flight.empty()) {
    t.async_failure = symm::DeviceSynchronize(t, t.DeadlineOf(deadline));
    if (!t.broken.ok()) return t.broken;
  }
  OpDesc desc{static_cast<uint8_t>(Kind::kFree), 1, 0, 0, 0, offset};
  WEFT_RETURN_IF_ERROR(t.Round(desc, t.DeadlineOf(deadline), [] { return OkStatus(); }));
  return t.device->allocator().Release(offset);
}

void* Team::DeviceLocal(uint64_t offset) const {
  const auto& d = impl_->device;
  return d && offset < d->heap_bytes() ? d->own() + offset : nullptr;
}

Result<void*> Team::DevicePeerAddress(uint32_t team_rank, uint64_t offset) const {
  const auto& d = impl_->device;
  if (!d) return Error(Code::kNotSupported, "this team has no device heap: create it with device_heap_bytes");
  if (team_rank >= size()) return Error(Code::kInvalidArgument, "rank {} is not in this team of {}", team_rank, size());
  if (offset >= d->heap_bytes())
    return Error(Code::kOutOfRange, "offset {} is past the device heap of {} bytes", offset, d->heap_bytes());
  return static_cast<void*>(d->block(impl_->members[team_rank]) + offset);
}

Result<DeviceHeapView> Team::DeviceHeaps() const {
  const auto& d = impl_->device;
  if (!d) return Error(Code::kNotSupported, "this team has no device heap: create it with device_heap_bytes");
  DeviceHeapView v;
  for (uint32_t r = 0; r < size(); ++r) v.heap[r] = d->block(impl_->members[r]);
  v.heap_bytes = d->heap_bytes();
  v.rank = rank();
  v.size = size();
  return v;
}

void Team::SetStream(void* cuda_stream) { impl_->stream = cuda_stream; }

Status Team::DeviceSynchronize(OptDeadline deadline) {
  Impl& t = *impl_;
  if (!t.device) return Error(Code::kNotSupported, "this team has no device heap: create it with device_heap_bytes");
  return symm::DeviceSynchronize(t, t.DeadlineOf(deadline));
}

void* Team::Local(uint64_t offset) const {
  return offset < heap_bytes() ? impl_->heaps->own() + offset : nullptr;
}

Result<void*> Team::PeerAddress(uint32_t team_rank, uint64_t offset) const {
  if (team_rank >= size()) return Error(Code::kInvalidArgument, "rank {} is not in this team of {}", team_rank, size());
  if (offset >= heap_bytes()) return Error(Code::kOutOfRange, "offset {} is past the heap of {} bytes", offset, heap_bytes());
  const PeerHeap& p = impl_->peer(team_rank);
  if (!p.mapped)
    return Error(Code::kNotSupported, "team rank {} (pool rank {}) is on another node: its heap is not mapped here; "
                 "use Put and Get", team_rank, p.pool_rank);
  return static_cast<void*>(p.mapped + offset);
}

namespace {
Status CheckRange(const Team& team, uint32_t team_rank, uint64_t offset, uint64_t len, const void* local) {
  if (team_rank >= team.size())
    return Error(Code::kInvalidArgument, "rank {} is not in this team of {}", team_rank, team.size());
  if (offset > team.heap_bytes() || len > team.heap_bytes() - offset)
    return Error(Code::kOutOfRange, "[{}, +{}) runs past the symmetric heap of {} bytes", offset, len,
                 team.heap_bytes());
  if (len > 0 && !local) return Error(Code::kInvalidArgument, "a null local buffer for {} bytes", len);
  return OkStatus();
}
}  // namespace

Status Team::Put(uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len) {
  WEFT_RETURN_IF_ERROR(CheckRange(*this, team_rank, dst_offset, len, src));
  return impl_->heaps->Write(impl_->members[team_rank], dst_offset, src, len);
}

Status Team::Get(void* dst, uint32_t team_rank, uint64_t src_offset, uint64_t len) {
  WEFT_RETURN_IF_ERROR(CheckRange(*this, team_rank, src_offset, len, dst));
  return impl_->heaps->Read(dst, impl_->members[team_rank], src_offset, len);
}

Status Team::PutSignal(uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len, uint64_t sig_offset,
                       uint64_t value, SignalOp op) {
  WEFT_RETURN_IF_ERROR(CheckRange(*this, team_rank, dst_offset, len, src));
  WEFT_RETURN_IF_ERROR(CheckRange(*this, team_rank, sig_offset, 8, this));
  if (sig_offset % 8 != 0) return Error(Code::kInvalidArgument, "signal offset {} is not 8-byte aligned", sig_offset);
  const PeerHeap& p = impl_->peer(team_rank);
  if (op == SignalOp::kAdd && !p.mapped)
    return Error(Code::kNotSupported, "an atomic signal add to team rank {} on another node has no path yet: use "
                 "SignalOp::kSet", team_rank);
  WEFT_RETURN_IF_ERROR(impl_->heaps->Write(impl_->members[team_rank], dst_offset, src, len));
  if (op == SignalOp::kSet) return impl_->heaps->StoreWord(impl_->members[team_rank], sig_offset, value);
  std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p.mapped + sig_offset))
      .fetch_add(value, std::memory_order_acq_rel);
  return OkStatus();
}

uint64_t Team::SignalValue(uint64_t sig_offset) const {
  if (sig_offset % 8 != 0 || sig_offset + 8 > heap_bytes()) return 0;
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(impl_->heaps->own() + sig_offset))
      .load(std::memory_order_acquire);
}

Status Team::WaitUntil(uint64_t sig_offset, Cmp cmp, uint64_t value, OptDeadline deadline) {
  if (sig_offset % 8 != 0 || sig_offset > heap_bytes() || heap_bytes() - sig_offset < 8)
    return Error(Code::kInvalidArgument, "signal offset {} is not an aligned word of the heap", sig_offset);
  Deadline dl = impl_->DeadlineOf(deadline);
  for (uint64_t spin = 0;; ++spin) {
    uint64_t now = SignalValue(sig_offset);
    if (Compare(now, cmp, value)) return OkStatus();
    if (spin < 2000) continue;
    if ((spin & 63) == 0 && dl.expired())
      return Error(Code::kTimeout, "the signal at offset {} still reads {} at the deadline", sig_offset, now);
    std::this_thread::yield();
  }
}

void Team::Fence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
void Team::Quiet() { std::atomic_thread_fence(std::memory_order_seq_cst); }

}  // namespace weft::symm
