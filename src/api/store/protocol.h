// The store's service calls: what a client sends the master through the pool's coordinator
// (CoordinatorClient::Call) and what comes back. Every call is a batch of keys (a single-key
// call is a batch of one), answered with one result per key in order.
//
// Layout (wire/codec.h, little-endian): u8 kStoreService, u8 version, u8 op, then the op's body.
// The first byte tells a store call from an allocator call (whose first byte is its version, 1)
// on the one service handler of the coordinator. Decoders refuse anything malformed, truncated,
// over the limits of api/store/types.h or with trailing bytes with PROTOCOL.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/store/master.h"
#include "api/store/types.h"
#include "base/metrics.h"
#include "base/result.h"

namespace weft::store {

inline constexpr uint8_t kStoreService = 0x53;  // 'S'

enum class StoreOp : uint8_t {
  kPutStart = 1,     // keys, sizes, place, upsert   -> KeyResult{status, replicas}
  kPutEnd = 2,       // keys                         -> KeyResult{status}
  kPutRevoke = 3,    // keys                         -> KeyResult{status}
  kGet = 4,          // keys                         -> KeyResult{status, size, replicas, lease_ms}
  kExists = 5,       // keys                         -> KeyResult{status, exists}
  kRemove = 6,       // keys, force                  -> KeyResult{status}
  kRemoveRegex = 7,  // pattern, force               -> count
  kRemoveAll = 8,    // force                        -> count
  kStats = 9,        //                              -> MasterStats
  kPutEndOnDisk = 10,  // keys: ended, and the writer also holds a copy on its disk (SSD tier)
  kPing = 11,          //                            -> count 0 (the master answers; no work)
  kDescribe = 12,      // keys -> KeyResult{status, size, replicas, id, disk_rank}: no lease, not an access
  // keys, values (the bytes), place, upsert -> KeyResult{status, replicas, id, exists}: the master
  // places each value as kPutStart does and writes it itself; `exists` true: written and ended
  // (visible; nothing left to do); false with an OK status: placed and pending, the writer copies
  // and ends it as after kPutStart. Values of at most kMaxInlineValueBytes, kMaxInlineCallBytes
  // in all. A master older than op 13 answers it with PROTOCOL.
  kPutInline = 13,
};

struct StoreRequest {
  StoreOp op = StoreOp::kGet;
  std::vector<std::string> keys;   // the per-key ops (1..kMaxBatch keys of 1..kMaxKeyBytes bytes)
  std::vector<uint64_t> sizes;     // kPutStart: one per key
  std::vector<std::vector<uint8_t>> values;  // kPutInline: one per key
  PlaceOptions place;              // kPutStart, kPutInline
  bool upsert = false;             // kPutStart, kPutInline
  uint64_t promote_id = 0;         // kPutStart: bring the on-disk object of this id back into memory
  bool force = false;              // kRemove, kRemoveRegex, kRemoveAll
  std::string pattern;             // kRemoveRegex (at most kMaxKeyBytes)
};

// The answer for one key.
struct KeyResult {
  Status status;                   // its code and message travel
  uint64_t size = 0;               // kGet
  std::vector<Replica> replicas;   // kPutStart, kGet (at most kMaxReplicas)
  uint32_t lease_ms = 0;           // kGet
  bool exists = false;             // kExists; kPutInline: the master wrote and ended the put
  uint64_t id = 0;                 // kPutStart, kGet, kDescribe: the object's id (names its SSD file)
  int32_t disk_rank = -1;          // kGet, kDescribe: the peer whose disk holds a copy; -1: none
};

bool IsStoreCall(std::span<const uint8_t> request);

std::vector<uint8_t> EncodePutStart(std::span<const std::string> keys, std::span<const uint64_t> sizes,
                                    const PlaceOptions& place, bool upsert, uint64_t promote_id = 0);
// values[k]: the parts of key k's value, laid end to end in the request (each value at most
// kMaxInlineValueBytes, kMaxInlineCallBytes in all: the caller checks).
std::vector<uint8_t> EncodePutInline(std::span<const std::string> keys, std::span<const std::vector<Span>> values,
                                     const PlaceOptions& place, bool upsert);
// kPutEnd, kPutEndOnDisk, kPutRevoke, kGet, kExists, kRemove, kDescribe (force only for kRemove).
std::vector<uint8_t> EncodeKeysCall(StoreOp op, std::span<const std::string> keys, bool force = false);
std::vector<uint8_t> EncodeRemoveRegex(std::string_view pattern, bool force);
std::vector<uint8_t> EncodeRemoveAll(bool force);
std::vector<uint8_t> EncodeStatsCall();
std::vector<uint8_t> EncodePingCall();
Result<StoreRequest> DecodeStoreRequest(std::span<const uint8_t> bytes);
// The encoding of a request, by its op (the inverse of DecodeStoreRequest).
std::vector<uint8_t> EncodeStoreRequest(const StoreRequest& req);

std::vector<uint8_t> EncodeKeyResults(std::span<const KeyResult> results);
// PROTOCOL also when the reply holds another number of results than `expected`.
Result<std::vector<KeyResult>> DecodeKeyResults(std::span<const uint8_t> bytes, size_t expected);
// The reply to kDescribe: key results that also say nothing a describe cannot mean (PROTOCOL
// otherwise): no lease and no `exists`; a found object lives somewhere (a replica, or a disk);
// a failed one names no place, size or id.
Result<std::vector<KeyResult>> DecodeDescribeResults(std::span<const uint8_t> bytes, size_t expected);
// The reply to kPutInline: key results that also say nothing an inline put cannot mean
// (PROTOCOL otherwise): no lease, size or disk; a placed value (OK) has 1..kMaxReplicas replicas;
// a failed one names no replica, id or completion.
Result<std::vector<KeyResult>> DecodePutInlineResults(std::span<const uint8_t> bytes, size_t expected);
std::vector<uint8_t> EncodeCount(uint64_t count);
Result<uint64_t> DecodeCount(std::span<const uint8_t> bytes);
std::vector<uint8_t> EncodeStats(const MasterStats& stats);
// Also the shorter reply of a master older than inline puts (their counters are then 0).
Result<MasterStats> DecodeStats(std::span<const uint8_t> bytes);

// The coordinator's handler for store calls: decodes, applies to the master (on behalf of the
// peer of `from_rank`), encodes the reply. A malformed request is PROTOCOL (the call fails);
// per-key failures travel inside the reply. metrics (optional): counts the keys of each op and
// their failures by code (weft_store_keys_total, weft_store_key_errors_total; docs/ops.md).
// write (optional): how the master writes inline puts' values into replicas (the hosting peer's
// mapped slices); without it every inline put is left to its writer to copy and end.
Result<std::vector<uint8_t>> ServeStore(Master& master, uint32_t from_rank, std::span<const uint8_t> request,
                                        MetricsRegistry* metrics = nullptr, const ReplicaWriter& write = {});

}  // namespace weft::store
