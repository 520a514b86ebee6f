#include "meta/memory_store.h"

#include <algorithm>

#include "base/random.h"
#include "meta/directory_auth.h"

namespace weft::meta {

namespace {

bool HasPrefix(const std::string& key, const std::string& prefix) {
  return key.size() >= prefix.size() && key.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

MemoryStore::MemoryStore(DirectoryOptions options)
    : Directory(std::move(options)),
      instance_(FreshSeed() >> 11),  // 53 bits: exact in any JSON reader
      worker_([this] { Worker(); }) {}

MemoryStore::~MemoryStore() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
    watchers_.clear();
  }
  work_cv_.notify_all();
  events_cv_.notify_all();
  worker_.join();
}

int64_t MemoryStore::revision() const {
  std::lock_guard lk(mu_);
  return revision_;
}

void MemoryStore::RecordLocked(WatchEvent::Kind kind, const std::string& key, const std::string& value) {
  ++revision_;
  RevEvent ev{revision_, WatchEvent{kind, key, value}};
  // Only queue for delivery when someone listens; a watcher registered later starts after
  // the current revision anyway.
  if (!watchers_.empty()) {
    pending_.push_back(ev);
    work_cv_.notify_one();
  }
  history_.push_back(std::move(ev));
  if (history_.size() > kHistory) history_.pop_front();
  events_cv_.notify_all();
  for (const auto& entry : revision_listeners_) entry.second();
}

void MemoryStore::EraseLocked(std::map<std::string, Entry>::iterator it) {
  if (it->second.lease != 0) {
    auto l = leases_.find(it->second.lease);
    if (l != leases_.end()) l->second.keys.erase(it->first);
  }
  std::string key = it->first;
  kv_.erase(it);
  RecordLocked(WatchEvent::Kind::kDelete, key, {});
}

void MemoryStore::ExpireLocked(Clock::time_point now) {
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.expiry > now) {
      ++it;
      continue;
    }
    std::set<std::string> keys = std::move(it->second.keys);
    it = leases_.erase(it);
    for (const auto& k : keys) {
      auto e = kv_.find(k);
      if (e != kv_.end()) EraseLocked(e);
    }
  }
}

Status MemoryStore::PutLocked(const std::string& key, const std::string& value, LeaseId lease) {
  if (lease != 0 && leases_.find(lease) == leases_.end()) {
    return Error(Code::kNotFound, "lease {} is not known (expired or revoked); grant a new one", lease);
  }
  Entry& e = kv_[key];
  if (e.lease != lease) {
    // Moving to another lease (or to none), as etcd does.
    if (e.lease != 0) {
      auto old = leases_.find(e.lease);
      if (old != leases_.end()) old->second.keys.erase(key);
    }
    if (lease != 0) leases_[lease].keys.insert(key);
    e.lease = lease;
  }
  e.value = value;
  RecordLocked(WatchEvent::Kind::kPut, key, value);
  return OkStatus();
}

Result<std::string> MemoryStore::DoGet(const std::string& key, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  auto it = kv_.find(key);
  if (it == kv_.end()) return Error(Code::kNotFound, "key '{}' is not in the directory", key);
  return it->second.value;
}

Status MemoryStore::DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  return PutLocked(key, value, lease);
}

// In-process callers are trusted: the lease is checked only for remote writers (DeleteAsOwner).
Status MemoryStore::DoDelete(const std::string& key, LeaseId, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  auto it = kv_.find(key);
  if (it == kv_.end()) return Error(Code::kNotFound, "key '{}' is not in the directory", key);
  EraseLocked(it);
  return OkStatus();
}

Status MemoryStore::CheckOwnerLocked(const std::string& key, LeaseId lease, const char* what) const {
  auto it = kv_.find(key);
  if (it == kv_.end() || it->second.lease == 0 || it->second.lease == lease) return OkStatus();
  return Error(Code::kPermissionDenied,
               "cannot {} key '{}': it is held under a live lease {}; only the lease's holder may change it",
               what, key, lease == 0 ? "and the request names none" : "that the request does not name");
}

Status MemoryStore::PutAsOwner(const std::string& key, const std::string& value, LeaseId lease) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  WEFT_RETURN_IF_ERROR(CheckOwnerLocked(key, lease, "put"));
  return PutLocked(key, value, lease);
}

Status MemoryStore::DeleteAsOwner(const std::string& key, LeaseId lease) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  auto it = kv_.find(key);
  if (it == kv_.end()) return Error(Code::kNotFound, "key '{}' is not in the directory", key);
  WEFT_RETURN_IF_ERROR(CheckOwnerLocked(key, lease, "delete"));
  EraseLocked(it);
  return OkStatus();
}

Result<KeyValues> MemoryStore::DoList(const std::string& prefix, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  KeyValues out;
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && HasPrefix(it->first, prefix); ++it) {
    out.emplace_back(it->first, it->second.value);
  }
  return out;
}

Result<bool> MemoryStore::DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  if (kv_.count(key) != 0) return false;
  WEFT_RETURN_IF_ERROR(PutLocked(key, value, lease));
  return true;
}

Status MemoryStore::DoCommit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  auto held = kv_.find(guard.key);
  if (held == kv_.end() || held->second.lease != guard.lease) {
    return Error(Code::kPermissionDenied, "'{}' is not held under lease {} any more: nothing written", guard.key,
                 guard.lease);
  }
  for (const DirectoryWrite& w : writes) {
    if (w.value) {
      WEFT_RETURN_IF_ERROR(PutLocked(w.key, *w.value, 0));
    } else if (auto it = kv_.find(w.key); it != kv_.end()) {
      EraseLocked(it);
    }
  }
  return OkStatus();
}

