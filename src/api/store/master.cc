#include "api/store/master.h"

#include <algorithm>
#include <regex>
#include <tuple>
#include <unordered_map>

#include "base/status.h"

namespace weft::store {
namespace {

using TimePoint = std::chrono::steady_clock::time_point;

struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

Status CheckKey(std::string_view key) {
  if (key.empty()) return Error(Code::kInvalidArgument, "an empty key names no object");
  if (key.size() > kMaxKeyBytes)
    return Error(Code::kInvalidArgument, "key of {} bytes: keys are at most {} bytes", key.size(), kMaxKeyBytes);
  return OkStatus();
}

struct Master::Object {
  uint64_t size = 0;
  std::vector<Replica> replicas;
  uint32_t writer = 0;          // pending puts: the peer that must end or revoke it
  TimePoint started{};          // pending puts: when PutStart answered
  TimePoint lease_until{};
  TimePoint last_access{};
  bool hard_pin = false;
  bool soft_pin = false;        // as put (journaled: soft_pin_until is this leader's clock)
  TimePoint soft_pin_until{};   // in the past when not soft-pinned
  uint64_t id = 0;              // unique per put (promotions keep it)
  int32_t disk_rank = -1;       // the writer keeping a copy on its disk; -1: none
  bool promote = false;         // pending only: brings an on-disk object back into memory
};

struct Master::Impl {
  gva::Allocator& allocator;
  MasterOptions options;
  Clock clock;
  mutable std::mutex mu;
  std::unordered_map<std::string, Object, KeyHash, std::equal_to<>> objects;  // complete: readers see these
  std::unordered_map<std::string, Object, KeyHash, std::equal_to<>> pending;  // started, not yet ended
  struct Parked {
    std::vector<Replica> replicas;
    TimePoint until;
  };
  std::vector<Parked> parked;  // memory of retired objects that readers may still be copying
  uint64_t evicted = 0;
  uint64_t next_id = 1;
  uint64_t inline_puts = 0;      // under mu
  uint64_t inline_deferred = 0;  // under mu
  MasterObserver observer;       // under mu

  Impl(gva::Allocator& a, MasterOptions o, Clock c) : allocator(a), options(o), clock(std::move(c)) {}

  TimePoint Now() const { return clock(); }

  // The observer's two calls. Pending promotions are not journaled, so nothing is said of them.
  void Recorded(std::string_view key, const Object& o, bool complete) const {
    if (!observer.on_record || (!complete && o.promote)) return;
    observer.on_record(ObjectRecord{std::string(key), complete, o.writer, o.size, o.id, o.disk_rank, o.replicas,
                                    o.hard_pin, o.soft_pin});
  }
  void Erased(std::string_view key, const Object& o, bool complete) const {
    if (observer.on_erased && (complete || !o.promote)) observer.on_erased(key, complete);
  }

  void FreeReplicas(const std::vector<Replica>& replicas) {
    // PEER_DOWN when the slice went meanwhile: its memory went with it.
    for (const Replica& r : replicas) (void)allocator.Free(r.gva);
  }

  // An object leaves the store: its memory is freed now, or once its lease ends.
  void Retire(Object& object, TimePoint now) {
    if (object.replicas.empty()) return;  // on disk only: no memory
    if (object.lease_until > now) {
      parked.push_back({std::move(object.replicas), object.lease_until});
    } else {
      FreeReplicas(object.replicas);
    }
    object.replicas.clear();
  }

  void ExpireLocked(TimePoint now) {
    std::erase_if(parked, [&](Parked& p) {
      if (p.until > now) return false;
      FreeReplicas(p.replicas);
      return true;
    });
    std::erase_if(pending, [&](auto& entry) {
      if (now - entry.second.started < options.put_timeout) return false;
      FreeReplicas(entry.second.replicas);
      Erased(entry.first, entry.second, false);
      return true;
    });
  }

  struct Fill {
    uint64_t capacity = 0;
    uint64_t used = 0;
    uint64_t largest_slice = 0;
  };
  Fill PoolFill() const {
    Fill fill;
    for (const auto& [rank, stats] : allocator.Slices(gva::Medium::kHost)) {
      fill.capacity += stats.capacity;
      fill.used += stats.used;
      fill.largest_slice = std::max(fill.largest_slice, stats.capacity);
    }
    return fill;
  }

