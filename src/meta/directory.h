// The directory: a small key-value store with leases and watches that peers use to find each
// other (segment descriptors, rank assignment, membership). One interface, several backends,
// chosen by URL (OpenDirectory below; docs/directory.md describes them all):
//
//   local, embedded://          an in-process store (MemoryStore); no server, one process
//   embedded://host:port        a client of a weft DirectoryServer (`weft meta`, or one embedded
//                               in a peer); also serves Mooncake's /metadata HTTP protocol
//   etcd://host:port            etcd v3 through its JSON gateway (production, HA)
//                               (several endpoints: etcd://h1:2379,h2:2379 or h1:2379;h2:2379)
//   http://host:port/metadata   Mooncake's HTTP metadata protocol: get/put/delete only
//   p2p, p2p://host:port        no directory: each peer serves its own keys (like Mooncake's
//                               P2PHANDSHAKE); see "P2P key convention" below
//
// Every call has a deadline (by default DirectoryOptions::timeout from now) and never blocks past
// it: an unreachable backend is UNAVAILABLE (the message names the address), a slow one TIMEOUT.
//
// Semantics common to all backends:
//  - Get of a missing key is NOT_FOUND.
//  - Delete of a missing key is NOT_FOUND (as Mooncake's DELETE /metadata answers 404); callers
//    that want idempotence ignore that code.
//  - List(prefix) returns every (key, value) whose key starts with prefix, sorted by key.
//  - PutIfAbsent is an atomic create: of many concurrent callers exactly one gets true.
//  - A key put with a lease is deleted when the lease expires or is revoked (watchers see a
//    delete event). Putting a key again with another lease (or none) moves it to that lease,
//    except on the embedded server (embedded://, http:// to weft): there a key held under a
//    lease is changed or deleted only by a request that names that lease (PERMISSION_DENIED
//    otherwise), so only its owner can touch it. Lease ids are unguessable there.
//  - Watch delivers the events after the Watch call returns, on a backend thread, in the order
//    they happened (so in order per key).
//
// P2P key convention: a key of the form "<host:port>/<rest>" belongs to the peer whose
// directory endpoint is host:port (its name, PeerName()); the owner stores it as "<rest>".
// Get of such a key fetches "<rest>" from that peer (GET /metadata?key=<rest>) and caches it.
// Other backends treat such keys as ordinary keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/metrics.h"
#include "base/result.h"

