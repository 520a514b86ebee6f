// MemoryStore: the in-process directory (URL "local" or "embedded://"), and the store behind a
// DirectoryServer. A sorted map, leases with expiry, watchers, and a revision that every
// mutation bumps. One worker thread expires leases on time (so delete events fire even when no
// one calls in) and delivers watch events in revision order; reads also expire lazily, so a
// read right after a lease's expiry never sees its keys, however late the worker runs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "meta/directory.h"

namespace weft::meta {

class MemoryStore : public Directory {
 public:
  explicit MemoryStore(DirectoryOptions options = {});
  ~MemoryStore() override;  // stops the worker; pending watch events are dropped

  std::string Describe() const override { return "local"; }

  // --- for DirectoryServer's long-poll watch ---
  struct RevEvent {
    int64_t revision;
    WatchEvent event;
  };
  struct EventBatch {
    uint64_t instance = 0;         // this store's random id: a client that sees it change knows
                                   // the server restarted and revisions started over
    int64_t revision = 0;          // the store's revision when answered: the next `since`
    std::vector<RevEvent> events;  // revision > since, key starts with the prefix, in order
    bool compacted = false;        // `since` is older than the kept history (or newer than the
                                   // store: it restarted); events were lost, start again
  };
  // The current revision (0 before the first mutation).
  int64_t revision() const;
  // Events after `since` under `prefix`; waits until there is one, `until` passes or *stop
  // turns true (checked every 100 ms and on WakeWaiters), then answers (maybe with none).
  EventBatch EventsSince(int64_t since, const std::string& prefix, Deadline until, const std::atomic<bool>* stop);
  // Wakes EventsSince waiters so they look at their stop flag now.
  void WakeWaiters();
  // For a server that parks its watches instead of blocking a thread in EventsSince: `listener`
  // runs after every new revision, on the thread that made it and with the store's lock held,
  // so it must be quick and must not call the store (DirectoryServer posts to its loop). After
  // RemoveRevisionListener returns it never runs again.
  uint64_t AddRevisionListener(std::function<void()> listener);
  void RemoveRevisionListener(uint64_t id);

  // --- for DirectoryServer: writes by a remote client, who owns nothing it cannot prove ---
  // As Put / Delete, but a key held under a lease is changed or deleted only when `lease` names
  // that lease: PERMISSION_DENIED otherwise (the message does not tell the lease). Keys under no
  // lease are anyone's. Checked and done under one lock, so no write slips in between.
  Status PutAsOwner(const std::string& key, const std::string& value, LeaseId lease);
  Status DeleteAsOwner(const std::string& key, LeaseId lease);

  // How many events the store keeps for EventsSince.
  static constexpr size_t kHistory = 1 << 16;

 protected:
  Result<std::string> DoGet(const std::string& key, Deadline d) override;
  Status DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) override;
  Status DoDelete(const std::string& key, LeaseId lease, Deadline d) override;
  Result<KeyValues> DoList(const std::string& prefix, Deadline d) override;
  Result<bool> DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease, Deadline d) override;
  Result<LeaseId> DoGrant(std::chrono::milliseconds ttl, Deadline d) override;
  Status DoKeepAlive(LeaseId lease, Deadline d) override;
  Status DoRevoke(LeaseId lease, Deadline d) override;
  Result<WatchHandle> DoWatch(const std::string& prefix, WatchCallback callback, Deadline d) override;
  Status DoCommit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, Deadline d) override;

 private:
  struct Entry {
    std::string value;
    LeaseId lease = 0;
  };
  struct Lease {
    std::chrono::milliseconds ttl;
    Clock::time_point expiry;
    std::set<std::string> keys;
  };
  struct Watcher {
    std::string prefix;
    int64_t start_revision;  // only events after this one
    std::shared_ptr<WatchCallback> callback;
  };

  // All *Locked helpers need mu_ held.
  Status PutLocked(const std::string& key, const std::string& value, LeaseId lease);
  Status CheckOwnerLocked(const std::string& key, LeaseId lease, const char* what) const;
  void EraseLocked(std::map<std::string, Entry>::iterator it);
  void RecordLocked(WatchEvent::Kind kind, const std::string& key, const std::string& value);
  void ExpireLocked(Clock::time_point now);
  void CancelWatch(uint64_t id);
  void Worker();

  mutable std::mutex mu_;
  std::condition_variable work_cv_;    // the worker: new events, new leases, stop
  std::condition_variable events_cv_;  // EventsSince waiters: new revision, WakeWaiters
  std::condition_variable idle_cv_;    // CancelWatch: the worker finished a callback
  std::map<std::string, Entry> kv_;
  std::map<LeaseId, Lease> leases_;
  const uint64_t instance_;
  int64_t revision_ = 0;
  std::deque<RevEvent> history_;
  std::deque<RevEvent> pending_;  // not yet delivered to watchers
  std::map<uint64_t, Watcher> watchers_;
  uint64_t next_watcher_ = 1;
  uint64_t delivering_ = 0;  // the watcher whose callback runs now, 0 for none
  std::map<uint64_t, std::function<void()>> revision_listeners_;
  uint64_t next_revision_listener_ = 1;
  bool stop_ = false;
  // Watch handles hold a weak reference: a handle that outlives the store cancels nothing.
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  std::thread worker_;  // last: starts after every member above is built
};

}  // namespace weft::meta