  // Complete objects that may be evicted now, the first to go first: unpinned before
  // soft-pinned, each least recently used first. Leased and hard-pinned objects never go.
  std::vector<std::string> EvictionOrder(TimePoint now) const {
    struct Candidate {
      bool soft_pinned;
      TimePoint last_access;
      const std::string* key;
    };
    std::vector<Candidate> candidates;
    for (const auto& [key, o] : objects) {
      if (o.hard_pin || o.lease_until > now || o.replicas.empty()) continue;
      candidates.push_back({o.soft_pin_until > now, o.last_access, &key});
    }
    std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
      return std::tie(a.soft_pinned, a.last_access) < std::tie(b.soft_pinned, b.last_access);
    });
    std::vector<std::string> order;
    order.reserve(candidates.size());
    for (const Candidate& c : candidates) order.push_back(*c.key);
    return order;
  }

  // Reserves every replica of `rec` in the allocator, or none: false when any cannot be (no
  // such slice, out of it, overlapping, or a replica whose rank is not its address's).
  bool ReserveAll(const ObjectRecord& rec) {
    std::vector<uint64_t> done;
    for (const Replica& r : rec.replicas) {
      auto loc = allocator.layout().Decode(r.gva);
      const bool ok = loc && loc->rank == r.rank && loc->medium == gva::Medium::kHost &&
                      allocator.Reserve(r.gva, rec.size).ok();
      if (!ok) {
        for (uint64_t gva : done) (void)allocator.Free(gva);
        return false;
      }
      done.push_back(r.gva);
    }
    return true;
  }

  // One record back in the master, as it was and with a fresh lease or put timeout; false
  // (nothing done) when it cannot be.
  bool RestoreOne(const ObjectRecord& rec, TimePoint now) {
    auto& into = rec.complete ? objects : pending;
    const bool lives = !rec.replicas.empty() || (rec.complete && rec.disk_rank >= 0);
    if (!CheckKey(rec.key).ok() || rec.size == 0 || !lives || rec.replicas.size() > kMaxReplicas ||
        into.count(rec.key) || !ReserveAll(rec))
      return false;
    Object o;
    o.size = rec.size;
    o.replicas = rec.replicas;
    o.writer = rec.writer;
    o.started = now;
    o.last_access = now;
    if (rec.complete) o.lease_until = now + options.lease_ttl;
    o.hard_pin = rec.hard_pin;
    o.soft_pin = rec.soft_pin;
    if (rec.soft_pin) o.soft_pin_until = now + options.soft_pin_ttl;
    o.id = rec.id;
    o.disk_rank = rec.disk_rank;
    into.emplace(rec.key, std::move(o));
    return true;
  }

  // Unleased: its memory is freed at once. Kept, on disk only, when its writer has a copy.
  // The replicas of a promotion go to the object, if it is still the one on disk.
  Status EndPromotion(Object& promoted, std::string_view key, TimePoint now) {
    auto it = objects.find(key);
    if (it == objects.end() || it->second.id != promoted.id || !it->second.replicas.empty()) {
      FreeReplicas(promoted.replicas);
      return Error(Code::kNotFound, "'{}' was removed or replaced while it was promoted", key);
    }
    it->second.replicas = std::move(promoted.replicas);
    it->second.last_access = now;
    Recorded(key, it->second, true);
    return OkStatus();
  }

  void Evict(const std::string& key, TimePoint now) {
    auto it = objects.find(key);
    if (it == objects.end()) return;
    Retire(it->second, now);
    if (it->second.disk_rank < 0) {
      Erased(key, it->second, true);
      objects.erase(it);
    } else {
      Recorded(key, it->second, true);  // on disk only
    }
    ++evicted;
  }

  // Above the high watermark once `incoming` more bytes are placed: evict down to
  // high_watermark - eviction_ratio (counting the incoming bytes), as far as objects may go.
  void EvictForWatermark(uint64_t incoming, TimePoint now) {
    const Fill fill = PoolFill();
    if (fill.capacity == 0) return;
    const double cap = static_cast<double>(fill.capacity);
    if (static_cast<double>(fill.used + incoming) <= options.high_watermark * cap) return;
    const double target = std::max(0.0, options.high_watermark - options.eviction_ratio) * cap;
    for (const std::string& key : EvictionOrder(now)) {
      if (static_cast<double>(PoolFill().used + incoming) <= target) break;
      Evict(key, now);
    }
  }