namespace weft::meta {

// 0 means "no lease". Lease ids are chosen by the backend and are never 0.
using LeaseId = int64_t;

struct DirectoryOptions {
  // The deadline of a call that names none.
  std::chrono::milliseconds timeout{5000};
  // p2p only: where this peer serves its own keys when the URL is plain "p2p". Loopback by
  // default: the endpoint is plain HTTP, so reaching other hosts is asked for by naming an
  // address of this machine ("p2p://10.0.0.5:0"; its host is also the peer's name).
  std::string p2p_bind = "127.0.0.1:0";
  // p2p only: a value fetched from a peer is reused for this long, then fetched again; a fetch
  // that fails drops the cached value (the peer may have restarted with new descriptors).
  std::chrono::milliseconds p2p_cache_ttl{30000};
  // p2p only: where the endpoint counts what it refuses (weft_http_refused_total{server="p2p"});
  // not owned, may be null.
  MetricsRegistry* p2p_metrics = nullptr;
  // embedded:// and http:// only: the cluster secret, proven (never sent) on every request that
  // changes the directory, as a server started with a secret requires (meta/directory_auth.h).
  // Empty: requests go unsigned, which only a server without a secret accepts. Never logged.
  std::string cluster_secret;
  // etcd:// only: etcd's own authentication (a server with `auth enable`). With a user, every
  // call carries a token from POST /v3/auth/authenticate, fetched again when etcd says it expired.
  // Empty: OpenDirectory takes WEFT_ETCD_USER / WEFT_ETCD_PASSWORD from the environment. The
  // password is never logged; etcd's gateway is plain HTTP here, so keep it on a trusted network.
  std::string etcd_user;
  std::string etcd_password;
};

struct WatchEvent {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;  // empty for kDelete
};

// Runs on a backend thread. It must not block for long (it holds up later events) and must not
// destroy the WatchHandle of its own watch (Cancel from inside the callback is allowed).
using WatchCallback = std::function<void(const WatchEvent&)>;

// Owns a watch. Cancel (or destruction) stops it: once Cancel returns, the callback is not
// running and will not run again (unless Cancel is called from inside the callback itself).
class WatchHandle {
 public:
  WatchHandle() = default;
  explicit WatchHandle(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  ~WatchHandle() { Cancel(); }
  WatchHandle(WatchHandle&& other) noexcept : cancel_(std::exchange(other.cancel_, nullptr)) {}
  WatchHandle& operator=(WatchHandle&& other) noexcept {
    if (this != &other) {
      Cancel();
      cancel_ = std::exchange(other.cancel_, nullptr);
    }
    return *this;
  }
  WatchHandle(const WatchHandle&) = delete;
  WatchHandle& operator=(const WatchHandle&) = delete;

  void Cancel() {
    if (auto c = std::exchange(cancel_, nullptr)) c();
  }
  bool active() const { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

using KeyValues = std::vector<std::pair<std::string, std::string>>;

// One write of a guarded batch (Directory::Commit): a put (under no lease) when value is set, a
// delete otherwise (a missing key is fine).
struct DirectoryWrite {
  std::string key;
  std::optional<std::string> value;
};

// What a guarded batch requires: `key` exists and is held under `lease` (e.g. the leader key of an
// election, so that a master that lost its leadership can no longer write).
struct WriteGuard {
  std::string key;
  LeaseId lease = 0;
};

// The interface. Public calls fill in the default deadline and forward to the Do* methods that
// each backend implements (so the default lives in one place). Thread-safe.
class Directory {
 public:
  explicit Directory(DirectoryOptions options) : options_(std::move(options)) {}
  virtual ~Directory() = default;
  Directory(const Directory&) = delete;
  Directory& operator=(const Directory&) = delete;

  using OptDeadline = std::optional<Deadline>;

  Result<std::string> Get(const std::string& key, OptDeadline d = {}) { return DoGet(key, Pick(d)); }
  Status Put(const std::string& key, const std::string& value, LeaseId lease = 0, OptDeadline d = {}) {
    return DoPut(key, value, lease, Pick(d));
  }
  Status Delete(const std::string& key, OptDeadline d = {}) { return DoDelete(key, 0, Pick(d)); }
  // Deletes a key the caller holds under `lease`: the embedded server refuses a delete of a
  // leased key that does not name its lease; other backends ignore the lease.
  Status Delete(const std::string& key, LeaseId lease, OptDeadline d = {}) { return DoDelete(key, lease, Pick(d)); }
  Result<KeyValues> List(const std::string& prefix, OptDeadline d = {}) { return DoList(prefix, Pick(d)); }
  // true: this call created the key; false: it existed (and is left unchanged).
  Result<bool> PutIfAbsent(const std::string& key, const std::string& value, LeaseId lease = 0,
                           OptDeadline d = {}) {
    return DoPutIfAbsent(key, value, lease, Pick(d));
  }
  // A lease that expires ttl after its grant or its last KeepAlive. etcd rounds ttl up to whole
  // seconds and to its minimum (2 s with default settings); a backend never shortens it.
  Result<LeaseId> Grant(std::chrono::milliseconds ttl, OptDeadline d = {}) { return DoGrant(ttl, Pick(d)); }
  // NOT_FOUND when the lease has expired or was revoked (its keys are gone: put them again).
  Status KeepAlive(LeaseId lease, OptDeadline d = {}) { return DoKeepAlive(lease, Pick(d)); }
  // Ends the lease now and deletes its keys. NOT_FOUND when it is not known.
  Status Revoke(LeaseId lease, OptDeadline d = {}) { return DoRevoke(lease, Pick(d)); }
  // The deadline bounds setting the watch up; events then flow until the handle is cancelled.
  Result<WatchHandle> Watch(const std::string& prefix, WatchCallback callback, OptDeadline d = {}) {
    return DoWatch(prefix, std::move(callback), Pick(d));
  }

  // Applies every write in one atomic step if `guard` holds, none otherwise: PERMISSION_DENIED
  // (naming the guard key) when the key is gone or under another lease. A key may appear once a
  // batch; at most kMaxCommitWrites writes a call (etcd's default limit of operations in one
  // transaction). etcd and the in-process store; NOT_SUPPORTED on the other backends.
  static constexpr size_t kMaxCommitWrites = 128;
  Status Commit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, OptDeadline d = {});

  const DirectoryOptions& options() const { return options_; }
  // The URL this directory was opened with, for messages.
  virtual std::string Describe() const = 0;

 protected:
  virtual Result<std::string> DoGet(const std::string& key, Deadline d) = 0;
  virtual Status DoPut(const std::string& key, const std::string& value, LeaseId lease, Deadline d) = 0;
  virtual Status DoDelete(const std::string& key, LeaseId lease, Deadline d) = 0;
  virtual Result<KeyValues> DoList(const std::string& prefix, Deadline d) = 0;
  virtual Result<bool> DoPutIfAbsent(const std::string& key, const std::string& value, LeaseId lease,
                                     Deadline d) = 0;
  virtual Result<LeaseId> DoGrant(std::chrono::milliseconds ttl, Deadline d) = 0;
  virtual Status DoKeepAlive(LeaseId lease, Deadline d) = 0;
  virtual Status DoRevoke(LeaseId lease, Deadline d) = 0;
  virtual Result<WatchHandle> DoWatch(const std::string& prefix, WatchCallback callback, Deadline d) = 0;
  // Called with at most kMaxCommitWrites writes, each key once.
  virtual Status DoCommit(std::span<const DirectoryWrite> writes, const WriteGuard& guard, Deadline d);

 private:
  Deadline Pick(const OptDeadline& d) const { return d ? *d : Deadline::After(options_.timeout); }

  DirectoryOptions options_;
};

// Opens a directory by URL (see the top of this file). INVALID_ARGUMENT for an unknown form;
// UNAVAILABLE when a p2p endpoint cannot be bound. Client backends connect lazily, so opening
// embedded:// or etcd:// succeeds even while the server is down; calls then fail UNAVAILABLE.
Result<std::unique_ptr<Directory>> OpenDirectory(const std::string& url, DirectoryOptions options = {});

// Splits "host:port" (port 1..65535; host non-empty, "[v6]" brackets allowed). INVALID_ARGUMENT
// otherwise.
Result<std::pair<std::string, uint16_t>> ParseHostPort(const std::string& text);

}  // namespace weft::meta
