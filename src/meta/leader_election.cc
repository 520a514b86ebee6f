#include "meta/leader_election.h"

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "meta/http_call.h"

namespace weft::meta {
namespace {

using std::chrono::milliseconds;

// How often ResolveLeader looks again when no watch event came: a backstop for a missed event
// (a watch that could not be set up, or one the backend dropped).
constexpr milliseconds kResolvePoll{500};

Deadline Sooner(Deadline a, Deadline b) { return a.at() < b.at() ? a : b; }

// One directory call: never past the caller's deadline, nor past the directory's own timeout
// (so a Never deadline still gets an answer from an unreachable backend).
Deadline CallDeadline(const Directory& directory, Deadline deadline) {
  return Sooner(deadline, Deadline::After(directory.options().timeout));
}

// Errors that say "not now" rather than "never": a campaign keeps trying after them.
bool Retryable(const Status& s) {
  switch (s.code()) {
    case Code::kUnavailable:
    case Code::kTimeout:
    case Code::kIo:
    case Code::kNotFound:  // our fresh lease expired before the put: grant another
      return true;
    default:
      return false;
  }
}

}  // namespace

std::string LeaderKey(const std::string& pool_name) { return "/weft/" + pool_name + "/leader"; }

LeaderElection::LeaderElection(Directory& directory, ElectionOptions options)
    : directory_(directory), options_(std::move(options)) {}

LeaderElection::~LeaderElection() {
  Stop();
  Status s = Resign();
  if (!s.ok()) WEFT_LOG_WARN("leader election '{}': resigning: {}", options_.key, s.ToString());
}

Status LeaderElection::Campaign(Deadline deadline) {
  // The watch only hurries the next attempt along after the key is deleted; without it (it
  // could not be set up, or an event was missed) the poll in WaitForVacancy still gets there.
  auto watch = directory_.Watch(
      options_.key,
      [this](const WatchEvent& e) {
        if (e.key != options_.key || e.kind != WatchEvent::Kind::kDelete) return;
        std::lock_guard lock(mu_);
        vacancy_ = true;
        cv_.notify_all();
      },
      CallDeadline(directory_, deadline));
  if (!watch.ok()) WEFT_LOG_INFO("leader election '{}': no watch ({}); polling", options_.key, watch.status().ToString());
  Status last = OkStatus();
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stop_) return Error(Code::kCancelled, "campaign for '{}' stopped", options_.key);
      vacancy_ = false;  // before the attempt, so a delete that follows it is not lost
    }
    if (deadline.expired()) {
      return Error(Code::kTimeout, "not elected leader of '{}' in {} before the deadline{}", options_.key,
                   directory_.Describe(), last.ok() ? " (another candidate leads)" : "; last error: " + last.ToString());
    }
    auto won = TryOnce(deadline);
    if (won.ok() && *won) return OkStatus();
    if (!won.ok() && !Retryable(won.status())) return won.status().Annotate("campaigning for " + options_.key);
    last = won.ok() ? OkStatus() : won.status();
    WaitForVacancy(deadline);
  }
}

// One attempt: a fresh lease and an atomic create of the key under it. true: we lead (the
// keep-alive thread is running); false: someone else holds the key.
Result<bool> LeaderElection::TryOnce(Deadline deadline) {
  Clock::time_point granted_at = Clock::now();  // the lease runs at least ttl from here
  WEFT_ASSIGN_OR_RETURN(LeaseId lease, directory_.Grant(options_.ttl, CallDeadline(directory_, deadline)));
  auto won = directory_.PutIfAbsent(options_.key, options_.value, lease, CallDeadline(directory_, deadline));
  if (won.ok() && *won) {
    std::lock_guard lock(mu_);
    lease_ = lease;
    leading_ = true;
    quitting_ = false;
    keeper_ = std::thread([this, granted_at] {
      BlockSigpipeInThisThread();  // renewals over HTTP (http_call.h)
      KeepLeading(granted_at);
    });
    return true;
  }
  // Not ours (or not known to be): give the lease back so it cannot hold the key later. If even
  // that fails the lease expires after the ttl, taking with it anything it holds.
  (void)directory_.Revoke(lease, CallDeadline(directory_, Deadline::After(options_.ttl)));
  if (!won.ok()) return won.status();
  return false;
}

// Until the key is deleted (watch), half a ttl passes (the poll), the deadline, or Stop().
void LeaderElection::WaitForVacancy(Deadline deadline) {
  Deadline poll = Sooner(deadline, Deadline::After(options_.ttl / 2));
  std::unique_lock lock(mu_);
  cv_.wait_until(lock, poll.at(), [&] { return vacancy_ || stop_; });
}

// The keep-alive thread: renews every ttl/3 until Resign or destruction; calls on_lost once
// when the lease is gone or could not be renewed within a ttl. last_ok starts as the time the
// lease was asked for, the earliest its ttl can count from.
void LeaderElection::KeepLeading(Clock::time_point last_ok) {
  while (true) {
    SleepUnlessStopping(options_.ttl / 3);
    {
      std::lock_guard lock(mu_);
      if (quitting_) return;
    }
    Status why;
    if (RenewOnce(last_ok, why)) continue;
    {
      std::lock_guard lock(mu_);
      if (quitting_) return;  // resigning anyway: not a loss to report
      leading_ = false;
    }
    WEFT_LOG_ERROR("leader election '{}': leadership lost: {}", options_.key, why.ToString());
    if (options_.on_lost) options_.on_lost(why);
    return;
  }
}