Result<LeaseId> MemoryStore::DoGrant(std::chrono::milliseconds ttl, Deadline) {
  if (ttl.count() <= 0) return Error(Code::kInvalidArgument, "lease ttl must be positive, got {} ms", ttl.count());
  std::lock_guard lk(mu_);
  // Random ids from the OS, not a counter or a seeded generator: a client that kept a lease id
  // across a server restart must not find it naming someone else's new lease, and on the
  // embedded server a lease id is what proves ownership of its keys, so no one may derive
  // another's id from the ids they were given.
  LeaseId id = 0;
  while (id == 0 || leases_.count(id) != 0) {
    WEFT_ASSIGN_OR_RETURN(id, UnguessableId());
  }
  leases_[id] = Lease{ttl, Clock::now() + ttl, {}};
  work_cv_.notify_one();  // the worker may need to wake earlier
  return id;
}

Status MemoryStore::DoKeepAlive(LeaseId lease, Deadline) {
  std::lock_guard lk(mu_);
  auto now = Clock::now();
  ExpireLocked(now);
  auto it = leases_.find(lease);
  if (it == leases_.end()) return Error(Code::kNotFound, "lease {} has expired or was revoked", lease);
  it->second.expiry = now + it->second.ttl;
  return OkStatus();
}

Status MemoryStore::DoRevoke(LeaseId lease, Deadline) {
  std::lock_guard lk(mu_);
  ExpireLocked(Clock::now());
  auto it = leases_.find(lease);
  if (it == leases_.end()) return Error(Code::kNotFound, "lease {} has expired or was revoked", lease);
  it->second.expiry = Clock::time_point::min();
  ExpireLocked(Clock::now());
  return OkStatus();
}

Result<WatchHandle> MemoryStore::DoWatch(const std::string& prefix, WatchCallback callback, Deadline) {
  if (!callback) return Error(Code::kInvalidArgument, "watch of '{}' needs a callback", prefix);
  uint64_t id;
  {
    std::lock_guard lk(mu_);
    id = next_watcher_++;
    watchers_[id] = Watcher{prefix, revision_, std::make_shared<WatchCallback>(std::move(callback))};
  }
  std::weak_ptr<int> alive = alive_;
  return WatchHandle([this, alive, id] {
    if (auto a = alive.lock()) CancelWatch(id);
  });
}

void MemoryStore::CancelWatch(uint64_t id) {
  std::unique_lock lk(mu_);
  watchers_.erase(id);
  // From inside its own callback the worker cannot wait for itself.
  if (std::this_thread::get_id() == worker_.get_id()) return;
  idle_cv_.wait(lk, [&] { return delivering_ != id; });
}

void MemoryStore::Worker() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    ExpireLocked(Clock::now());
    if (!pending_.empty()) {
      RevEvent ev = std::move(pending_.front());
      pending_.pop_front();
      // Snapshot the ids; a watcher cancelled meanwhile is skipped at its turn.
      std::vector<uint64_t> ids;
      for (const auto& [wid, w] : watchers_) ids.push_back(wid);
      for (uint64_t wid : ids) {
        auto w = watchers_.find(wid);
        if (w == watchers_.end() || stop_) continue;
        if (ev.revision <= w->second.start_revision || !HasPrefix(ev.event.key, w->second.prefix)) continue;
        auto cb = w->second.callback;
        delivering_ = wid;
        lk.unlock();
        (*cb)(ev.event);
        lk.lock();
        delivering_ = 0;
        idle_cv_.notify_all();
      }
      continue;
    }
    auto next = Clock::time_point::max();
    for (const auto& [lid, l] : leases_) next = std::min(next, l.expiry);
    auto wake = [&] { return stop_ || !pending_.empty(); };
    if (next == Clock::time_point::max()) {
      work_cv_.wait(lk);  // a new lease or event notifies
    } else {
      work_cv_.wait_until(lk, next, wake);
    }
  }
}

MemoryStore::EventBatch MemoryStore::EventsSince(int64_t since, const std::string& prefix, Deadline until,
                                                 const std::atomic<bool>* stop) {
  std::unique_lock lk(mu_);
  EventBatch out;
  out.instance = instance_;
  for (;;) {
    ExpireLocked(Clock::now());
    out.revision = revision_;
    if (since < 0) return out;  // just asking for the current revision
    bool lost_old = !history_.empty() && since + 1 < history_.front().revision;
    if (since > revision_ || lost_old) {
      out.compacted = true;
      return out;
    }
    auto first = std::lower_bound(history_.begin(), history_.end(), since + 1,
                                  [](const RevEvent& e, int64_t r) { return e.revision < r; });
    for (auto it = first; it != history_.end(); ++it) {
      if (HasPrefix(it->event.key, prefix)) out.events.push_back(*it);
    }
    if (!out.events.empty() || until.expired() || stop_ || (stop != nullptr && stop->load())) return out;
    // Nothing under the prefix yet: skip what was seen, and wait for more. Lease expiry is
    // driven here too (not only by the worker), so the wait is capped.
    since = revision_;
    auto cap = Clock::now() + std::chrono::milliseconds(100);
    events_cv_.wait_until(lk, std::min(until.at(), cap));
  }
}

uint64_t MemoryStore::AddRevisionListener(std::function<void()> listener) {
  std::lock_guard lk(mu_);
  uint64_t id = next_revision_listener_++;
  revision_listeners_.emplace(id, std::move(listener));
  return id;
}

void MemoryStore::RemoveRevisionListener(uint64_t id) {
  std::lock_guard lk(mu_);
  revision_listeners_.erase(id);
}

void MemoryStore::WakeWaiters() {
  std::lock_guard lk(mu_);
  events_cv_.notify_all();
}

}  // namespace weft::meta
