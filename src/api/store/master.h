// The store's master: key -> object (size, replicas in the pool, state, lease, pins). It holds
// metadata only; the bytes move between clients and slices through the engine. It allocates
// replicas from the pool allocator it shares with the pool's coordinator, which hosts it (the
// first peer of the pool, `weft meta` or `weft store-master`). Thread-safe.
//
// Object life: PutStart allocates the replicas and records a pending object that readers do not
// see; the writer copies the value in and calls PutEnd (the object becomes visible) or PutRevoke
// (the replicas are freed). A pending put that is neither ended nor revoked within put_timeout is
// revoked by the master. Get and Exists grant a lease of lease_ttl: a leased object is neither
// removed (BUSY unless forced) nor evicted, and memory of an object removed or replaced while
// leased is parked until the lease ends, so that a reader still copying never sees it reused.
//
// Eviction: when a put would take the fill of the pool above high_watermark, or finds no room,
// unleased objects are evicted approximately least recently used first (soft-pinned ones after
// all others, hard-pinned never) until the fill is at most high_watermark - eviction_ratio or
// the put fits. POOL_FULL when nothing more can go. An evicted object whose writer keeps it on
// its disk (PutEnd on_disk) stays known, without replicas; its writer serves it from there and
// may promote it back into memory (PutStart with promote_id).
//
// Failover (HA): an observer (SetObserver) is told of every change of durable state as an
// ObjectRecord (object_record.h), and a new leader's master is rebuilt from the records
// (Restore). Leases, LRU order, parked memory and pending promotions are not durable.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/store/object_record.h"
#include "api/store/types.h"
#include "base/result.h"
#include "gva/allocator.h"

namespace weft::store {

using Clock = std::function<std::chrono::steady_clock::time_point()>;

// INVALID_ARGUMENT for an empty key or one over kMaxKeyBytes (clients check before asking, so
// that a bad key fails alone instead of failing its batch's call with PROTOCOL).
Status CheckKey(std::string_view key);

// What a reader needs: the object's size, where its replicas are, and how long its lease holds
// from the moment the master answered (the reader treats a copy that ends later as unsafe).
struct ObjectView {
  uint64_t size = 0;
  std::vector<Replica> replicas;     // empty: evicted from memory, on the disk of disk_rank only
  std::chrono::milliseconds lease{0};
  uint64_t id = 0;                   // unique per put; names the object's file in the SSD tier
  int32_t disk_rank = -1;            // the writer that keeps a copy on its disk; -1: none
};

// Where a started put goes: its replicas and the object's id.
struct Placed {
  std::vector<Replica> replicas;
  uint64_t id = 0;
};

// Writes a value into one replica from the master's own process (the peer hosting the
// coordinator maps its same-host peers' slices). Any error leaves that put to its writer.
using ReplicaWriter = std::function<Status(const Replica& replica, std::span<const uint8_t> value)>;

// What an inline put did: written and ended (complete), or placed and pending, for its writer to
// copy into `placed` and end (or revoke), exactly as after PutStart.
struct InlinePut {
  Placed placed;
  bool complete = false;
};

// What Restore did: records restored, and records left out (their replicas could not be
// reserved: no such slice, a range past its end or overlapping another; or a key already
// restored with the same completeness; or a record no master writes).
struct RestoreReport {
  uint64_t restored = 0;
  uint64_t skipped = 0;
};

class Master {
 public:
  // `allocator` outlives the master. `clock`: steady_clock::now unless a test passes its own.
  Master(gva::Allocator& allocator, MasterOptions options, Clock clock = nullptr);
  ~Master();
  Master(const Master&) = delete;
  Master& operator=(const Master&) = delete;