// One renewal, retried until it succeeds (true), the lease is known gone or a ttl has passed
// since the last renewal we sent (false, with why), or the thread is told to quit (true; the
// caller looks). last_ok is when the last successful renewal was sent: the directory received
// it later, so its expiry of the lease is never before last_ok + ttl; giving up at that point
// means we stop leading no later than a successor could start.
bool LeaderElection::RenewOnce(Clock::time_point& last_ok, Status& why) {
  LeaseId lease;
  {
    std::lock_guard lock(mu_);
    lease = lease_;
  }
  Status last = OkStatus();
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (quitting_) return true;
    }
    Deadline lease_end(last_ok + options_.ttl);
    if (lease_end.expired()) {
      why = Error(Code::kTimeout,
                  "no keep-alive of the lease holding '{}' in {} succeeded within its ttl of {} ms (last error: {})",
                  options_.key, directory_.Describe(), options_.ttl.count(), last.ToString());
      return false;
    }
    Clock::time_point sent = Clock::now();
    Status s = directory_.KeepAlive(lease, lease_end);
    if (s.ok()) {
      last_ok = sent;
      return true;
    }
    if (s.code() == Code::kNotFound) {
      why = Error(Code::kNotFound, "the lease holding '{}' in {} is gone (expired or revoked): {}", options_.key,
                  directory_.Describe(), s.ToString());
      return false;
    }
    last = s;
    SleepUnlessStopping(std::max(options_.ttl / 10, milliseconds(10)));
  }
}

void LeaderElection::SleepUnlessStopping(milliseconds for_how_long) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, for_how_long, [&] { return quitting_; });
}

Status LeaderElection::Publish(const std::string& value) {
  LeaseId lease;
  {
    std::lock_guard lock(mu_);
    if (!leading_) return Error(Code::kUnavailable, "not the leader of '{}': nothing to publish", options_.key);
    lease = lease_;
  }
  return directory_.Put(options_.key, value, lease).Annotate("publishing the leader's address under " + options_.key);
}

Status LeaderElection::Resign() {
  std::thread keeper;
  LeaseId lease;
  {
    std::lock_guard lock(mu_);
    quitting_ = true;
    cv_.notify_all();
    keeper = std::move(keeper_);
    lease = std::exchange(lease_, 0);
    leading_ = false;
  }
  if (keeper.joinable()) keeper.join();
  if (lease == 0) return OkStatus();
  Status s = directory_.Revoke(lease);
  // Already gone (it expired, or someone revoked it): the key is deleted either way.
  if (s.code() == Code::kNotFound) return OkStatus();
  return s.Annotate("resigning the leadership of " + options_.key);
}

void LeaderElection::Stop() {
  std::lock_guard lock(mu_);
  stop_ = true;
  cv_.notify_all();
}

bool LeaderElection::leading() const {
  std::lock_guard lock(mu_);
  return leading_;
}

LeaseId LeaderElection::lease() const {
  std::lock_guard lock(mu_);
  return leading_ ? lease_ : 0;
}

Result<std::string> ResolveLeader(Directory& directory, const std::string& key, Deadline deadline) {
  // The usual case, a leader that has published, needs no watch.
  auto now = directory.Get(key, CallDeadline(directory, deadline));
  if (now.ok() && !now->empty()) return *now;
  // Declared before the watch, so the watch (and its callback) goes first.
  std::mutex mu;
  std::condition_variable cv;
  bool changed = false;
  auto watch = directory.Watch(
      key,
      [&](const WatchEvent& e) {
        if (e.key != key) return;
        std::lock_guard lock(mu);
        changed = true;
        cv.notify_all();
      },
      CallDeadline(directory, deadline));
  Status last = OkStatus();  // the last read error, for the message
  while (true) {
    auto got = directory.Get(key, CallDeadline(directory, deadline));
    if (got.ok() && !got->empty()) return *got;
    if (!got.ok() && got.status().code() != Code::kNotFound) last = got.status();
    if (deadline.expired()) {
      return Error(Code::kTimeout, "no leader is elected: key '{}' in {} {}", key, directory.Describe(),
                   last.ok() ? "holds no address" : "could not be read: " + last.ToString());
    }
    std::unique_lock lock(mu);
    cv.wait_until(lock, Sooner(deadline, Deadline::After(kResolvePoll)).at(), [&] { return changed; });
    changed = false;
  }
}

bool IsElectedCoordinator(std::string_view address) { return address.starts_with("etcd://"); }

Result<std::string> ResolveCoordinator(const std::string& address, const std::string& pool_name, Deadline deadline) {
  WEFT_ASSIGN_OR_RETURN(auto directory, OpenDirectory(address));
  auto leader = ResolveLeader(*directory, LeaderKey(pool_name), deadline);
  if (!leader.ok()) return leader.status().Annotate("finding the coordinator of pool '" + pool_name + "'");
  return leader;
}

}  // namespace weft::meta