  // The ranks to try for one replica, best first: the preferred rank (the writer's own when
  // none is named) for the first replica, then by free bytes; never a rank already holding one.
  std::vector<uint32_t> RankOrder(uint32_t first, bool is_first, const std::vector<Replica>& taken) const {
    std::vector<std::pair<uint64_t, uint32_t>> by_free;  // (free bytes, rank)
    for (const auto& [slice_rank, stats] : allocator.Slices(gva::Medium::kHost)) {
      const uint32_t rank = slice_rank;  // a lambda may not capture a structured binding (before C++20's fix in clang 16)
      const bool used = std::any_of(taken.begin(), taken.end(), [&](const Replica& r) { return r.rank == rank; });
      if (!used) by_free.emplace_back(stats.capacity - stats.used, rank);
    }
    std::sort(by_free.begin(), by_free.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::vector<uint32_t> order;
    for (const auto& [free_bytes, rank] : by_free) order.push_back(rank);
    if (is_first) {
      auto it = std::find(order.begin(), order.end(), first);
      if (it != order.end()) std::rotate(order.begin(), it, it + 1);
    }
    return order;
  }

  // One replica on the first rank of RankOrder that has room.
  Result<Replica> PlaceOne(uint64_t size, uint32_t first, bool is_first, uint32_t writer,
                           const std::vector<Replica>& taken) {
    Status last = Error(Code::kPoolFull, "no peer contributes memory to the store's pool");
    for (uint32_t rank : RankOrder(first, is_first, taken)) {
      auto gva = allocator.Alloc(size, gva::Placement::OnRank(rank), writer);
      if (gva.ok()) return Replica{rank, *gva};
      last = gva.status();
    }
    return last;
  }

  // The first replica: evicting least recently used objects one by one until it fits.
  Result<Replica> PlaceFirst(uint64_t size, uint32_t first, uint32_t writer, TimePoint now) {
    auto placed = PlaceOne(size, first, true, writer, {});
    if (placed.ok() || placed.status().code() != Code::kPoolFull) return placed;
    for (const std::string& key : EvictionOrder(now)) {
      Evict(key, now);
      placed = PlaceOne(size, first, true, writer, {});
      if (placed.ok()) return placed;
    }
    return Error(Code::kPoolFull,
                 "no room for {} bytes: every object that may be evicted was (the rest are leased, pinned or being "
                 "written); free memory or add peers",
                 size);
  }
};

Master::Master(gva::Allocator& allocator, MasterOptions options, Clock clock)
    : impl_(std::make_unique<Impl>(allocator, options,
                                   clock ? std::move(clock) : Clock([] { return std::chrono::steady_clock::now(); }))) {}

Master::~Master() = default;

Result<Placed> Master::PutStart(uint32_t writer, std::string_view key, uint64_t size, const PlaceOptions& place,
                                bool upsert, uint64_t promote_id) {
  WEFT_RETURN_IF_ERROR(CheckKey(key));
  if (promote_id != 0) return Promote(writer, key, place, promote_id);
  if (size == 0) return Error(Code::kInvalidArgument, "an empty value cannot be stored (key '{}')", key);
  if (place.replicas < 1 || place.replicas > kMaxReplicas)
    return Error(Code::kInvalidArgument, "{} replicas asked for: 1..{} are allowed", place.replicas, kMaxReplicas);
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  if (m.pending.count(key)) return Error(Code::kAlreadyExists, "a put of '{}' is in progress", key);
  if (!upsert && m.objects.count(key)) return Error(Code::kAlreadyExists, "'{}' exists (upsert replaces it)", key);
  const Impl::Fill fill = m.PoolFill();
  if (fill.capacity == 0) return Error(Code::kPoolFull, "no peer of the pool contributes memory to store '{}' in", key);
  if (size > fill.largest_slice)
    return Error(Code::kInvalidArgument,
                 "a value of {} bytes is larger than any peer's slice ({} bytes): no eviction can make room", size,
                 fill.largest_slice);
  m.EvictForWatermark(size * place.replicas, now);
  const uint32_t first = place.preferred_rank >= 0 ? static_cast<uint32_t>(place.preferred_rank) : writer;
  WEFT_ASSIGN_OR_RETURN(Replica head, m.PlaceFirst(size, first, writer, now));
  std::vector<Replica> replicas{head};
  while (replicas.size() < place.replicas) {  // best effort: fewer peers or no room means fewer
    auto more = m.PlaceOne(size, first, false, writer, replicas);
    if (!more.ok()) break;
    replicas.push_back(*more);
  }
  Object object;
  object.size = size;
  object.replicas = replicas;
  object.writer = writer;
  object.started = now;
  object.last_access = now;
  object.hard_pin = place.hard_pin;
  object.soft_pin = place.soft_pin;
  if (place.soft_pin) object.soft_pin_until = now + m.options.soft_pin_ttl;
  object.id = m.next_id++;
  const uint64_t id = object.id;
  auto entry = m.pending.emplace(std::string(key), std::move(object)).first;
  m.Recorded(key, entry->second, false);
  return Placed{replicas, id};
}

Result<Placed> Master::Promote(uint32_t writer, std::string_view key, const PlaceOptions& place, uint64_t id) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  auto it = m.objects.find(key);
  if (it == m.objects.end() || it->second.id != id || !it->second.replicas.empty())
    return Error(Code::kNotFound, "'{}' is not on disk under id {} (removed, replaced or already in memory)", key, id);
  if (m.pending.count(key)) return Error(Code::kAlreadyExists, "a put of '{}' is in progress", key);
  const uint64_t size = it->second.size;
  m.EvictForWatermark(size, now);
  WEFT_ASSIGN_OR_RETURN(Replica head, m.PlaceFirst(size, writer, writer, now));
  Object pending = it->second;  // pins, disk copy and id as they are
  pending.replicas = {head};
  pending.writer = writer;
  pending.started = now;
  pending.promote = true;
  (void)place;  // a promotion restores one replica, in the promoting writer's slice first
  m.pending.emplace(std::string(key), std::move(pending));
  return Placed{{head}, id};
}

