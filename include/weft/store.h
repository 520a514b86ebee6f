// The KV-cache store: objects (a key and its bytes) kept in the pool's memory, written once by
// one peer and read by any, with leases, replicas and eviction. The pool's coordinator hosts
// the master (the first peer of the pool, `weft meta` or `weft store-master`); every store is
// also a peer of the pool and contributes its `rank_size` of memory to it. docs/store.md.
//
// Public: includes only other headers of include/weft.
//
//   auto store = weft::store::Store::Open(config).value();
//   store->Put("layer0/block7", bytes);               // ALREADY_EXISTS if the key is taken
//   std::vector<uint8_t> value = store->Get("layer0/block7").value();
//   store->RegisterBuffer(buf, len);                  // once, for the zero-copy calls
//   uint64_t n = store->GetInto("layer0/block7", buf, len).value();
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <weft/config.h>
#include <weft/deadline.h>
#include <weft/pool.h>
#include <weft/status.h>

namespace weft::store {

// How a put wants its object placed (Mooncake's ReplicateConfig, the fields weft acts on).
struct PlaceOptions {
  uint32_t replicas = 1;         // copies on distinct peers, best effort (1..8)
  bool soft_pin = false;         // evicted only after every unpinned object (until soft_pin_ttl)
  bool hard_pin = false;         // never evicted; removed only by Remove
  int32_t preferred_rank = -1;   // the first replica's peer; -1: the writer's own slice first
};

// One value of a batch or a multi-part put: bytes at a local address.
struct Span {
  const void* data = nullptr;
  uint64_t size = 0;
};
// A destination of a zero-copy get: a registered local buffer.
struct Buffer {
  void* data = nullptr;
  uint64_t size = 0;
};

// Where one copy of an object is in memory: `size` bytes (the whole value, contiguous) at `gva`,
// in the slice of peer `rank`. A pool address: Pool::Copy reads it (while the object lives).
struct ReplicaDesc {
  uint32_t rank = 0;
  uint64_t gva = 0;
};
// Where an object is (Mooncake's replica descriptors): its memory copies and its disk copy.
struct ObjectDesc {
  uint64_t size = 0;
  std::vector<ReplicaDesc> replicas;  // in memory; empty when evicted to its writer's disk only
  int32_t disk_rank = -1;             // the writer keeping a copy in its SSD tier; -1: none
};

// One piece of a ranged read (GetRanges): `size` bytes from `offset` in the value of keys[key],
// copied to `dst`, which lies inside a registered buffer.
struct RangeRead {
  size_t key = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  void* dst = nullptr;
};

// What the store's master holds now.
struct StoreStats {
  uint64_t objects = 0;          // complete objects in memory
  uint64_t pending_puts = 0;     // started, not yet ended
  uint64_t bytes = 0;            // bytes of the objects in memory, each replica counted
  uint64_t capacity = 0;         // host bytes of every slice of the pool
  uint64_t used = 0;             // of which allocated (the store's and anyone else's)
  uint64_t evicted = 0;          // objects evicted from memory since the master started
  uint64_t parked_bytes = 0;     // memory of removed objects still leased to readers
  uint64_t on_disk = 0;          // evicted objects whose writer keeps them in its SSD tier
  uint64_t inline_puts = 0;      // small puts the master wrote and ended itself (one round trip)
  uint64_t inline_deferred = 0;  // small puts it placed but left to their writer to copy and end
};

class Store {
 public:
  // Joins the pool of `config` (hosting its coordinator and the master when none answers, as
  // Pool::Join(kAuto) does) and its store.
  static Result<std::unique_ptr<Store>> Open(const Config& config, bm::JoinMode mode = bm::JoinMode::kAuto);
  ~Store();  // closes
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Writes `value` under `key` unless the key exists: ALREADY_EXISTS then, and the stored value
  // stays. INVALID_ARGUMENT: empty key, key over 4096 bytes, empty value, a value larger than
  // any slice. POOL_FULL: no room even after evicting every object that may go.
  Status Put(std::string_view key, std::span<const uint8_t> value, const PlaceOptions& place = {});
  // The same, overwriting an existing value (readers holding a lease keep reading the old one).
  Status Upsert(std::string_view key, std::span<const uint8_t> value, const PlaceOptions& place = {});
  // One object from parts laid end to end.
  Status PutParts(std::string_view key, std::span<const Span> parts, const PlaceOptions& place = {},
                  bool upsert = false);
  // One result per key; the master is asked once for the batch, the bytes move in one batch.
  std::vector<Status> PutBatch(std::span<const std::string> keys, std::span<const Span> values,
                               const PlaceOptions& place = {}, bool upsert = false);

