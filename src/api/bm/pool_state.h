// What a pool's coordinator must not lose when its master fails over (HA, docs/store.md): who is
// in the pool with which slices, the pool allocator's own allocations (Pool::Alloc), and the
// store's objects. The elected master records every change (PoolStateRecorder) through a
// JournalWriter into the directory under StatePrefix(pool); the next elected master loads it
// (LoadPoolState) and rebuilds its allocator and store from it (RestorePoolState) before it
// serves, holding each member's rank for it while the peers rejoin.
//
// Directory keys under the prefix (values: wire-encoded records):
//   m/<rank, 8 hex digits>     a member: peer name, host and device slice capacities
//   a/<gva, 16 hex digits>     an allocation of the pool allocator: its size
//   o/<key>                    a complete store object (store::ObjectRecord)
//   p/<key>                    a put of key started and not yet ended
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "api/store/master.h"
#include "api/store/object_record.h"
#include "base/result.h"
#include "gva/allocator.h"
#include "meta/directory.h"
#include "meta/journal_writer.h"

namespace weft::bm {

struct MemberRecord {
  std::string peer_name;
  uint64_t host_capacity = 0;    // 0: no host slice added yet
  uint64_t device_capacity = 0;  // 0: none
};

struct PoolState {
  std::map<uint32_t, MemberRecord> members;  // by rank
  std::map<uint64_t, uint64_t> allocations;  // gva -> size
  std::vector<store::ObjectRecord> objects;  // complete ones first, then pending puts
  uint64_t unreadable = 0;                   // records that did not decode: skipped (logged)
};

// "/weft/<pool>/state/".
std::string StatePrefix(const std::string& pool_name);

// One directory entry (its key relative to the prefix) into `state`; PROTOCOL for a key or a
// value that does not decode, with `state` unchanged.
Status AddStateEntry(PoolState& state, std::string_view relative_key, std::string_view value);

// Everything under `prefix`. A pending put whose key has a complete object of the same id is one
// that ended (its two keys landed in different batches): it is dropped.
Result<PoolState> LoadPoolState(meta::Directory& directory, const std::string& prefix, Deadline deadline);

// What RestorePoolState rebuilt, and what it could not (each logged with its reason).
struct RestoreSummary {
  uint64_t members = 0, allocations = 0, objects = 0;
  uint64_t skipped_slices = 0, skipped_allocations = 0, skipped_objects = 0;
};

// Adds every member's slices to `allocator` (fresh), reserves the allocations, then restores the
// store's objects into `master` (fresh, on that allocator).
RestoreSummary RestorePoolState(const PoolState& state, gva::Allocator& allocator, store::Master& master);

// Turns the coordinator's events into journal writes. Every method runs on the coordinator
// thread (its handlers), except the master's observer, which runs under the master's lock.
class PoolStateRecorder {
 public:
  // `journal` outlives the recorder; `state` seeds what is known (the restored members and
  // allocations), so that later changes and departures are recorded against it.
  PoolStateRecorder(meta::JournalWriter& journal, std::string prefix, const gva::Layout& layout, const PoolState& state);

  void OnJoined(uint32_t rank, const std::string& peer_name);
  void OnAddSlice(uint32_t rank, gva::Medium medium, uint64_t capacity);
  void OnAlloc(uint64_t gva, uint64_t size);
  void OnFree(uint64_t gva);
  // The rank left or died: its member record and its allocations go (the master's observer
  // records what happened to the objects).
  void OnGone(uint32_t rank);
  store::MasterObserver MasterObserver();

 private:
  void WriteMember(uint32_t rank);

  meta::JournalWriter& journal_;
  std::string prefix_;
  gva::Layout layout_;
  std::map<uint32_t, MemberRecord> members_;
  std::map<uint64_t, uint64_t> allocations_;  // to find a departed rank's allocations
};

// Member records, for LoadPoolState and tests. PROTOCOL for malformed bytes.
std::string EncodeMember(const MemberRecord& m);
Result<MemberRecord> DecodeMember(std::string_view bytes);

}  // namespace weft::bm