Status Master::PutEnd(uint32_t writer, std::string_view key, bool on_disk) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  auto it = m.pending.find(key);
  if (it == m.pending.end() || it->second.writer != writer)
    return Error(Code::kNotFound, "no put of '{}' by this peer is pending (timed out, revoked or lost a replica)", key);
  auto node = m.pending.extract(it);
  node.mapped().last_access = now;
  if (node.mapped().promote) return m.EndPromotion(node.mapped(), key, now);
  node.mapped().disk_rank = on_disk ? static_cast<int32_t>(writer) : -1;
  if (auto old = m.objects.find(key); old != m.objects.end()) {  // an upsert replaces the value
    m.Retire(old->second, now);
    m.objects.erase(old);
  }
  m.Erased(key, node.mapped(), false);
  m.Recorded(key, node.mapped(), true);  // also replaces an upserted object's record
  m.objects.insert(std::move(node));
  return OkStatus();
}

Status Master::PutRevoke(uint32_t writer, std::string_view key) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  m.ExpireLocked(m.Now());
  auto it = m.pending.find(key);
  if (it == m.pending.end() || it->second.writer != writer)
    return Error(Code::kNotFound, "no put of '{}' by this peer is pending", key);
  m.FreeReplicas(it->second.replicas);
  m.Erased(key, it->second, false);
  m.pending.erase(it);
  return OkStatus();
}

Result<InlinePut> Master::PutInline(uint32_t writer, std::string_view key, std::span<const uint8_t> value,
                                    const PlaceOptions& place, bool upsert, const ReplicaWriter& write) {
  WEFT_ASSIGN_OR_RETURN(Placed placed, PutStart(writer, key, value.size(), place, upsert));
  bool written = static_cast<bool>(write);
  for (size_t i = 0; written && i < placed.replicas.size(); ++i) written = write(placed.replicas[i], value).ok();
  if (!written) {
    std::lock_guard lock(impl_->mu);
    ++impl_->inline_deferred;
    return InlinePut{std::move(placed), false};
  }
  WEFT_RETURN_IF_ERROR(PutEnd(writer, key));
  std::lock_guard lock(impl_->mu);
  ++impl_->inline_puts;
  return InlinePut{std::move(placed), true};
}

Result<ObjectView> Master::Get(std::string_view key) {
  WEFT_RETURN_IF_ERROR(CheckKey(key));
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  auto it = m.objects.find(key);
  if (it == m.objects.end()) return Error(Code::kNotFound, "no object '{}'", key);
  Object& o = it->second;
  o.lease_until = std::max(o.lease_until, now + m.options.lease_ttl);
  o.last_access = now;
  return ObjectView{o.size, o.replicas, m.options.lease_ttl, o.id, o.disk_rank};
}

Result<ObjectView> Master::Describe(std::string_view key) {
  WEFT_RETURN_IF_ERROR(CheckKey(key));
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  m.ExpireLocked(m.Now());
  auto it = m.objects.find(key);
  if (it == m.objects.end()) return Error(Code::kNotFound, "no object '{}'", key);
  const Object& o = it->second;
  return ObjectView{o.size, o.replicas, std::chrono::milliseconds(0), o.id, o.disk_rank};
}

bool Master::Exists(std::string_view key) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  auto it = m.objects.find(key);
  if (it == m.objects.end()) return false;
  it->second.lease_until = std::max(it->second.lease_until, now + m.options.lease_ttl);
  return true;
}