  // A copy of the value. NOT_FOUND when missing (or a put of it has not ended).
  Result<std::vector<uint8_t>> Get(std::string_view key);
  // Reads the value into memory that `destination(size)` hands out once its size is known (one
  // master call; for callers that make their own result object, such as Python's bytes); returns
  // the size. destination returning null fails the read with INVALID_ARGUMENT.
  Result<uint64_t> GetWith(std::string_view key, const std::function<void*(uint64_t size)>& destination);
  // The same for many keys (one master call, one batch of copies): destination(i, size) for key i.
  std::vector<Result<uint64_t>> GetBatchWith(std::span<const std::string> keys,
                                             const std::function<void*(size_t index, uint64_t size)>& destination);
  // Copies the value into a registered buffer (one copy, no staging); returns its size.
  // NOT_REGISTERED for a buffer no RegisterBuffer covers; INVALID_ARGUMENT when the buffer is
  // smaller than the value (nothing is written); TIMEOUT when the copy outlived the read lease
  // (the bytes may be torn: read again).
  Result<uint64_t> GetInto(std::string_view key, void* buffer, uint64_t size);
  std::vector<Result<uint64_t>> GetIntoBatch(std::span<const std::string> keys, std::span<const Buffer> buffers);
  // Zero-copy put from a registered buffer.
  Status PutFrom(std::string_view key, const void* buffer, uint64_t size, const PlaceOptions& place = {},
                 bool upsert = false);
  std::vector<Status> PutFromBatch(std::span<const std::string> keys, std::span<const Span> buffers,
                                   const PlaceOptions& place = {}, bool upsert = false);

  // Local memory the zero-copy calls may use. INVALID_ARGUMENT for null/0 or an overlap with a
  // registered buffer; UnregisterBuffer: NOT_REGISTERED when `buffer` starts no registration.
  Status RegisterBuffer(void* buffer, uint64_t size);
  Status UnregisterBuffer(void* buffer);

  // Ranges of values into registered buffers: one master call for the distinct keys, one batch
  // of copies. One result per range, its size or: NOT_FOUND (the key), NOT_REGISTERED (dst not
  // inside a registered buffer), OUT_OF_RANGE (past the end of the value), INVALID_ARGUMENT (a
  // bad key, a key index past `keys`, a null dst), NOT_SUPPORTED (the object is on its writer's
  // disk only: Get it, which brings it back into memory), TIMEOUT (the copy outlived the lease).
  // A failed range writes nothing of its own; the others are done.
  std::vector<Result<uint64_t>> GetRanges(std::span<const std::string> keys, std::span<const RangeRead> ranges);

  // Where objects are: no lease is granted and the read does not count as an access (it moves
  // nothing in the eviction order), so the places may go stale at once; Get to copy the bytes.
  // NOT_FOUND for a missing key (or a put not yet ended); INVALID_ARGUMENT for a bad key, alone.
  Result<ObjectDesc> Describe(std::string_view key);
  std::vector<Result<ObjectDesc>> DescribeBatch(std::span<const std::string> keys);

  Result<bool> Exists(std::string_view key);           // grants a read lease when true
  std::vector<Result<bool>> ExistsBatch(std::span<const std::string> keys);
  Result<uint64_t> Size(std::string_view key);         // NOT_FOUND when missing
  // NOT_FOUND; BUSY while a reader holds a lease (unless force).
  Status Remove(std::string_view key, bool force = false);
  std::vector<Status> RemoveBatch(std::span<const std::string> keys, bool force = false);
  // How many objects went. INVALID_ARGUMENT for a pattern that does not compile (ECMAScript).
  Result<uint64_t> RemoveByRegex(std::string_view pattern, bool force = false);
  Result<uint64_t> RemoveAll(bool force = false);

  // OK while the master answers; UNAVAILABLE otherwise.
  Status Health();
  Result<StoreStats> Stats();
  // Leaves the pool: objects whose only replicas were in this peer's memory are gone.
  Status Close();

  bm::Pool& pool();

  struct Impl;

 private:
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::store
