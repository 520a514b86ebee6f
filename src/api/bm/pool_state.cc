#include "api/bm/pool_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <set>

#include "base/log.h"
#include "wire/codec.h"

namespace weft::bm {
namespace {

constexpr uint8_t kMemberVersion = 1;
constexpr uint8_t kAllocationVersion = 1;
constexpr size_t kMaxPeerName = 1024;

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string AsString(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }

std::string MemberKey(const std::string& prefix, uint32_t rank) { return fmt::format("{}m/{:08x}", prefix, rank); }
std::string AllocationKey(const std::string& prefix, uint64_t gva) { return fmt::format("{}a/{:016x}", prefix, gva); }
std::string ObjectKey(const std::string& prefix, std::string_view key, bool complete) {
  return fmt::format("{}{}/{}", prefix, complete ? 'o' : 'p', key);
}

std::string EncodeAllocation(uint64_t size) {
  wire::Writer w;
  w.U8(kAllocationVersion);
  w.U64(size);
  return AsString(w.Take());
}

Result<uint64_t> DecodeAllocation(std::string_view bytes) {
  wire::Reader r(AsBytes(bytes));
  uint8_t version = 0;
  uint64_t size = 0;
  WEFT_RETURN_IF_ERROR(r.U8(version));
  if (version != kAllocationVersion) return Error(Code::kProtocol, "allocation record version {}", version);
  WEFT_RETURN_IF_ERROR(r.U64(size));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return size;
}

template <typename T>
Result<T> ParseHex(std::string_view text, size_t digits) {
  T v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v, 16);
  if (ec != std::errc() || end != text.data() + text.size() || text.size() != digits)
    return Error(Code::kProtocol, "'{}' is not {} hex digits", text, digits);
  return v;
}

}  // namespace

std::string StatePrefix(const std::string& pool_name) { return fmt::format("/weft/{}/state/", pool_name); }

Status AddStateEntry(PoolState& state, std::string_view relative_key, std::string_view value) {
  if (relative_key.size() < 2 || relative_key[1] != '/') return Error(Code::kProtocol, "unknown state key");
  const char kind = relative_key[0];
  std::string_view rest = relative_key.substr(2);
  if (kind == 'm') {
    WEFT_ASSIGN_OR_RETURN(uint32_t rank, ParseHex<uint32_t>(rest, 8));
    WEFT_ASSIGN_OR_RETURN(MemberRecord member, DecodeMember(value));
    state.members[rank] = std::move(member);
    return OkStatus();
  }
  if (kind == 'a') {
    WEFT_ASSIGN_OR_RETURN(uint64_t gva, ParseHex<uint64_t>(rest, 16));
    WEFT_ASSIGN_OR_RETURN(uint64_t size, DecodeAllocation(value));
    state.allocations[gva] = size;
    return OkStatus();
  }
  if (kind != 'o' && kind != 'p') return Error(Code::kProtocol, "unknown state key kind '{}'", kind);
  WEFT_ASSIGN_OR_RETURN(store::ObjectRecord record, store::DecodeObjectRecord(AsBytes(value)));
  if (record.key != rest || record.complete != (kind == 'o'))
    return Error(Code::kProtocol, "the record names another key or state than its directory key");
  state.objects.push_back(std::move(record));
  return OkStatus();
}

std::string EncodeMember(const MemberRecord& m) {
  wire::Writer w;
  w.U8(kMemberVersion);
  w.String(m.peer_name);
  w.U64(m.host_capacity);
  w.U64(m.device_capacity);
  return AsString(w.Take());
}

Result<MemberRecord> DecodeMember(std::string_view bytes) {
  wire::Reader r(AsBytes(bytes));
  uint8_t version = 0;
  MemberRecord m;
  WEFT_RETURN_IF_ERROR(r.U8(version));
  if (version != kMemberVersion) return Error(Code::kProtocol, "member record version {}", version);
  WEFT_RETURN_IF_ERROR(r.String(m.peer_name, kMaxPeerName));
  WEFT_RETURN_IF_ERROR(r.U64(m.host_capacity));
  WEFT_RETURN_IF_ERROR(r.U64(m.device_capacity));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return m;
}

