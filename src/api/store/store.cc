// The store's client (include/weft/store.h): asks the master where objects are (service calls
// through the pool's coordinator) and moves their bytes itself through the pool's engine, so a
// same-node replica is one memcpy through the mapped slice and a remote one goes over tcp/ucx.
#include <weft/store.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

#include "api/bm/pool_internal.h"
#include "api/store/protocol.h"
#include "api/store/ssd_tier.h"
#include "base/log.h"
#include "base/status.h"

namespace weft::store {
namespace {

using SteadyClock = std::chrono::steady_clock;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// A batch's entry: the parts of one value, laid end to end in the object.
struct PutItem {
  std::vector<Span> parts;
  uint64_t size = 0;
};

// The status of every copy that served one key, folded: the first failure wins.
void Fold(Status& into, const Status& s) {
  if (into.ok() && !s.ok()) into = s;
}

// Runs `run` on the keys that may be sent (CheckKey) and answers the others with their error, so
// a bad key fails alone. `run` gets the indices of the valid keys and returns one result each.
template <typename R, typename Run>
std::vector<R> ForValidKeys(std::span<const std::string> keys, Run run) {
  std::vector<R> out;
  out.reserve(keys.size());
  std::vector<size_t> valid;
  for (size_t i = 0; i < keys.size(); ++i) {
    Status s = CheckKey(keys[i]);
    if (keys.size() > kMaxBatch) s = Error(Code::kInvalidArgument, "{} keys in one batch: at most {}", keys.size(), kMaxBatch);
    if (s.ok()) valid.push_back(i);
    out.push_back(R(s.ok() ? Error(Code::kInternal, "not run") : s));
  }
  if (valid.empty()) return out;
  std::vector<R> ran = run(valid);
  for (size_t j = 0; j < valid.size(); ++j) out[valid[j]] = std::move(ran[j]);
  return out;
}

template <typename T>
std::vector<T> Pick(std::span<const T> all, const std::vector<size_t>& at) {
  std::vector<T> out;
  out.reserve(at.size());
  for (size_t i : at) out.push_back(all[i]);
  return out;
}

}  // namespace

struct Store::Impl {
  std::unique_ptr<bm::Pool> pool;
  std::unique_ptr<SsdTier> ssd;             // store_ssd_path; null: none
  std::atomic<bool> ssd_failed_once{false};
  // Whether the master takes inline puts (kPutInline); cleared the first time it refuses the op
  // (a master older than it), and puts then take two calls as before.
  std::atomic<bool> inline_puts{true};
  std::mutex mu;
  std::map<uint64_t, uint64_t> registered;  // start -> size, non-overlapping

  Result<std::vector<KeyResult>> Call(const std::vector<uint8_t>& request, size_t keys) {
    WEFT_ASSIGN_OR_RETURN(auto reply, bm::PoolAccess::Call(*pool, request));
    return DecodeKeyResults(reply, keys);
  }

  Status CheckRegistered(uint64_t addr, uint64_t size) {
    std::lock_guard lock(mu);
    auto it = registered.upper_bound(addr);
    if (it != registered.begin()) {
      --it;
      if (addr >= it->first && addr + size <= it->first + it->second) return OkStatus();
    }
    return Error(Code::kNotRegistered,
                 "buffer {:#x}+{} is not inside a registered buffer: call RegisterBuffer (register_buffer) first",
                 addr, size);
  }

  // The replicas to read, best first: one in this peer's own slice, then the others in order.
  std::vector<Replica> ReadOrder(std::vector<Replica> replicas) const {
    const uint32_t me = pool->rank();
    std::stable_partition(replicas.begin(), replicas.end(), [me](const Replica& r) { return r.rank == me; });
    return replicas;
  }

