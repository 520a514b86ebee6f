// The store's service-call codec (protocol.h). ServeStore lives in service.cc.
//
// Calls carry the header u8 kStoreService, u8 version, u8 op. Replies carry no header: the
// caller knows which call it made, and the call's version fixes the reply's layout.
//
// Every value has exactly one encoding (bools 0/1, no optional fields, lengths exact), so that
// decode(encode(x)) == x and encode(decode(b)) == b; the fuzz targets check the second.
#include "api/store/protocol.h"

#include "base/status.h"
#include "wire/codec.h"

namespace weft::store {
namespace {

constexpr uint8_t kVersion = 1;
// Error text in a reply; longer messages are cut by the encoder so a reply always decodes.
constexpr size_t kMaxMessageBytes = 4096;
// The smallest encodings, for Reader::Count to bound a count by the bytes left before any
// allocation: a key is a u32 length and at least one byte; a replica a u32 and a u64; a
// result a code, an empty message, size, replica count, lease and exists.
constexpr size_t kMinKeyBytes = 4 + 1;
constexpr size_t kReplicaBytes = 4 + 8;
constexpr size_t kMinResultBytes = 4 + 4 + 8 + 4 + 4 + 1 + 8 + 4;

wire::Writer Start(StoreOp op) {
  wire::Writer w;
  w.U8(kStoreService);
  w.U8(kVersion);
  w.U8(static_cast<uint8_t>(op));
  return w;
}

void WriteKeys(wire::Writer& w, std::span<const std::string> keys) {
  w.U32(static_cast<uint32_t>(keys.size()));
  for (const auto& key : keys) w.String(key);
}

Status ReadKeys(wire::Reader& r, std::vector<std::string>& keys) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kMinKeyBytes, kMaxBatch));
  if (n == 0) return Error(Code::kProtocol, "a store call with no keys");
  keys.resize(n);
  for (auto& key : keys) {
    WEFT_RETURN_IF_ERROR(r.String(key, kMaxKeyBytes));
    if (key.empty()) return Error(Code::kProtocol, "an empty key");
  }
  return OkStatus();
}

void WritePlace(wire::Writer& w, const PlaceOptions& place) {
  w.U32(place.replicas);
  w.Bool(place.soft_pin);
  w.Bool(place.hard_pin);
  w.I32(place.preferred_rank);
}

Status ReadPlace(wire::Reader& r, PlaceOptions& place) {
  WEFT_RETURN_IF_ERROR(r.U32(place.replicas));
  if (place.replicas < 1 || place.replicas > kMaxReplicas) {
    return Error(Code::kProtocol, "{} replicas (1..{})", place.replicas, kMaxReplicas);
  }
  WEFT_RETURN_IF_ERROR(r.Bool(place.soft_pin));
  WEFT_RETURN_IF_ERROR(r.Bool(place.hard_pin));
  return r.I32(place.preferred_rank);
}

Status ReadPutStart(wire::Reader& r, StoreRequest& req) {
  WEFT_RETURN_IF_ERROR(ReadKeys(r, req.keys));
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, sizeof(uint64_t), kMaxBatch));
  if (n != req.keys.size()) return Error(Code::kProtocol, "{} sizes for {} keys", n, req.keys.size());
  req.sizes.resize(n);
  for (auto& size : req.sizes) WEFT_RETURN_IF_ERROR(r.U64(size));
  WEFT_RETURN_IF_ERROR(ReadPlace(r, req.place));
  WEFT_RETURN_IF_ERROR(r.Bool(req.upsert));
  return r.U64(req.promote_id);
}

// kPutInline: keys, one value per key (u32 length and the bytes), place, upsert. A value of 0
// bytes decodes (the master answers it INVALID_ARGUMENT, as it does an empty PutStart).
Status ReadPutInline(wire::Reader& r, StoreRequest& req) {
  WEFT_RETURN_IF_ERROR(ReadKeys(r, req.keys));
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, sizeof(uint32_t), kMaxBatch));
  if (n != req.keys.size()) return Error(Code::kProtocol, "{} values for {} keys", n, req.keys.size());
  req.values.resize(n);
  uint64_t total = 0;
  for (auto& value : req.values) {
    WEFT_RETURN_IF_ERROR(r.Bytes(value, kMaxInlineValueBytes));
    total += value.size();
    if (total > kMaxInlineCallBytes)
      return Error(Code::kProtocol, "inline values of more than {} bytes in one call", kMaxInlineCallBytes);
  }
  WEFT_RETURN_IF_ERROR(ReadPlace(r, req.place));
  return r.Bool(req.upsert);
}

