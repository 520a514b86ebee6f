// One object's durable state as the store master journals it, and the observer the master tells
// of every change of that state (HA: a new leader rebuilds its master from the records,
// Master::Restore). What is durable: which objects exist (complete, or a put pending), their
// size, id, replicas, disk copy and pins. What is not: leases, LRU order, parked memory of
// removed objects, pending promotions (docs/store.md).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/store/types.h"
#include "base/result.h"

namespace weft::store {

struct ObjectRecord {
  std::string key;
  bool complete = true;        // false: a put started (PutStart) and not yet ended
  uint32_t writer = 0;         // the rank that started it (pending puts: who may end or revoke)
  uint64_t size = 0;
  uint64_t id = 0;
  int32_t disk_rank = -1;      // the writer keeping a copy on its disk; -1: none
  std::vector<Replica> replicas;  // empty only for a complete object kept on disk only
  bool hard_pin = false;
  // Soft-pinned when the put started. The pin's deadline is a steady-clock time of the old
  // leader, meaningless to a new one: a restored soft pin runs a fresh soft_pin_ttl.
  bool soft_pin = false;

  bool operator==(const ObjectRecord&) const = default;
};

// Layout (wire/codec.h, little-endian): u8 version, key (u32 length + bytes), bool complete,
// u32 writer, u64 size, u64 id, i32 disk_rank, u32 replica count, per replica u32 rank + u64 gva,
// bool hard_pin, bool soft_pin. One encoding per record, so encode(decode(b)) == b.
std::vector<uint8_t> EncodeObjectRecord(const ObjectRecord& r);
// PROTOCOL for anything malformed, truncated, with trailing bytes, over limits (key length per
// CheckKey, replicas <= kMaxReplicas), or describing no object the master could hold (size 0,
// disk_rank below -1, a pending put without replicas, a complete object neither in memory nor
// on a disk).
Result<ObjectRecord> DecodeObjectRecord(std::span<const uint8_t> bytes);

// Told of every change of durable state, under the master's lock, in order: keep it short,
// never call the master from it. Either function may be empty.
struct MasterObserver {
  std::function<void(const ObjectRecord& record)> on_record;          // created or changed (pending or complete)
  std::function<void(std::string_view key, bool complete)> on_erased;  // the complete object, or the pending put, of key is gone
};

}  // namespace weft::store