Result<PoolState> LoadPoolState(meta::Directory& directory, const std::string& prefix, Deadline deadline) {
  WEFT_ASSIGN_OR_RETURN(meta::KeyValues entries, directory.List(prefix, deadline));
  PoolState state;
  for (const auto& [key, value] : entries) {
    Status s = AddStateEntry(state, std::string_view(key).substr(prefix.size()), value);
    if (s.ok()) continue;
    ++state.unreadable;
    WEFT_LOG_ERROR("HA state: skipping '{}': {}", key, s.ToString());
  }
  // Complete objects first; a pending put that ended (same key and id) is dropped.
  std::stable_partition(state.objects.begin(), state.objects.end(), [](const auto& o) { return o.complete; });
  std::set<std::pair<std::string, uint64_t>> ended;
  for (const auto& o : state.objects) {
    if (o.complete) ended.insert({o.key, o.id});
  }
  std::erase_if(state.objects, [&](const auto& o) { return !o.complete && ended.count({o.key, o.id}) != 0; });
  return state;
}

RestoreSummary RestorePoolState(const PoolState& state, gva::Allocator& allocator, store::Master& master) {
  RestoreSummary report;
  auto add = [&](uint32_t rank, gva::Medium medium, uint64_t capacity) {
    if (capacity == 0) return;
    Status s = allocator.AddSlice(rank, medium, capacity);
    if (s.ok()) return;
    ++report.skipped_slices;
    WEFT_LOG_ERROR("HA state: rank {}'s slice not restored: {}", rank, s.ToString());
  };
  for (const auto& [rank, m] : state.members) {
    add(rank, gva::Medium::kHost, m.host_capacity);
    add(rank, gva::Medium::kDevice, m.device_capacity);
    ++report.members;
  }
  for (const auto& [gva, size] : state.allocations) {
    Status s = allocator.Reserve(gva, size);
    if (s.ok()) {
      ++report.allocations;
      continue;
    }
    ++report.skipped_allocations;
    WEFT_LOG_ERROR("HA state: allocation {:#x} ({} bytes) not restored: {}", gva, size, s.ToString());
  }
  auto objects = master.Restore(state.objects);
  if (!objects.ok()) {
    report.skipped_objects = state.objects.size();
    WEFT_LOG_ERROR("HA state: the store's objects were not restored: {}", objects.status().ToString());
  } else {
    report.objects = objects->restored;
    report.skipped_objects = objects->skipped;
  }
  return report;
}

PoolStateRecorder::PoolStateRecorder(meta::JournalWriter& journal, std::string prefix, const gva::Layout& layout,
                                     const PoolState& state)
    : journal_(journal), prefix_(std::move(prefix)), layout_(layout), members_(state.members),
      allocations_(state.allocations) {}

void PoolStateRecorder::OnJoined(uint32_t rank, const std::string& peer_name) {
  MemberRecord& m = members_[rank];
  if (m.peer_name == peer_name) return;  // a restored member back under its rank
  m = MemberRecord{peer_name, 0, 0};
  WriteMember(rank);
}

void PoolStateRecorder::OnAddSlice(uint32_t rank, gva::Medium medium, uint64_t capacity) {
  MemberRecord& m = members_[rank];
  uint64_t& field = medium == gva::Medium::kHost ? m.host_capacity : m.device_capacity;
  if (field == capacity) return;
  field = capacity;
  WriteMember(rank);
}

void PoolStateRecorder::OnAlloc(uint64_t gva, uint64_t size) {
  allocations_[gva] = size;
  journal_.Set(AllocationKey(prefix_, gva), EncodeAllocation(size));
}

void PoolStateRecorder::OnFree(uint64_t gva) {
  allocations_.erase(gva);
  journal_.Erase(AllocationKey(prefix_, gva));
}

void PoolStateRecorder::OnGone(uint32_t rank) {
  if (members_.erase(rank) != 0) journal_.Erase(MemberKey(prefix_, rank));
  for (gva::Medium medium : {gva::Medium::kHost, gva::Medium::kDevice}) {
    const uint64_t base = layout_.SliceBase(medium, rank);
    auto it = allocations_.lower_bound(base);
    while (it != allocations_.end() && it->first < base + layout_.rank_stride()) {
      journal_.Erase(AllocationKey(prefix_, it->first));
      it = allocations_.erase(it);
    }
  }
}

store::MasterObserver PoolStateRecorder::MasterObserver() {
  store::MasterObserver o;
  o.on_record = [this](const store::ObjectRecord& r) {
    const std::vector<uint8_t> bytes = store::EncodeObjectRecord(r);
    journal_.Set(ObjectKey(prefix_, r.key, r.complete), std::string(bytes.begin(), bytes.end()));
  };
  o.on_erased = [this](std::string_view key, bool complete) { journal_.Erase(ObjectKey(prefix_, key, complete)); };
  return o;
}

void PoolStateRecorder::WriteMember(uint32_t rank) { journal_.Set(MemberKey(prefix_, rank), EncodeMember(members_[rank])); }

}  // namespace weft::bm