// The body of `op`, after the header.
Status ReadBody(wire::Reader& r, StoreOp op, StoreRequest& req) {
  switch (op) {
    case StoreOp::kPutStart:
      return ReadPutStart(r, req);
    case StoreOp::kPutInline:
      return ReadPutInline(r, req);
    case StoreOp::kPutEnd:
    case StoreOp::kPutEndOnDisk:
    case StoreOp::kPutRevoke:
    case StoreOp::kGet:
    case StoreOp::kExists:
    case StoreOp::kDescribe:
      return ReadKeys(r, req.keys);
    case StoreOp::kRemove:
      WEFT_RETURN_IF_ERROR(ReadKeys(r, req.keys));
      return r.Bool(req.force);
    case StoreOp::kRemoveRegex:
      WEFT_RETURN_IF_ERROR(r.String(req.pattern, kMaxKeyBytes));
      return r.Bool(req.force);
    case StoreOp::kRemoveAll:
      return r.Bool(req.force);
    case StoreOp::kStats:
    case StoreOp::kPing:
      return OkStatus();
  }
  return Error(Code::kProtocol, "unknown store operation {}", static_cast<unsigned>(op));
}

void WriteStatus(wire::Writer& w, const Status& status) {
  w.U32(static_cast<uint32_t>(status.code()));
  const std::string& message = status.message();
  w.String(std::string_view(message).substr(0, kMaxMessageBytes));
}

Status ReadStatus(wire::Reader& r, Status& status) {
  uint32_t code = 0;
  WEFT_RETURN_IF_ERROR(r.U32(code));
  if (code > static_cast<uint32_t>(kLastCode)) return Error(Code::kProtocol, "unknown status code {}", code);
  std::string message;
  WEFT_RETURN_IF_ERROR(r.String(message, kMaxMessageBytes));
  status = Status(static_cast<Code>(code), std::move(message));
  return OkStatus();
}

void WriteResult(wire::Writer& w, const KeyResult& result) {
  WriteStatus(w, result.status);
  w.U64(result.size);
  w.U32(static_cast<uint32_t>(result.replicas.size()));
  for (const auto& replica : result.replicas) {
    w.U32(replica.rank);
    w.U64(replica.gva);
  }
  w.U32(result.lease_ms);
  w.Bool(result.exists);
  w.U64(result.id);
  w.I32(result.disk_rank);
}

Status ReadResult(wire::Reader& r, KeyResult& result) {
  WEFT_RETURN_IF_ERROR(ReadStatus(r, result.status));
  WEFT_RETURN_IF_ERROR(r.U64(result.size));
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kReplicaBytes, kMaxReplicas));
  result.replicas.resize(n);
  for (auto& replica : result.replicas) {
    WEFT_RETURN_IF_ERROR(r.U32(replica.rank));
    WEFT_RETURN_IF_ERROR(r.U64(replica.gva));
  }
  WEFT_RETURN_IF_ERROR(r.U32(result.lease_ms));
  WEFT_RETURN_IF_ERROR(r.Bool(result.exists));
  WEFT_RETURN_IF_ERROR(r.U64(result.id));
  WEFT_RETURN_IF_ERROR(r.I32(result.disk_rank));
  if (result.disk_rank < -1) return Error(Code::kProtocol, "disk rank {}", result.disk_rank);
  return OkStatus();
}

// What a describe result may say: the master grants no lease and answers no `exists`; an
// object it found is in memory or on a disk; a key it did not find has no size, place or id.
Status CheckDescribed(const KeyResult& r) {
  if (r.lease_ms != 0 || r.exists) return Error(Code::kProtocol, "a lease or an exists flag in a describe result");
  if (r.status.ok()) {
    if (r.replicas.empty() && r.disk_rank < 0) return Error(Code::kProtocol, "a found object with no replica and no disk");
    return OkStatus();
  }
  if (r.size != 0 || !r.replicas.empty() || r.id != 0 || r.disk_rank != -1)
    return Error(Code::kProtocol, "a failed describe result with a size, replicas, an id or a disk");
  return OkStatus();
}

