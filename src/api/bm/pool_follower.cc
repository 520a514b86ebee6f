// The coordinator connection of a Pool, and following an elected (etcd://) coordinator through
// a failover: the follower thread notices a lost connection, resolves the new leader and rejoins
// it under the same peer name, rank and slices.
#include <algorithm>
#include <optional>

#include "api/bm/pool_impl.h"
#include "base/log.h"
#include "meta/leader_election.h"
#include "net/control_stream.h"

namespace weft::bm {

// ---- The coordinator connection, and following an elected coordinator ----

Result<std::shared_ptr<meta::CoordinatorClient>> Pool::Impl::Client() const {
  std::lock_guard lock(client_mu);
  if (client) return client;
  if (client_gone.ok()) return Error(Code::kUnavailable, "not joined to a coordinator");
  return client_gone;
}

void Pool::Impl::InstallClient(std::shared_ptr<meta::CoordinatorClient> fresh, const std::string& address) {
  std::lock_guard lock(client_mu);
  client = std::move(fresh);
  client_gone = OkStatus();
  coordinator_address = address;
  joined_addresses.push_back(address);
}

// The old client is destroyed (it leaves, and its threads stop) once the last call holding a
// snapshot of it returns, never under client_mu.
void Pool::Impl::DropClient(Status why) {
  std::shared_ptr<meta::CoordinatorClient> old;
  {
    std::lock_guard lock(client_mu);
    old = std::move(client);
    client.reset();
    client_gone = std::move(why);
  }
}

namespace {
// How often the follower looks at the connection: cheap (two mutexes), and a failover is
// noticed well within the heartbeat-based peer timeout anyway.
constexpr Millis kWatchPeriod{50};
constexpr Millis kFirstBackoff{100};
constexpr Millis kMaxBackoff{2000};
// One attempt's resolve or join waits at most this (or deadline_ms, if shorter), so that Leave,
// which waits for the attempt in flight, is not held for long.
constexpr Millis kMaxAttempt{5000};
}  // namespace

Deadline Pool::Impl::AttemptDeadline() const {
  return Deadline::After(std::min<Millis>(Millis(config.deadline_ms), kMaxAttempt));
}

// Only pools of an elected (etcd://) coordinator follow it: there, the new leader restores the
// old one's pool and holds our rank for us. A unix or plain tcp:// coordinator that restarts has
// lost every allocation, so rejoining it would hand out live memory twice: those pools stay
// disconnected (control calls fail with UNAVAILABLE) as before. One thread does the watching and
// every attempt in turn, with backoff, rather than a thread per attempt or a callback on the
// client's receive thread (which a rejoin destroys).
void Pool::Impl::StartFollowing() {
  rejoins = metrics.counter("weft_pool_coordinator_rejoins_total",
                            "Times this peer rejoined a new elected coordinator at its rank after a failover");
  rejoin_failures = metrics.counter("weft_pool_coordinator_rejoin_failures_total",
                                    "Failed attempts to rejoin the elected coordinator (no leader yet, join refused "
                                    "or timed out, another rank given)");
  follower = std::thread([this] { FollowLeader(); });
}

void Pool::Impl::StopFollowing() {
  {
    std::lock_guard lock(follow_mu);
    follow_stop = true;
  }
  follow_cv.notify_all();
  if (follower.joinable()) follower.join();
}

bool Pool::Impl::Stopping() {
  std::lock_guard lock(follow_mu);
  return follow_stop;
}

// False when Leave asked the follower to stop.
bool Pool::Impl::SleepUnlessStopping(Millis how_long) {
  std::unique_lock lock(follow_mu);
  return !follow_cv.wait_for(lock, how_long, [&] { return follow_stop; });
}

void Pool::Impl::FollowLeader() {
  while (SleepUnlessStopping(kWatchPeriod)) {
    std::shared_ptr<meta::CoordinatorClient> current;
    {
      std::lock_guard lock(client_mu);
      current = client;
    }
    if (!current) return;  // given up
    if (current->reachable()) continue;
    // A coordinator that is only silent may still lead (stopped for a moment): leaving it would
    // free our allocations there, so it is left only once another master leads.
    const bool closed = !current->connected();
    if (!closed && !LeaderMoved()) continue;
    current.reset();
    const char* why = closed ? "the connection closed" : "it stopped answering and another master leads now";
    if (!Rejoin(Status(Code::kUnavailable, why))) return;
  }
}

bool Pool::Impl::LeaderMoved() {
  auto leader = ResolveLeader(Deadline::After(Millis(config.peer_timeout_ms)));
  return leader.ok() && *leader != coordinator_address;
}

// The elected master's tcp:// address, waiting for one to lead and publish it.
Result<std::string> Pool::Impl::ResolveLeader(Deadline deadline) const {
  WEFT_ASSIGN_OR_RETURN(std::string leader,
                        meta::ResolveCoordinator(config.CoordinatorPath(), config.pool_name, deadline));
  if (!leader.starts_with(net::kTcpScheme)) {
    return Error(Code::kProtocol, "the leader of pool '{}' published '{}', not a tcp:// address", config.pool_name,
                 leader);
  }
  return leader;
}

// Rejoins until it works, the pool leaves (false) or the rank cannot be had back within
// deadline_ms (false: given up). Meanwhile control calls fail with UNAVAILABLE at once rather
// than wait: the failover takes about the leader's lease, longer than most calls' deadlines,
// and a caller that retries sees when it is over.
bool Pool::Impl::Rejoin(const Status& why_lost) {
  WEFT_LOG_WARN("pool '{}' rank {}: lost the coordinator {} ({}); following the elected leader in {}",
                config.pool_name, rank, coordinator_address, why_lost.message(), config.CoordinatorPath());
  DropClient(Error(Code::kUnavailable,
                   "pool '{}' is failing over to a new coordinator (the connection to {} was lost); control calls "
                   "work again once this peer has rejoined (copies between live peers work meanwhile)",
                   config.pool_name, coordinator_address));
  std::optional<Clock::time_point> wrong_rank_since;
  for (Millis backoff = kFirstBackoff; !Stopping(); backoff = std::min(backoff * 2, kMaxBackoff)) {
    Status s = RejoinOnce();
    if (s.ok()) {
      rejoins->Add();
      WEFT_LOG_INFO("pool '{}': rejoined the coordinator {} as rank {}", config.pool_name, coordinator_address, rank);
      return true;
    }
    rejoin_failures->Add();
    if (s.code() == Code::kMismatch) {
      if (!wrong_rank_since) wrong_rank_since = Clock::now();
      if (Clock::now() - *wrong_rank_since >= Millis(config.deadline_ms)) {
        GiveUp(s);
        return false;
      }
    }
    WEFT_LOG_WARN("pool '{}' rank {}: rejoining failed, retrying in {} ms: {}", config.pool_name, rank,
                  backoff.count(), s.ToString());
    if (!SleepUnlessStopping(backoff)) break;
  }
  return false;
}

// One attempt: the leader resolved, joined as ourselves (same name, same slices and blobs), our
// rank checked, our slices re-added. A client given another rank is left at once (destroyed):
// with another rank our slice would sit at another GVA, and every GVA handed out so far would
// name someone else's memory.
Status Pool::Impl::RejoinOnce() {
  WEFT_ASSIGN_OR_RETURN(std::string leader, ResolveLeader(AttemptDeadline()));
  WEFT_LOG_INFO("pool '{}' rank {}: the elected coordinator is {}; rejoining as '{}'", config.pool_name, rank, leader,
                peer_name);
  const uint64_t gen = NextGeneration();
  auto joined = JoinAt(leader, /*coordinator_on_tcp=*/true, /*device_fd=*/-1, gen);
  if (!joined.ok()) return joined.status().Annotate("joining " + leader);
  std::shared_ptr<meta::CoordinatorClient> fresh = std::move(*joined);
  if (fresh->rank() != rank) {
    NextGeneration();  // what it announced is not ours to apply
    WEFT_LOG_ERROR("pool '{}': the coordinator {} gave this peer ('{}') rank {}, not its rank {}; leaving it (our "
                   "slice's GVAs would change)",
                   config.pool_name, leader, peer_name, fresh->rank(), rank);
    return Error(Code::kMismatch, "the coordinator {} gave rank {} instead of rank {}", leader, fresh->rank(), rank);
  }
  WEFT_RETURN_IF_ERROR(AddOwnSlices(*fresh, AttemptDeadline()));
  InstallClient(std::move(fresh), leader);
  return OkStatus();
}

// The pool cannot go on at another rank: control calls fail with MISMATCH from now on (copies
// between still-attached peers go on until they leave).
void Pool::Impl::GiveUp(const Status& why) {
  Status failed = Error(Code::kMismatch,
                        "pool '{}' gave up following its elected coordinator: rank {} was not given back to '{}' "
                        "within deadline_ms ({} ms) ({}); leave this pool and join again",
                        config.pool_name, rank, peer_name, config.deadline_ms, why.message());
  WEFT_LOG_ERROR("{}", failed.message());
  std::lock_guard lock(client_mu);
  client_gone = std::move(failed);
}

}  // namespace weft::bm