  // Starts a put of `size` bytes under `key` for the peer of rank `writer`: allocates
  // place.replicas replicas on distinct live slices (fewer when fewer peers have room; at least
  // one), the first on place.preferred_rank or else the writer's own slice when it has room.
  // INVALID_ARGUMENT: empty key, key over kMaxKeyBytes, size 0, replicas outside
  // 1..kMaxReplicas, size larger than any slice. ALREADY_EXISTS: the key exists (complete or
  // pending) and !upsert, or a put of it is pending (upsert too). POOL_FULL: no room even
  // after eviction. With upsert an existing complete object stays readable until PutEnd
  // replaces it.
  //
  // promote_id != 0 brings an object that was evicted to its writer's disk back into memory:
  // the object must still be on disk under that id (NOT_FOUND otherwise); `size` and `upsert`
  // are then ignored, and PutEnd gives the object its replicas again.
  Result<Placed> PutStart(uint32_t writer, std::string_view key, uint64_t size, const PlaceOptions& place,
                          bool upsert, uint64_t promote_id = 0);
  // NOT_FOUND when no put of `key` by `writer` is pending (never started, already ended,
  // revoked, or timed out), or when a promoted object changed meanwhile. `on_disk`: the writer
  // also keeps the value on its disk (SSD tier), so eviction keeps the object, on disk only.
  Status PutEnd(uint32_t writer, std::string_view key, bool on_disk = false);
  Status PutRevoke(uint32_t writer, std::string_view key);

  // A put whose bytes came with the request: PutStart (every check and error as there), then
  // `write` copies the value into each replica (outside the master's lock) and PutEnd makes it
  // visible, all before the writer hears back. When `write` is empty or fails for a replica the
  // put stays pending and its writer copies and ends it (complete = false). An error of PutEnd
  // (the put was revoked meanwhile: a replica's peer died) is returned; nothing is left behind.
  Result<InlinePut> PutInline(uint32_t writer, std::string_view key, std::span<const uint8_t> value,
                              const PlaceOptions& place, bool upsert, const ReplicaWriter& write);

  // A complete object, with a fresh lease. NOT_FOUND for a missing or still-pending key.
  Result<ObjectView> Get(std::string_view key);
  // Where a complete object is, without a lease and without counting as an access (eviction
  // order stays as it was): for placement queries, which copy no bytes. NOT_FOUND as Get.
  Result<ObjectView> Describe(std::string_view key);
  // Whether a complete object exists; grants a lease when it does.
  bool Exists(std::string_view key);
  // NOT_FOUND; BUSY when leased and !force.
  Status Remove(std::string_view key, bool force);
  // Removes every complete object whose key matches (std::regex ECMAScript, whole key); leased
  // ones are skipped unless force. Returns how many went. INVALID_ARGUMENT for a bad regex.
  Result<uint64_t> RemoveByRegex(std::string_view pattern, bool force);
  uint64_t RemoveAll(bool force);

  // The peer of `rank` left or died: replicas in its slice are forgotten (the allocator drops
  // the slice itself), objects left without a replica are gone, its pending puts are revoked.
  // Nothing of any other peer is touched. Call before Allocator::RemoveSlice.
  void DropRank(uint32_t rank);

  // Revokes timed-out puts and frees parked memory whose leases ended. Every call above does
  // this first; the host may also call it on a timer.
  void Expire();

  MasterStats Stats() const;

  // Call before serving (it replaces any earlier observer). Every change of durable state calls
  // it, under the master's lock, in the order the changes happen: PutStart (pending record),
  // PutEnd (pending erased, then the complete record, which also replaces an upserted object),
  // PutRevoke and put timeouts (pending erased), Remove / RemoveByRegex / RemoveAll (complete
  // erased), eviction (erased, or a complete record without replicas when kept on disk), the end
  // of a promotion (the complete record with its replicas again), DropRank (records that lost a
  // replica or their disk copy, erased objects and pending puts). Reads, leases and LRU order
  // are not durable and call nothing. Pending promotions are not journaled: a new leader does
  // not know them, and their writer's PutEnd gets NOT_FOUND there (it promotes again).
  void SetObserver(MasterObserver observer);

  // Rebuilds a fresh master from the records an observer was told (the last record of each
  // (key, complete) not erased since): reserves every replica's range in the allocator, which
  // already has the slices of the records' ranks. Complete objects are granted a lease of
  // lease_ttl from now (a reader copying during the failover is not overtaken by eviction or
  // reuse); pending puts get a fresh put_timeout, and their writer may end or revoke them.
  // Records whose replicas cannot all be reserved are skipped whole and counted. Later puts get
  // ids above every record's id (restored or not: a skipped object's file may still be on
  // disk). The observer is not called. ALREADY_EXISTS when the master holds objects already.
  Result<RestoreReport> Restore(std::span<const ObjectRecord> records);

 private:
  Result<Placed> Promote(uint32_t writer, std::string_view key, const PlaceOptions& place, uint64_t id);

  struct Object;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace weft::store
