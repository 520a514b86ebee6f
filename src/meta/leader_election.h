// Leader election on a directory key: several candidates (HA masters) campaign for one key; the
// one whose lease holds the key leads, the others stand by and take over when the key goes away
// (the leader resigned, or its lease expired because it died or lost the directory).
//
// The leader keeps its lease alive every ttl/3. When it cannot (the lease is gone: NOT_FOUND, or
// no KeepAlive succeeded for a whole ttl), it has lost leadership: on_lost runs once, and the
// owner must stop serving at once (fail-stop). A leader that cannot prove its lease may already
// have a successor, so carrying on would mean two leaders.
//
// Works on every shared-store backend (local, embedded://, etcd://); etcd:// is the one meant
// for masters on several machines.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "base/clock.h"
#include "base/result.h"
#include "meta/directory.h"

namespace weft::meta {

// The key a pool's elected coordinator holds: "/weft/<pool_name>/leader". Its value is the
// address peers dial (tcp://host:port); empty while the winner is still starting up.
std::string LeaderKey(const std::string& pool_name);

// Told (once) that leadership was lost, with why; runs on the election's keep-alive thread, so
// it must not destroy the LeaderElection (which joins that thread) and should only signal.
using LostCallback = std::function<void(const Status& why)>;

struct ElectionOptions {
  std::string key;    // e.g. LeaderKey(pool)
  std::string value;  // what the key holds while we lead (Publish changes it)
  // How long the directory keeps the key after the leader's last keep-alive: how long a dead
  // leader blocks its successor. etcd rounds it up to whole seconds (2 s at least).
  std::chrono::milliseconds ttl{5000};
  LostCallback on_lost;
};

class LeaderElection {
 public:
  // `directory` must outlive the election.
  LeaderElection(Directory& directory, ElectionOptions options);
  ~LeaderElection();  // stops the keep-alive thread and resigns if leading
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // Blocks until this candidate leads (OK), `deadline` passes (TIMEOUT), Stop() is called
  // (CANCELLED), or the directory refuses in a way retrying cannot fix (its error). While the
  // directory is unreachable it keeps trying. Call it once.
  Status Campaign(Deadline deadline);
  // While leading: replaces the key's value (under our lease), e.g. with the address bound
  // once elected.
  Status Publish(const std::string& value);
  // Gives leadership up now: revokes the lease, which deletes the key at once, so a standby
  // takes over without waiting for the ttl. OK when not leading.
  Status Resign();
  // Wakes a Campaign (which returns CANCELLED) from any thread; a leader keeps leading.
  void Stop();

  bool leading() const;
  // The lease holding the key while leading (0 otherwise): for diagnostics and tests.
  LeaseId lease() const;
  const std::string& key() const { return options_.key; }

 private:
  Result<bool> TryOnce(Deadline deadline);
  void WaitForVacancy(Deadline deadline);
  void KeepLeading(Clock::time_point last_ok);
  bool RenewOnce(Clock::time_point& last_ok, Status& why);
  void SleepUnlessStopping(std::chrono::milliseconds for_how_long);

  Directory& directory_;
  const ElectionOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;         // Stop(): Campaign gives up
  bool vacancy_ = false;      // the watch saw the key deleted
  bool leading_ = false;
  bool quitting_ = false;     // the keep-alive thread must end (Resign, destruction)
  LeaseId lease_ = 0;
  std::thread keeper_;
};

// The current leader's value under `key`, waiting (watch, and a poll as a backstop) until some
// candidate leads and has published a non-empty value, or `deadline` passes: TIMEOUT, saying
// that no leader is elected and which key in which directory was read.
Result<std::string> ResolveLeader(Directory& directory, const std::string& key, Deadline deadline);

// True when a configured coordinator address names HA masters' directory (etcd://...) instead
// of a coordinator: peers then dial whichever master leads (ResolveCoordinator).
bool IsElectedCoordinator(std::string_view address);

// For an etcd:// coordinator address: opens that directory and returns the address its leader
// for `pool_name` published (ResolveLeader on LeaderKey). Endpoints may be separated by ';' or ','.
Result<std::string> ResolveCoordinator(const std::string& address, const std::string& pool_name, Deadline deadline);

}  // namespace weft::meta