  std::vector<Status> Put(std::span<const std::string> keys, const std::vector<PutItem>& items,
                          const PlaceOptions& place, bool upsert);
  // The first call of a put: kPutInline (the values in the request; the master writes and ends
  // what it can) when every value is small and they fit one call and no SSD tier needs the id
  // first, else kPutStart. Either answers each key's placement; an inline one may be complete.
  Result<std::vector<KeyResult>> StartPut(std::span<const std::string> keys, const std::vector<PutItem>& items,
                                          const PlaceOptions& place, bool upsert);
  // How a started put finishes: its bytes did not all land, they did, they did and the SSD tier
  // holds a copy too.
  enum class Finish { kNone, kRevoke, kEnd, kEndOnDisk };
  // Ends or revokes the started puts of `keys`; fills out[k] for the ended ones.
  void EndPuts(std::span<const std::string> keys, const std::vector<Finish>& finish, std::vector<Status>& out);
  // Writes a value to the SSD tier; false (logged once) when it cannot.
  bool KeepOnDisk(uint64_t id, const std::string& key, const PutItem& item);
  // An object evicted from memory: read from this client's SSD tier (when it is the writer that
  // kept it) into the buffer, and promoted back into memory, best effort.
  Result<uint64_t> ReadFromDisk(const std::string& key, const KeyResult& found, const Buffer& buffer);
  void Promote(const std::string& key, uint64_t id, const Buffer& value);
  // Where key i's value (of `size` bytes) is to be read to.
  using Destination = std::function<Result<Buffer>(size_t i, uint64_t size)>;
  // One master call for every key, then one batch of copies from the replicas (the reader's own
  // first, the others when a copy fails), each checked against its lease.
  std::vector<Result<uint64_t>> Read(std::span<const std::string> keys, const Destination& destination);
  // Read into registered buffers (an unregistered one fails alone, unasked).
  std::vector<Result<uint64_t>> GetInto(std::span<const std::string> keys, std::span<const Buffer> buffers);
  // One copy out of an object found by a get: `len` bytes from `offset` in its value to `dst`.
  struct PlannedRead {
    uint64_t dst = 0;
    uint64_t offset = 0;
    uint64_t len = 0;
    const KeyResult* found = nullptr;
    const std::string* key = nullptr;
  };
  // Runs the reads in one batch (the reader's own replica first, the others in turn when a copy
  // fails), each checked against the lease granted at `leased_at`: one status per read.
  std::vector<Status> RunReads(const std::vector<PlannedRead>& reads, SteadyClock::time_point leased_at);
  std::vector<Result<ObjectDesc>> Describe(std::span<const std::string> keys);
  // GetRanges after the key checks: `asked` holds the distinct valid keys, ranges[i] reads
  // asked[slot[i]] (ranges whose slot is npos already failed in out).
  void ReadRanges(const std::vector<std::string>& asked, const std::vector<size_t>& slot,
                  std::span<const RangeRead> ranges, std::vector<Result<uint64_t>>& out);
};

std::vector<Status> Store::Impl::Put(std::span<const std::string> keys, const std::vector<PutItem>& items,
                                     const PlaceOptions& place, bool upsert) {
  std::vector<Status> out(keys.size());
  if (keys.empty()) return out;
  if (place.replicas < 1 || place.replicas > kMaxReplicas) {  // before the encoder, which would say PROTOCOL
    return std::vector<Status>(
        keys.size(), Error(Code::kInvalidArgument, "{} replicas asked for: 1..{} are allowed", place.replicas, kMaxReplicas));
  }
  auto started = StartPut(keys, items, place, upsert);
  if (!started.ok()) return std::vector<Status>(keys.size(), started.status());
  // Every part into every replica, all in one batch; `owner[i]` is the key of request i. Puts
  // the master completed itself (inline) are done.
  std::vector<CopyRequest> copies;
  std::vector<size_t> owner;
  for (size_t k = 0; k < keys.size(); ++k) {
    out[k] = (*started)[k].status;
    if (!out[k].ok() || (*started)[k].exists) continue;
    for (const Replica& r : (*started)[k].replicas) {
      uint64_t offset = 0;
      for (const Span& part : items[k].parts) {
        if (part.size == 0) continue;
        copies.push_back({r.gva + offset, Addr(part.data), part.size});
        owner.push_back(k);
        offset += part.size;
      }
    }
  }
  const std::vector<Status> copied = pool->CopyBatch(copies);
  for (size_t i = 0; i < copied.size(); ++i) Fold(out[owner[i]], copied[i].ok() ? OkStatus() : copied[i].Annotate("writing the value"));
  std::vector<Finish> finish(keys.size(), Finish::kNone);
  for (size_t k = 0; k < keys.size(); ++k) {
    if (!(*started)[k].status.ok() || (*started)[k].exists) continue;
    if (!out[k].ok()) {
      finish[k] = Finish::kRevoke;
    } else {
      const bool on_disk = ssd && KeepOnDisk((*started)[k].id, keys[k], items[k]);
      finish[k] = on_disk ? Finish::kEndOnDisk : Finish::kEnd;
    }
  }
  EndPuts(keys, finish, out);
  return out;
}

Result<std::vector<KeyResult>> Store::Impl::StartPut(std::span<const std::string> keys,
                                                     const std::vector<PutItem>& items, const PlaceOptions& place,
                                                     bool upsert) {
  uint64_t total = 0;
  bool small = true;
  for (const PutItem& item : items) {
    small = small && item.size <= kMaxInlineValueBytes;
    total += item.size;
  }
  if (small && total <= kMaxInlineCallBytes && !ssd && inline_puts.load(std::memory_order_relaxed)) {
    std::vector<std::vector<Span>> values;
    values.reserve(items.size());
    for (const PutItem& item : items) values.push_back(item.parts);
    auto reply = bm::PoolAccess::Call(*pool, EncodePutInline(keys, values, place, upsert));
    if (reply.ok()) return DecodePutInlineResults(*reply, keys.size());
    // A master that does not know the op refused the whole call (nothing was placed); any other
    // failure is the put's.
    if (reply.status().code() != Code::kProtocol) return reply.status();
    if (inline_puts.exchange(false))
      WEFT_LOG_INFO("store: the master does not take inline puts ({}); puts take two calls", reply.status().ToString());
  }
  std::vector<uint64_t> sizes;
  for (const PutItem& item : items) sizes.push_back(item.size);
  return Call(EncodePutStart(keys, sizes, place, upsert), keys.size());
}

void Store::Impl::EndPuts(std::span<const std::string> keys, const std::vector<Finish>& finish,
                          std::vector<Status>& out) {
  // One call per kind at most: revoke (their memory goes back; out keeps the copy's error), end,
  // end with a copy on disk.
  for (Finish kind : {Finish::kRevoke, Finish::kEnd, Finish::kEndOnDisk}) {
    std::vector<std::string> group;
    std::vector<size_t> at;
    for (size_t k = 0; k < keys.size(); ++k) {
      if (finish[k] != kind) continue;
      group.push_back(keys[k]);
      at.push_back(k);
    }
    if (group.empty()) continue;
    if (kind == Finish::kRevoke) {
      (void)Call(EncodeKeysCall(StoreOp::kPutRevoke, group), group.size());
      continue;
    }
    const StoreOp op = kind == Finish::kEndOnDisk ? StoreOp::kPutEndOnDisk : StoreOp::kPutEnd;
    auto ended = Call(EncodeKeysCall(op, group), group.size());
    for (size_t i = 0; i < at.size(); ++i) out[at[i]] = ended.ok() ? (*ended)[i].status : ended.status();
  }
}

bool Store::Impl::KeepOnDisk(uint64_t id, const std::string& key, const PutItem& item) {
  Status s = ssd->Write(id, key, item.parts);
  if (!s.ok() && !ssd_failed_once.exchange(true))
    WEFT_LOG_WARN("store: the SSD tier in {} refused a value ({}); such objects are not kept on disk", ssd->dir(),
                  s.ToString());
  return s.ok();
}

Result<uint64_t> Store::Impl::ReadFromDisk(const std::string& key, const KeyResult& found, const Buffer& buffer) {
  if (!ssd || found.disk_rank != static_cast<int32_t>(pool->rank()))
    return Error(Code::kNotFound, "'{}' was evicted from memory; only its writer (rank {}) keeps it, on its disk", key,
                 found.disk_rank);
  WEFT_RETURN_IF_ERROR(ssd->Read(found.id, key, buffer.data, found.size));
  Promote(key, found.id, {buffer.data, found.size});
  return found.size;
}

void Store::Impl::Promote(const std::string& key, uint64_t id, const Buffer& value) {
  const std::string keys[] = {key};
  const uint64_t sizes[] = {value.size};
  auto started = Call(EncodePutStart(keys, sizes, {}, false, id), 1);
  if (!started.ok() || !(*started)[0].status.ok()) return;  // still on disk: served from there next time
  Status copied = pool->Copy((*started)[0].replicas[0].gva, Addr(value.data), value.size);
  const StoreOp op = copied.ok() ? StoreOp::kPutEnd : StoreOp::kPutRevoke;
  (void)Call(EncodeKeysCall(op, keys), 1);
}

std::vector<Result<uint64_t>> Store::Impl::Read(std::span<const std::string> keys, const Destination& destination) {
  std::vector<Result<uint64_t>> out(keys.size(), Error(Code::kInternal, "not read"));
  if (keys.empty()) return out;
  const auto leased_at = SteadyClock::now();  // before the master grants the leases
  auto found = Call(EncodeKeysCall(StoreOp::kGet, keys), keys.size());
  if (!found.ok()) return std::vector<Result<uint64_t>>(keys.size(), found.status());
  std::vector<PlannedRead> reads;
  std::vector<size_t> read_at;  // the key of each read
  for (size_t i = 0; i < keys.size(); ++i) {
    const KeyResult& r = (*found)[i];
    if (!r.status.ok()) {
      out[i] = r.status;
      continue;
    }
    auto b = destination(i, r.size);
    if (!b.ok()) {
      out[i] = b.status();
    } else if (b->size < r.size) {
      out[i] = Error(Code::kInvalidArgument, "'{}' holds {} bytes; the buffer has room for {} (nothing was written)",
                     keys[i], r.size, b->size);
    } else if (r.replicas.empty()) {
      out[i] = ReadFromDisk(keys[i], r, *b);
    } else {
      reads.push_back({Addr(b->data), 0, r.size, &r, &keys[i]});
      read_at.push_back(i);
    }
  }
  const std::vector<Status> done = RunReads(reads, leased_at);
  for (size_t c = 0; c < reads.size(); ++c) {
    out[read_at[c]] = done[c].ok() ? Result<uint64_t>(reads[c].len) : Result<uint64_t>(done[c]);
  }
  return out;
}

std::vector<Status> Store::Impl::RunReads(const std::vector<PlannedRead>& reads, SteadyClock::time_point leased_at) {
  std::vector<CopyRequest> copies;
  copies.reserve(reads.size());
  for (const PlannedRead& r : reads) copies.push_back({r.dst, ReadOrder(r.found->replicas)[0].gva + r.offset, r.len});
  std::vector<Status> copied = pool->CopyBatch(copies);
  for (size_t c = 0; c < copies.size(); ++c) {
    const PlannedRead& r = reads[c];
    if (!copied[c].ok()) {  // a replica that failed (its peer died): the others, one by one
      const std::vector<Replica> order = ReadOrder(r.found->replicas);
      for (size_t alt = 1; !copied[c].ok() && alt < order.size(); ++alt)
        copied[c] = pool->Copy(r.dst, order[alt].gva + r.offset, r.len);
    }
    const auto lease = std::chrono::milliseconds(r.found->lease_ms);
    if (!copied[c].ok()) {
      copied[c] = copied[c].Annotate("reading '" + *r.key + "'");
    } else if (SteadyClock::now() - leased_at >= lease) {
      copied[c] = Error(Code::kTimeout,
                        "reading '{}' took longer than its {} ms lease: the object may have been replaced meanwhile, "
                        "so the bytes are not trusted; read it again",
                        *r.key, lease.count());
    }
  }
  return copied;
}

std::vector<Result<ObjectDesc>> Store::Impl::Describe(std::span<const std::string> keys) {
  auto reply = bm::PoolAccess::Call(*pool, EncodeKeysCall(StoreOp::kDescribe, keys));
  Result<std::vector<KeyResult>> found =
      reply.ok() ? DecodeDescribeResults(*reply, keys.size()) : Result<std::vector<KeyResult>>(reply.status());
  std::vector<Result<ObjectDesc>> out;
  out.reserve(keys.size());
  for (size_t k = 0; k < keys.size(); ++k) {
    if (!found.ok() || !(*found)[k].status.ok()) {
      out.push_back(found.ok() ? (*found)[k].status : found.status());
      continue;
    }
    const KeyResult& r = (*found)[k];
    ObjectDesc desc{r.size, {}, r.disk_rank};
    for (const Replica& replica : r.replicas) desc.replicas.push_back({replica.rank, replica.gva});
    out.push_back(std::move(desc));
  }
  return out;
}

void Store::Impl::ReadRanges(const std::vector<std::string>& asked, const std::vector<size_t>& slot,
                             std::span<const RangeRead> ranges, std::vector<Result<uint64_t>>& out) {
  const auto leased_at = SteadyClock::now();  // before the master grants the leases
  auto found = Call(EncodeKeysCall(StoreOp::kGet, asked), asked.size());
  std::vector<PlannedRead> reads;
  std::vector<size_t> read_at;  // the range of each read
  for (size_t i = 0; i < ranges.size(); ++i) {
    if (slot[i] == SIZE_MAX) continue;
    const RangeRead& range = ranges[i];
    const std::string& key = asked[slot[i]];
    if (!found.ok() || !(*found)[slot[i]].status.ok()) {
      out[i] = found.ok() ? (*found)[slot[i]].status : found.status();
      continue;
    }
    const KeyResult& r = (*found)[slot[i]];
    if (range.offset > r.size || range.size > r.size - range.offset) {
      out[i] = Error(Code::kOutOfRange, "bytes {}..{} of '{}': the value holds {}", range.offset,
                     range.offset + range.size, key, r.size);
    } else if (r.replicas.empty()) {
      out[i] = Error(Code::kNotSupported,
                     "'{}' is on its writer's disk only: ranges are read from memory; get it whole (which brings it "
                     "back into memory)",
                     key);
    } else if (range.size == 0) {
      out[i] = uint64_t{0};
    } else {
      reads.push_back({Addr(range.dst), range.offset, range.size, &r, &key});
      read_at.push_back(i);
    }
  }
  const std::vector<Status> done = RunReads(reads, leased_at);
  for (size_t c = 0; c < reads.size(); ++c) {
    out[read_at[c]] = done[c].ok() ? Result<uint64_t>(reads[c].len) : Result<uint64_t>(done[c]);
  }
}

std::vector<Result<uint64_t>> Store::Impl::GetInto(std::span<const std::string> keys, std::span<const Buffer> buffers) {
  std::vector<Result<uint64_t>> out(keys.size(), Error(Code::kInternal, "not read"));
  // Unregistered destinations fail alone; the master is asked only for the others.
  std::vector<std::string> asked;
  std::vector<size_t> asked_at;
  for (size_t k = 0; k < keys.size(); ++k) {
    Status s = buffers[k].data ? CheckRegistered(Addr(buffers[k].data), buffers[k].size)
                               : Error(Code::kInvalidArgument, "a null buffer for '{}'", keys[k]);
    if (s.ok()) {
      asked.push_back(keys[k]);
      asked_at.push_back(k);
    } else {
      out[k] = s;
    }
  }
  auto read = Read(asked, [&](size_t i, uint64_t) -> Result<Buffer> { return buffers[asked_at[i]]; });
  for (size_t i = 0; i < asked.size(); ++i) out[asked_at[i]] = std::move(read[i]);
  return out;
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() { (void)Close(); }

Result<std::unique_ptr<Store>> Store::Open(const Config& config, bm::JoinMode mode) {
  auto impl = std::make_unique<Impl>();
  if (!config.store_ssd_path.empty()) {
    WEFT_ASSIGN_OR_RETURN(impl->ssd, SsdTier::Open(config.store_ssd_path, config.store_ssd_capacity));
  }
  WEFT_ASSIGN_OR_RETURN(impl->pool, bm::Pool::Join(config, mode));
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Status Store::Put(std::string_view key, std::span<const uint8_t> value, const PlaceOptions& place) {
  const Span part{value.data(), value.size()};
  return PutParts(key, {&part, 1}, place, false);
}

Status Store::Upsert(std::string_view key, std::span<const uint8_t> value, const PlaceOptions& place) {
  const Span part{value.data(), value.size()};
  return PutParts(key, {&part, 1}, place, true);
}

Status Store::PutParts(std::string_view key, std::span<const Span> parts, const PlaceOptions& place, bool upsert) {
  PutItem item{{parts.begin(), parts.end()}, 0};
  for (const Span& p : parts) {
    if (p.size && !p.data) return Error(Code::kInvalidArgument, "a null part of {} bytes for '{}'", p.size, key);
    item.size += p.size;
  }
  const std::string k(key);
  WEFT_RETURN_IF_ERROR(CheckKey(k));
  return impl_->Put({&k, 1}, {item}, place, upsert)[0];
}

std::vector<Status> Store::PutBatch(std::span<const std::string> keys, std::span<const Span> values,
                                    const PlaceOptions& place, bool upsert) {
  if (keys.size() != values.size())
    return std::vector<Status>(keys.size(), Error(Code::kInvalidArgument, "{} keys but {} values", keys.size(), values.size()));
  return ForValidKeys<Status>(keys, [&](const std::vector<size_t>& at) {
    std::vector<PutItem> items;
    for (size_t i : at) items.push_back({{values[i]}, values[i].size});
    return impl_->Put(Pick(keys, at), items, place, upsert);
  });
}

Status Store::PutFrom(std::string_view key, const void* buffer, uint64_t size, const PlaceOptions& place, bool upsert) {
  const std::string k(key);
  const Span span{buffer, size};
  return PutFromBatch({&k, 1}, {&span, 1}, place, upsert)[0];
}

std::vector<Status> Store::PutFromBatch(std::span<const std::string> keys, std::span<const Span> buffers,
                                        const PlaceOptions& place, bool upsert) {
  if (keys.size() != buffers.size())
    return std::vector<Status>(keys.size(), Error(Code::kInvalidArgument, "{} keys but {} buffers", keys.size(), buffers.size()));
  return ForValidKeys<Status>(keys, [&](const std::vector<size_t>& valid) {
    std::vector<Status> out(valid.size());
    std::vector<std::string> ok_keys;
    std::vector<PutItem> items;
    std::vector<size_t> at;
    for (size_t j = 0; j < valid.size(); ++j) {
      const Span& b = buffers[valid[j]];
      out[j] = impl_->CheckRegistered(Addr(b.data), b.size);
      if (!out[j].ok()) continue;
      ok_keys.push_back(keys[valid[j]]);
      items.push_back({{b}, b.size});
      at.push_back(j);
    }
    const std::vector<Status> put = impl_->Put(ok_keys, items, place, upsert);
    for (size_t i = 0; i < at.size(); ++i) out[at[i]] = put[i];
    return out;
  });
}

Result<std::vector<uint8_t>> Store::Get(std::string_view key) {
  std::vector<uint8_t> value;
  WEFT_RETURN_IF_ERROR(GetWith(key, [&](uint64_t size) {
                         value.resize(size);
                         return static_cast<void*>(value.data());
                       }).status());
  return value;
}

Result<uint64_t> Store::GetWith(std::string_view key, const std::function<void*(uint64_t size)>& destination) {
  const std::string k(key);
  return GetBatchWith({&k, 1}, [&](size_t, uint64_t size) { return destination(size); })[0];
}

std::vector<Result<uint64_t>> Store::GetBatchWith(std::span<const std::string> keys,
                                                  const std::function<void*(size_t index, uint64_t size)>& destination) {
  return ForValidKeys<Result<uint64_t>>(keys, [&](const std::vector<size_t>& at) {
    return impl_->Read(Pick(keys, at), [&](size_t i, uint64_t size) -> Result<Buffer> {
      void* p = destination(at[i], size);
      if (!p && size > 0) return Error(Code::kInvalidArgument, "no memory for the {} bytes of '{}'", size, keys[at[i]]);
      return Buffer{p, size};
    });
  });
}

Result<uint64_t> Store::GetInto(std::string_view key, void* buffer, uint64_t size) {
  const std::string k(key);
  const Buffer b{buffer, size};
  return GetIntoBatch({&k, 1}, {&b, 1})[0];
}

std::vector<Result<uint64_t>> Store::GetIntoBatch(std::span<const std::string> keys, std::span<const Buffer> buffers) {
  if (keys.size() != buffers.size())
    return std::vector<Result<uint64_t>>(keys.size(),
                                         Error(Code::kInvalidArgument, "{} keys but {} buffers", keys.size(), buffers.size()));
  return ForValidKeys<Result<uint64_t>>(keys, [&](const std::vector<size_t>& at) {
    return impl_->GetInto(Pick(keys, at), Pick(buffers, at));
  });
}

std::vector<Result<uint64_t>> Store::GetRanges(std::span<const std::string> keys, std::span<const RangeRead> ranges) {
  std::vector<Result<uint64_t>> out(ranges.size(), Error(Code::kInternal, "not read"));
  // What needs no master is checked here, so that a bad range fails alone; the master is asked
  // once for each distinct key that a good range reads.
  std::vector<std::string> asked;
  std::map<size_t, size_t> slot_of_key;  // index in keys -> index in asked
  std::vector<size_t> slot(ranges.size(), SIZE_MAX);
  for (size_t i = 0; i < ranges.size(); ++i) {
    const RangeRead& r = ranges[i];
    Status s = r.key < keys.size() ? CheckKey(keys[r.key])
                                   : Error(Code::kInvalidArgument, "range {} reads key {} of {}", i, r.key, keys.size());
    if (s.ok() && !r.dst) s = Error(Code::kInvalidArgument, "range {} has a null destination", i);
    if (s.ok() && r.size > 0) s = impl_->CheckRegistered(Addr(r.dst), r.size);
    if (!s.ok()) {
      out[i] = s;
      continue;
    }
    auto [it, added] = slot_of_key.emplace(r.key, asked.size());
    if (added) asked.push_back(keys[r.key]);
    slot[i] = it->second;
  }
  if (asked.size() > kMaxBatch) {
    return std::vector<Result<uint64_t>>(
        ranges.size(), Error(Code::kInvalidArgument, "{} distinct keys in one ranged read: at most {}", asked.size(), kMaxBatch));
  }
  if (!asked.empty()) impl_->ReadRanges(asked, slot, ranges, out);
  return out;
}

Result<ObjectDesc> Store::Describe(std::string_view key) {
  const std::string k(key);
  return DescribeBatch({&k, 1})[0];
}

std::vector<Result<ObjectDesc>> Store::DescribeBatch(std::span<const std::string> keys) {
  return ForValidKeys<Result<ObjectDesc>>(keys, [&](const std::vector<size_t>& at) { return impl_->Describe(Pick(keys, at)); });
}

Status Store::RegisterBuffer(void* buffer, uint64_t size) {
  if (!buffer || size == 0) return Error(Code::kInvalidArgument, "register a non-null buffer of at least one byte");
  const uint64_t start = Addr(buffer);
  std::lock_guard lock(impl_->mu);
  auto next = impl_->registered.lower_bound(start);
  const bool overlaps_next = next != impl_->registered.end() && next->first < start + size;
  const bool overlaps_prev = next != impl_->registered.begin() && std::prev(next)->first + std::prev(next)->second > start;
  if (overlaps_next || overlaps_prev)
    return Error(Code::kInvalidArgument, "buffer {:#x}+{} overlaps a registered buffer: unregister that first", start, size);
  impl_->registered.emplace(start, size);
  return OkStatus();
}

Status Store::UnregisterBuffer(void* buffer) {
  std::lock_guard lock(impl_->mu);
  if (impl_->registered.erase(Addr(buffer)) == 0)
    return Error(Code::kNotRegistered, "no registered buffer starts at {:#x}", Addr(buffer));
  return OkStatus();
}

Result<bool> Store::Exists(std::string_view key) {
  const std::string k(key);
  auto r = ExistsBatch({&k, 1})[0];
  return r;
}

std::vector<Result<bool>> Store::ExistsBatch(std::span<const std::string> keys) {
  return ForValidKeys<Result<bool>>(keys, [&](const std::vector<size_t>& at) {
    const std::vector<std::string> asked = Pick(keys, at);
    auto found = impl_->Call(EncodeKeysCall(StoreOp::kExists, asked), asked.size());
    std::vector<Result<bool>> out;
    for (size_t k = 0; k < asked.size(); ++k) {
      if (!found.ok()) {
        out.push_back(found.status());
      } else if (!(*found)[k].status.ok()) {
        out.push_back((*found)[k].status);
      } else {
        out.push_back((*found)[k].exists);
      }
    }
    return out;
  });
}

Result<uint64_t> Store::Size(std::string_view key) {
  const std::string k(key);
  WEFT_RETURN_IF_ERROR(CheckKey(k));
  WEFT_ASSIGN_OR_RETURN(auto found, impl_->Call(EncodeKeysCall(StoreOp::kGet, {&k, 1}), 1));
  if (!found[0].status.ok()) return found[0].status;
  return found[0].size;
}

Status Store::Remove(std::string_view key, bool force) {
  const std::string k(key);
  return RemoveBatch({&k, 1}, force)[0];
}

std::vector<Status> Store::RemoveBatch(std::span<const std::string> keys, bool force) {
  return ForValidKeys<Status>(keys, [&](const std::vector<size_t>& at) {
    const std::vector<std::string> asked = Pick(keys, at);
    auto removed = impl_->Call(EncodeKeysCall(StoreOp::kRemove, asked, force), asked.size());
    std::vector<Status> out;
    for (size_t k = 0; k < asked.size(); ++k) out.push_back(removed.ok() ? (*removed)[k].status : removed.status());
    return out;
  });
}

Result<uint64_t> Store::RemoveByRegex(std::string_view pattern, bool force) {
  if (pattern.size() > kMaxKeyBytes)
    return Error(Code::kInvalidArgument, "a pattern of {} bytes: at most {}", pattern.size(), kMaxKeyBytes);
  WEFT_ASSIGN_OR_RETURN(auto reply, bm::PoolAccess::Call(*impl_->pool, EncodeRemoveRegex(pattern, force)));
  return DecodeCount(reply);
}

Result<uint64_t> Store::RemoveAll(bool force) {
  WEFT_ASSIGN_OR_RETURN(auto reply, bm::PoolAccess::Call(*impl_->pool, EncodeRemoveAll(force)));
  return DecodeCount(reply);
}

Status Store::Health() {
  auto reply = bm::PoolAccess::Call(*impl_->pool, EncodePingCall());
  if (!reply.ok()) return reply.status().Annotate("the store's master does not answer");
  return DecodeCount(*reply).status();
}

Result<StoreStats> Store::Stats() {
  WEFT_ASSIGN_OR_RETURN(auto reply, bm::PoolAccess::Call(*impl_->pool, EncodeStatsCall()));
  return DecodeStats(reply);
}

Status Store::Close() { return impl_->pool->Leave(); }

bm::Pool& Store::pool() { return *impl_->pool; }

}  // namespace weft::store