// What an inline put's result may say: no lease, size, exists-as-found or disk; placed (OK) on
// 1..kMaxReplicas replicas; failed with no replica, id or completion.
Status CheckInlinePut(const KeyResult& r) {
  if (r.lease_ms != 0 || r.size != 0 || r.disk_rank != -1)
    return Error(Code::kProtocol, "a lease, a size or a disk in an inline put's result");
  if (r.status.ok()) {
    if (r.replicas.empty()) return Error(Code::kProtocol, "an inline put placed on no replica");
    return OkStatus();
  }
  if (!r.replicas.empty() || r.id != 0 || r.exists)
    return Error(Code::kProtocol, "a failed inline put with replicas, an id or a completion");
  return OkStatus();
}

// MasterStats field by field, in declaration order, for both directions. The fields after
// kStatsV1Fields came with inline puts; a master older than them sends only the first ones.
constexpr size_t kStatsV1Fields = 8;
template <typename Stats, typename F>
void ForEachStat(Stats& s, F&& f) {
  for (auto* field : {&s.objects, &s.pending_puts, &s.bytes, &s.capacity, &s.used, &s.evicted, &s.parked_bytes,
                      &s.on_disk, &s.inline_puts, &s.inline_deferred}) {
    f(*field);
  }
}

}  // namespace

bool IsStoreCall(std::span<const uint8_t> request) { return !request.empty() && request[0] == kStoreService; }

std::vector<uint8_t> EncodePutStart(std::span<const std::string> keys, std::span<const uint64_t> sizes,
                                    const PlaceOptions& place, bool upsert, uint64_t promote_id) {
  auto w = Start(StoreOp::kPutStart);
  WriteKeys(w, keys);
  w.U32(static_cast<uint32_t>(sizes.size()));
  for (uint64_t size : sizes) w.U64(size);
  WritePlace(w, place);
  w.Bool(upsert);
  w.U64(promote_id);
  return w.Take();
}

std::vector<uint8_t> EncodePutInline(std::span<const std::string> keys, std::span<const std::vector<Span>> values,
                                     const PlaceOptions& place, bool upsert) {
  auto w = Start(StoreOp::kPutInline);
  WriteKeys(w, keys);
  w.U32(static_cast<uint32_t>(values.size()));
  for (const std::vector<Span>& parts : values) {
    uint64_t size = 0;
    for (const Span& part : parts) size += part.size;
    w.U32(static_cast<uint32_t>(size));
    for (const Span& part : parts) {
      if (part.size > 0) w.Raw({static_cast<const uint8_t*>(part.data), part.size});
    }
  }
  WritePlace(w, place);
  w.Bool(upsert);
  return w.Take();
}

std::vector<uint8_t> EncodeKeysCall(StoreOp op, std::span<const std::string> keys, bool force) {
  auto w = Start(op);
  WriteKeys(w, keys);
  // Only kRemove carries force; the other key calls have nothing to force.
  if (op == StoreOp::kRemove) w.Bool(force);
  return w.Take();
}

std::vector<uint8_t> EncodeRemoveRegex(std::string_view pattern, bool force) {
  auto w = Start(StoreOp::kRemoveRegex);
  w.String(pattern);
  w.Bool(force);
  return w.Take();
}

std::vector<uint8_t> EncodeRemoveAll(bool force) {
  auto w = Start(StoreOp::kRemoveAll);
  w.Bool(force);
  return w.Take();
}

std::vector<uint8_t> EncodeStatsCall() { return Start(StoreOp::kStats).Take(); }
std::vector<uint8_t> EncodePingCall() { return Start(StoreOp::kPing).Take(); }

