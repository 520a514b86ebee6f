#include "tools/weft/soak_run.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <set>
#include <thread>

#include <fmt/format.h>

#include <weft/pool.h>

#include "base/random.h"
#include "tools/weft/soak_report.h"
#include "tools/weft/soak_worker.h"

extern char** environ;

namespace weft::tools::soak {
namespace {

using Clock = std::chrono::steady_clock;

bool Joined(const std::vector<uint32_t>& live, uint32_t peers) { return live.size() >= peers; }

// The pool's config: the same here and (through the environment) in every peer.
Config PhaseConfig(const SoakSettings& s, const std::string& transport, const BoardHeader& h) {
  Config c;
  if (auto loaded = LoadConfig(); loaded.ok()) c = *loaded;  // WEFT_* of the caller, then ours
  c.pool_name = fmt::format("soak-{}-{}", getpid(), transport);
  c.rank_size = (SliceBytes(h) + (1 << 20) - 1) / (1 << 20) * (1 << 20);
  c.deadline_ms = s.deadline_ms;
  c.heartbeat_ms = 200;
  c.peer_timeout_ms = s.peer_timeout_ms;
  c.max_ranks = kMaxRanks;
  c.peer_name = "soak-0";
  c.log_level = "error";  // every kill is a warning on every peer: the report counts them instead
  c.transport = transport == "shm" ? "auto" : transport;
  if (transport == "shm") {
    c.coordinator = fmt::format("/tmp/weft-{}.sock", c.pool_name);
  } else {
    c.cluster_secret = fmt::format("{:016x}{:016x}", FreshSeed(), FreshSeed());
    c.coordinator = "tcp://127.0.0.1:0";
    c.data_address = "127.0.0.1:0";
  }
  return c;
}

// Our environment without the keys we set, then ours: getenv takes the first match.
std::vector<std::string> PeerEnv(const std::vector<std::string>& ours) {
  std::set<std::string> keys;
  for (const auto& e : ours) keys.insert(e.substr(0, e.find('=')));
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (!keys.count(kv.substr(0, kv.find('=')))) env.push_back(kv);
  }
  env.insert(env.end(), ours.begin(), ours.end());
  return env;
}

std::vector<std::string> CommonEnv(const Config& c, const std::string& coordinator) {
  std::vector<std::string> env = {
      "WEFT_POOL_NAME=" + c.pool_name,           "WEFT_COORDINATOR=" + coordinator,
      "WEFT_RANK_SIZE=" + std::to_string(c.rank_size), "WEFT_DEADLINE_MS=" + std::to_string(c.deadline_ms),
      "WEFT_HEARTBEAT_MS=" + std::to_string(c.heartbeat_ms),
      "WEFT_PEER_TIMEOUT_MS=" + std::to_string(c.peer_timeout_ms),
      "WEFT_MAX_RANKS=" + std::to_string(c.max_ranks), "WEFT_TRANSPORT=" + c.transport,
      "WEFT_LOG_LEVEL=warn",  // into the peer's log file
  };
  if (!c.cluster_secret.empty()) env.push_back("WEFT_CLUSTER_SECRET=" + c.cluster_secret);
  if (c.transport == "ucx" && !getenv("UCX_TLS")) env.push_back("UCX_TLS=tcp");
  return env;
}

std::string SelfPath() {
  // Under `ip netns exec` a literal /proc/self/exe would name `ip` itself.
  char self[4096] = {};
  if (readlink("/proc/self/exe", self, sizeof self - 1) <= 0) std::strcpy(self, "/proc/self/exe");
  return self;
}

// Waits for every peer to join, failing early (with its log) when one ends first.
Status WaitForPeers(bm::Pool& pool, PeerSet& peers, uint32_t count) {
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (!Joined(pool.LiveRanks(), count)) {
    for (uint32_t s = 1; s < count; ++s) {
      if (auto how = peers.EndedBySelf(s))
        return Error(Code::kUnavailable, "peer {} {} before joining; see {}", s, *how, peers.LogPath(s));
    }
    if (Clock::now() > until)
      return Error(Code::kTimeout, "only {} of {} peers joined within 60 s", pool.LiveRanks().size(), count);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return OkStatus();
}

// Every worker of every running peer idle, or the bound passed.
void WaitIdle(const Board& board, uint32_t ms) {
  const auto until = Clock::now() + std::chrono::milliseconds(ms);
  for (;;) {
    bool busy = false;
    for (uint32_t s = 0; s < board.header.slots; ++s) {
      if (board.slot[s].state.load() != static_cast<uint32_t>(SlotState::kJoined)) continue;
      for (uint32_t t = 0; t < board.header.threads; ++t) busy |= board.slot[s].workers[t].busy_since_ns.load() != 0;
    }
    if (!busy || Clock::now() > until) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::vector<std::string> MismatchNotes(const Board& board) {
  std::vector<std::string> out;
  for (uint32_t s = 0; s < board.header.slots; ++s)
    for (uint32_t t = 0; t < board.header.threads; ++t)
      if (board.slot[s].workers[t].note_seq.load() > 0) out.emplace_back(board.slot[s].workers[t].note);
  return out;
}

// How a slot's peer is started: its argv (under `ip netns exec` in a namespace of its own) and
// its environment, which carries the pool's config.
struct PeerLaunch {
  std::vector<std::string> common;  // CommonEnv
  std::string self;                 // this binary
  const NetnsTopology* topology;    // null: no namespaces
  std::string transport;
  uint64_t seed;

  std::vector<std::string> Command(uint32_t slot) const {
    std::vector<std::string> args;
    if (topology) args = {"ip", "netns", "exec", topology->Namespace(static_cast<int>(slot) + 1)};
    for (std::string a : {self, std::string("soak-peer"), std::string("--slot"), std::to_string(slot),
                          std::string("--seed"), std::to_string(seed ^ (slot * 0x5851f42dull))})
      args.push_back(a);
    return args;
  }
  std::vector<std::string> Env(uint32_t slot) const {
    std::vector<std::string> mine = common;
    mine.push_back(fmt::format("WEFT_PEER_NAME=soak-{}", slot));
    const std::string host = topology ? topology->Address(static_cast<int>(slot) + 1) : "127.0.0.1";
    if (transport != "shm") mine.push_back("WEFT_DATA_ADDRESS=" + host + ":0");
    return PeerEnv(mine);
  }
};

void MarkJoined(SlotRecord& rec, uint32_t rank) {
  rec.rank.store(static_cast<int32_t>(rank));
  rec.joins.fetch_add(1);
  rec.state.store(static_cast<uint32_t>(SlotState::kJoined));
}

struct Network {
  std::unique_ptr<NetnsTopology> topology;
  std::string where = "this host";
};

// tcp/ucx with --netns: the peers in namespaces of their own, this thread in host 1's.
Network PlaceNetwork(const SoakSettings& s, const std::string& transport, Config& c) {
  Network n;
  if (transport == "shm") return n;
  n.where = "loopback";
  if (!s.netns) return n;
  if (transport == "ucx") {
    // This thread would enter host 1's namespace with setns(), which leaves /sys as it was:
    // UCX, finding interfaces there, would offer the peers only addresses they cannot reach
    // (docs/ucx.md, "Which interfaces").
    n.where = "loopback (ucx: the driver cannot enter a namespace with UCX seeing its interfaces)";
    return n;
  }
  auto made = NetnsTopology::Create(static_cast<int>(s.peers), "ws");
  Status entered = made.ok() ? (*made)->Enter(1) : made.status();
  if (!entered.ok()) {
    n.where = fmt::format("loopback (no network namespaces: {})", entered.message());
    return n;
  }
  n.topology = std::move(*made);
  c.coordinator = "tcp://" + n.topology->Address(1) + ":0";
  c.data_address = n.topology->Address(1) + ":0";
  n.where = fmt::format("{} network namespaces joined by veth", s.peers);
  return n;
}

}  // namespace

bool PhaseResult::ok() const {
  return setup_error.empty() && totals.mismatches == 0 && hangs.empty() && chaos.unanswered == 0 &&
         chaos.crashes == 0 && chaos.probe_mismatches == 0 && end_problems.empty();
}

void SoakLeftovers::Remove() {
  children.KillAll();
  std::lock_guard lock(mu);
  if (topology) topology->Remove();
  if (!socket_path.empty()) unlink(socket_path.c_str());
}

// The body of a phase once the pool and the peers are up.
static void Drive(const SoakSettings& s, const std::string& transport, bm::Pool& pool, BoardMapping& bm,
                  PeerSet& peers, const NetnsTopology* topology, PhaseResult& r,
                  const std::function<void(const std::string&)>& progress) {
  Board& board = bm.board();
  std::atomic<bool> stop_chaos{false}, stop_watch{false};
  ChaosOptions co{s.chaos_interval_ms, s.recovery_ms, s.peer_timeout_ms, s.seed ^ 0xc4a05};
  Chaos chaos(pool, board, peers, topology, co);
  Watchdog watchdog(board, s.hang_margin_ms);
  std::vector<std::thread> workers;
  for (uint32_t t = 0; t < s.threads; ++t)
    workers.emplace_back([&, t] { RunWorker(pool, board, 0, t, s.seed ^ (0x9e37ull * (t + 1))); });
  std::thread watch([&] { watchdog.Run(stop_watch); });
  std::thread chaos_thread([&] { chaos.Run(stop_chaos); });

  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  double next_progress = s.progress_s;
  while (elapsed() < s.seconds) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (s.progress_s > 0 && elapsed() >= next_progress) {
      next_progress += s.progress_s;
      progress(ProgressLine(transport, elapsed(), Sum(board), chaos.report(), watchdog.hangs().size()));
    }
  }
  stop_chaos = true;
  chaos_thread.join();  // after the last fault was answered
  board.header.phase.store(1);
  WaitIdle(board, s.deadline_ms + s.hang_margin_ms + 2000);
  watchdog.Scan();
  // A worker of ours still in its op by now is a hang (counted above) that may never return:
  // it is left behind rather than waited for, so that the report still comes out.
  for (uint32_t t = 0; t < s.threads; ++t) r.driver_stuck |= board.slot[0].workers[t].busy_since_ns.load() != 0;
  for (auto& w : workers) r.driver_stuck ? w.detach() : w.join();
  stop_watch = true;
  watch.join();
  r.seconds = elapsed();
  board.header.phase.store(2);
  r.end_problems = peers.WaitAll(static_cast<int>(s.deadline_ms) + 20000);
  r.totals = Sum(board);
  r.chaos = chaos.report();
  r.hangs = watchdog.hangs();
  r.mismatch_notes = MismatchNotes(board);
}

PhaseResult RunPhase(const SoakSettings& s, const std::string& transport, SoakLeftovers& leftovers,
                     const std::function<void(const std::string&)>& progress) {
  PhaseResult r;
  r.transport = transport;
  auto bm = BoardMapping::Create(s.peers, s.threads, s.max_op, s.deadline_ms);
  if (!bm.ok()) {
    r.setup_error = bm.status().ToString();
    return r;
  }
  bm->board().header.defect = s.defect;
  bm->board().header.defect_sleep_ms = s.deadline_ms + s.hang_margin_ms + 1000;
  Config c = PhaseConfig(s, transport, bm->board().header);
  Network net = PlaceNetwork(s, transport, c);
  r.where = net.where;
  {
    std::lock_guard lock(leftovers.mu);
    leftovers.topology = net.topology.get();
    if (transport == "shm") leftovers.socket_path = c.coordinator;
  }
  struct Forget {  // the signal thread must not reach the namespaces once they are gone
    SoakLeftovers& l;
    ~Forget() {
      std::lock_guard lock(l.mu);
      l.topology = nullptr;
      l.socket_path.clear();
    }
  } forget{leftovers};
  auto pool = bm::Pool::Join(c, bm::JoinMode::kHost);
  if (!pool.ok()) {
    r.setup_error = "cannot host the pool: " + pool.status().ToString();
    return r;
  }
  Board& board = bm->board();
  MarkJoined(board.slot[0], (*pool)->rank());
  const PeerLaunch launch{CommonEnv(c, (*pool)->coordinator_address()), SelfPath(), net.topology.get(), transport,
                          s.seed};
  auto command = [&launch](uint32_t slot) { return launch.Command(slot); };
  auto env = [&launch](uint32_t slot) { return launch.Env(slot); };
  PeerSet peers(board, bm->fd(), s.log_dir, command, env, leftovers.children);
  for (uint32_t slot = 1; slot < s.peers; ++slot) {
    if (Status st = peers.Start(slot); !st.ok()) {
      r.setup_error = st.ToString();
      return r;
    }
  }
  if (Status st = WaitForPeers(**pool, peers, s.peers); !st.ok()) {
    r.setup_error = st.ToString();
    return r;
  }
  progress(fmt::format("weft soak [{}]: {} peers x {} threads on {}, coordinator {}; running {:.0f} s", transport,
                       s.peers, s.threads, r.where, (*pool)->coordinator_address(), s.seconds));
  Drive(s, transport, **pool, *bm, peers, net.topology.get(), r, progress);
  if (r.driver_stuck) {
    (void)pool->release();  // a stuck worker still uses it; the process ends after the report
    return r;
  }
  (void)(*pool)->Leave();
  return r;
}

// A peer whose driver died (it is the driver's child, under `ip netns exec` too) would wait for
// the leave signal forever: it ends itself instead.
void EndWithDriver() {
  const pid_t driver = getppid();
  std::thread([driver] {
    while (getppid() == driver) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    _exit(3);
  }).detach();
}

int RunSoakPeer(uint32_t slot, uint64_t seed) {
  EndWithDriver();
  // A frozen peer (SIGSTOP, a chaos fault) gets SIGHUP from the kernel if the driver's process
  // group becomes orphaned meanwhile (its shell went away): that is no fault of the peer's, and
  // counted as a crash it failed a run. The driver ends peers with SIGKILL, or they see it gone.
  signal(SIGHUP, SIG_IGN);
  auto bm = BoardMapping::Map(kBoardFd);
  if (!bm.ok()) {
    fmt::print(stderr, "weft soak-peer {}: {}\n", slot, bm.status().ToString());
    return 2;
  }
  Board& board = bm->board();
  auto config = LoadConfig();
  if (!config.ok() || slot == 0 || slot >= board.header.slots) {
    fmt::print(stderr, "weft soak-peer {}: {}\n", slot, config.ok() ? "no such slot" : config.status().ToString());
    return 2;
  }
  SlotRecord& rec = board.slot[slot];
  // The previous incarnation may not be declared gone yet (its name is then still in use).
  Result<std::unique_ptr<bm::Pool>> pool = Error(Code::kUnavailable, "not tried");
  const auto until = Clock::now() + std::chrono::seconds(60);
  while (!(pool = bm::Pool::Join(*config, bm::JoinMode::kJoin)).ok() && Clock::now() < until) {
    fmt::print(stderr, "weft soak-peer {}: join: {}; retrying\n", slot, pool.status().ToString());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (!pool.ok()) return 1;
  MarkJoined(rec, (*pool)->rank());
  const uint64_t incarnation = rec.incarnation.load();
  std::vector<std::thread> workers;
  for (uint32_t t = 0; t < board.header.threads; ++t)
    workers.emplace_back([&, t] { RunWorker(**pool, board, slot, t, seed ^ (incarnation << 32) ^ (t + 1)); });
  for (auto& w : workers) w.join();
  while (board.header.phase.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Status left = (*pool)->Leave();
  rec.state.store(static_cast<uint32_t>(SlotState::kDone));
  if (!left.ok()) fmt::print(stderr, "weft soak-peer {}: leave: {}\n", slot, left.ToString());
  return left.ok() ? 0 : 1;
}

}  // namespace weft::tools::soak