Status Master::Remove(std::string_view key, bool force) {
  WEFT_RETURN_IF_ERROR(CheckKey(key));
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  auto it = m.objects.find(key);
  if (it == m.objects.end()) return Error(Code::kNotFound, "no object '{}'", key);
  if (!force && it->second.lease_until > now)
    return Error(Code::kBusy, "'{}' is leased to a reader; remove it after the lease ends, or force", key);
  m.Retire(it->second, now);
  m.Erased(key, it->second, true);
  m.objects.erase(it);
  return OkStatus();
}

Result<uint64_t> Master::RemoveByRegex(std::string_view pattern, bool force) {
  std::regex re;
  try {
    re = std::regex(pattern.begin(), pattern.end(), std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    return Error(Code::kInvalidArgument, "the pattern '{}' does not compile: {}", pattern, e.what());
  }
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const TimePoint now = m.Now();
  m.ExpireLocked(now);
  uint64_t removed = 0;
  for (auto it = m.objects.begin(); it != m.objects.end();) {
    const bool go = std::regex_search(it->first, re) && (force || it->second.lease_until <= now);
    if (!go) {
      ++it;
      continue;
    }
    m.Retire(it->second, now);
    m.Erased(it->first, it->second, true);
    it = m.objects.erase(it);
    ++removed;
  }
  return removed;
}

uint64_t Master::RemoveAll(bool force) {
  auto removed = RemoveByRegex("", force);  // the empty pattern matches every key
  return removed.ok() ? *removed : 0;
}

void Master::DropRank(uint32_t rank) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  auto on_rank = [rank](const Replica& r) { return r.rank == rank; };
  for (auto it = m.objects.begin(); it != m.objects.end();) {
    Object& o = it->second;
    const size_t before = o.replicas.size();
    const int32_t disk_before = o.disk_rank;
    std::erase_if(o.replicas, on_rank);  // that memory went with the slice, its disk copy with the peer
    if (o.disk_rank == static_cast<int32_t>(rank)) o.disk_rank = -1;
    if (o.replicas.empty() && o.disk_rank < 0) {
      m.Erased(it->first, o, true);
      it = m.objects.erase(it);
      continue;
    }
    if (o.replicas.size() != before || o.disk_rank != disk_before) m.Recorded(it->first, o, true);
    ++it;
  }
  // A pending put by the dead peer, or one that lost a replica, is revoked: a put that ended
  // with a replica missing would be visible and unreadable there.
  for (auto it = m.pending.begin(); it != m.pending.end();) {
    auto& replicas = it->second.replicas;
    const bool lost = std::any_of(replicas.begin(), replicas.end(), on_rank);
    if (it->second.writer != rank && !lost) {
      ++it;
      continue;
    }
    std::erase_if(replicas, on_rank);
    m.FreeReplicas(replicas);
    m.Erased(it->first, it->second, false);
    it = m.pending.erase(it);
  }
  for (auto& p : m.parked) std::erase_if(p.replicas, on_rank);
}

void Master::Expire() {
  std::lock_guard lock(impl_->mu);
  impl_->ExpireLocked(impl_->Now());
}

void Master::SetObserver(MasterObserver observer) {
  std::lock_guard lock(impl_->mu);
  impl_->observer = std::move(observer);
}

Result<RestoreReport> Master::Restore(std::span<const ObjectRecord> records) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  if (!m.objects.empty() || !m.pending.empty())
    return Error(Code::kAlreadyExists, "restore needs a fresh master; this one holds {} objects and {} pending puts",
                 m.objects.size(), m.pending.size());
  const TimePoint now = m.Now();
  RestoreReport report;
  for (const ObjectRecord& rec : records) {
    m.next_id = std::max(m.next_id, rec.id + 1);
    (m.RestoreOne(rec, now) ? report.restored : report.skipped) += 1;
  }
  return report;
}

MasterStats Master::Stats() const {
  const Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  MasterStats st;
  st.pending_puts = m.pending.size();
  for (const auto& [key, o] : m.objects) {
    st.bytes += o.size * o.replicas.size();
    (o.replicas.empty() ? st.on_disk : st.objects) += 1;
  }
  const Impl::Fill fill = m.PoolFill();
  st.capacity = fill.capacity;
  st.used = fill.used;
  st.evicted = m.evicted;
  st.inline_puts = m.inline_puts;
  st.inline_deferred = m.inline_deferred;
  for (const auto& p : m.parked) {
    for (const Replica& r : p.replicas) {
      auto size = m.allocator.AllocationSize(r.gva);
      st.parked_bytes += size.ok() ? *size : 0;
    }
  }
  return st;
}

}  // namespace weft::store