std::vector<uint8_t> EncodeStoreRequest(const StoreRequest& req) {
  switch (req.op) {
    case StoreOp::kPutStart:
      return EncodePutStart(req.keys, req.sizes, req.place, req.upsert, req.promote_id);
    case StoreOp::kPutInline: {
      std::vector<std::vector<Span>> values;
      values.reserve(req.values.size());
      for (const auto& v : req.values) values.push_back({Span{v.data(), v.size()}});
      return EncodePutInline(req.keys, values, req.place, req.upsert);
    }
    case StoreOp::kRemoveRegex:
      return EncodeRemoveRegex(req.pattern, req.force);
    case StoreOp::kRemoveAll:
      return EncodeRemoveAll(req.force);
    case StoreOp::kStats:
      return EncodeStatsCall();
    case StoreOp::kPing:
      return EncodePingCall();
    default:
      return EncodeKeysCall(req.op, req.keys, req.force);
  }
}


Result<StoreRequest> DecodeStoreRequest(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  uint8_t service = 0, version = 0, op = 0;
  WEFT_RETURN_IF_ERROR(r.U8(service));
  if (service != kStoreService) return Error(Code::kProtocol, "not a store call (first byte {})", service);
  WEFT_RETURN_IF_ERROR(r.U8(version));
  if (version != kVersion) {
    return Error(Code::kProtocol, "store call version {} (this peer speaks {})", version, kVersion);
  }
  WEFT_RETURN_IF_ERROR(r.U8(op));
  StoreRequest req;
  req.op = static_cast<StoreOp>(op);
  WEFT_RETURN_IF_ERROR(ReadBody(r, req.op, req));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return req;
}

std::vector<uint8_t> EncodeKeyResults(std::span<const KeyResult> results) {
  wire::Writer w;
  w.U32(static_cast<uint32_t>(results.size()));
  for (const auto& result : results) WriteResult(w, result);
  return w.Take();
}

Result<std::vector<KeyResult>> DecodeKeyResults(std::span<const uint8_t> bytes, size_t expected) {
  wire::Reader r(bytes);
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kMinResultBytes, kMaxBatch));
  if (n != expected) return Error(Code::kProtocol, "{} results for {} keys", n, expected);
  std::vector<KeyResult> results(n);
  for (auto& result : results) WEFT_RETURN_IF_ERROR(ReadResult(r, result));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return results;
}

namespace {

// Key results whose every entry must also pass `check` (what an op's reply may hold); PROTOCOL
// naming the entry and `what` otherwise.
Result<std::vector<KeyResult>> DecodeCheckedResults(std::span<const uint8_t> bytes, size_t expected,
                                                    Status (*check)(const KeyResult&), const char* what) {
  WEFT_ASSIGN_OR_RETURN(std::vector<KeyResult> results, DecodeKeyResults(bytes, expected));
  for (size_t i = 0; i < results.size(); ++i) {
    Status s = check(results[i]);
    if (!s.ok()) return Error(Code::kProtocol, "{} result {}: {}", what, i, s.message());
  }
  return results;
}

}  // namespace

Result<std::vector<KeyResult>> DecodeDescribeResults(std::span<const uint8_t> bytes, size_t expected) {
  return DecodeCheckedResults(bytes, expected, CheckDescribed, "describe");
}

Result<std::vector<KeyResult>> DecodePutInlineResults(std::span<const uint8_t> bytes, size_t expected) {
  return DecodeCheckedResults(bytes, expected, CheckInlinePut, "inline put");
}

std::vector<uint8_t> EncodeCount(uint64_t count) {
  wire::Writer w;
  w.U64(count);
  return w.Take();
}

Result<uint64_t> DecodeCount(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  uint64_t count = 0;
  WEFT_RETURN_IF_ERROR(r.U64(count));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return count;
}

std::vector<uint8_t> EncodeStats(const MasterStats& stats) {
  wire::Writer w;
  ForEachStat(stats, [&](uint64_t v) { w.U64(v); });
  return w.Take();
}

Result<MasterStats> DecodeStats(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  MasterStats stats;
  Status status;
  const bool v1 = bytes.size() == kStatsV1Fields * sizeof(uint64_t);  // an older master's reply
  size_t field = 0;
  ForEachStat(stats, [&](uint64_t& v) {
    if (status.ok() && !(v1 && field >= kStatsV1Fields)) status = r.U64(v);
    ++field;
  });
  WEFT_RETURN_IF_ERROR(status);
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  return stats;
}

}  // namespace weft::store
