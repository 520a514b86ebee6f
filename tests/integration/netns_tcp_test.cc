// The TCP data plane across "hosts": network namespaces joined by veth pairs to a bridge that
// lives in a namespace of its own. Addresses are 10.77.1.0/24 and exist only inside the
// namespaces this test creates (and removes in TearDown); the host's own interfaces are never
// touched. The server runs as a forked process inside ns1 (setns before it makes any socket);
// clients run on threads that setns into ns2 or ns3 before they make theirs.
//
// Needs root and `ip netns`; otherwise the tests skip with the reason, except on CI (CI=true)
// where a missing capability is a failure.
//
// The membership tests run whole pools whose coordinator is on tcp (tcp://host:port): a host
// peer and peer processes in three namespaces (or, without root, all on loopback so CI always
// covers the tcp coordinator). A peer is killed (or its link taken down), the others must see it
// gone and get PEER_DOWN for copies to it; a restart under the same peer_name must get the same
// rank back, and fresh random data copied to it is compared byte for byte.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <weft/pool.h>

#include "base/random.h"
#include "netns_hosts.h"
#include "integration/peer_process.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_client.h"
#include "transport/tcp/tcp_server.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "netns-test-secret-0d9c";
constexpr uint32_t kSeg = 1;
constexpr uint64_t kKey = 0x5eed5eed1234ull;
constexpr uint64_t kSegSize = 96ull << 20;

using weft::testing::OnCi;
using weft::testing::Sh;

class NetnsTcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = hosts_.Build(3);
    if (!why.empty()) {
      hosts_.Cleanup();
      if (OnCi()) FAIL() << why;
      GTEST_SKIP() << why;
    }
  }

  void TearDown() override {
    StopServer();
    Cleanup();
  }

  std::string Ns(int i) const { return hosts_.Ns(i); }
  std::string If(int i) const { return hosts_.If(i); }
  std::string Ip(int i) const { return hosts_.Ip(i); }
  void Cleanup() { hosts_.Cleanup(); }

  static bool EnterNetns(const std::string& ns) {
    std::string path = "/var/run/netns/" + ns;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
  }

  // Forks the server into ns1. The parent has no threads at this point (each test starts its
  // client threads only after this), so the child may safely start its own.
  void StartServer() {
    int ports[2];
    ASSERT_EQ(::pipe(ports), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ports[0]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (!EnterNetns(Ns(1))) _exit(3);
      auto* mem = static_cast<uint8_t*>(std::aligned_alloc(4096, kSegSize));
      std::memset(mem, 0, kSegSize);
      AccessTable table;
      if (!table.Register({kSeg, mem, kSegSize, kKey, mem::kReadWrite}).ok()) _exit(4);
      TcpServerOptions o;
      o.host = Ip(1);
      o.auth.cluster_secret = kSecret;
      o.threads = 2;
      o.stall_timeout_ms = 3000;
      auto server = TcpServer::Start(o, &table);
      if (!server.ok()) _exit(5);
      uint16_t port = (*server)->port();
      if (::write(ports[1], &port, sizeof port) != sizeof port) _exit(6);
      for (;;) ::pause();  // until the parent kills us
    }
    ::close(ports[1]);
    server_pid_ = pid;
    uint16_t port = 0;
    ssize_t n = ::read(ports[0], &port, sizeof port);
    ::close(ports[0]);
    ASSERT_EQ(n, static_cast<ssize_t>(sizeof port)) << "the server process did not start";
    peer_ = PeerAddr{Ip(1), port};
  }

  void StopServer() {
    if (server_pid_ > 0) {  // never kill(0) or kill(-1)
      ::kill(server_pid_, SIGKILL);
      ::waitpid(server_pid_, nullptr, 0);
      server_pid_ = -1;
    }
  }

  // Runs fn on a new thread inside namespace ns; joins it.
  void InNetns(int ns, const std::function<void()>& fn) {
    std::thread t([&] {
      if (!EnterNetns(Ns(ns))) {
        ADD_FAILURE() << "setns into " << Ns(ns) << " failed";
        return;
      }
      fn();
    });
    t.join();
  }

  static std::unique_ptr<TcpClient> Client() {
    TcpClientOptions o;
    o.auth.cluster_secret = kSecret;
    o.lanes = 4;
    o.connect_timeout_ms = 2000;
    return std::make_unique<TcpClient>(o);
  }

  // Writes fresh random bytes at off and reads them back; both checked byte for byte.
  static void WriteReadBack(TcpClient& c, const PeerAddr& peer, uint64_t off, uint64_t len, int deadline_ms = 30000) {
    SCOPED_TRACE(::testing::Message() << "len " << len << " off " << off);
    std::vector<uint8_t> src(len), dst(len + 16, 0x5A);
    const uint64_t seed = FreshSeed();
    FillRandom(src.data(), len, seed);
    Status w = c.Write(peer, kSeg, kKey, off, src.data(), len, Deadline::After(Millis(deadline_ms)));
    ASSERT_TRUE(w.ok()) << w.ToString();
    Status r = c.Read(peer, kSeg, kKey, off, dst.data(), len, Deadline::After(Millis(deadline_ms)));
    ASSERT_TRUE(r.ok()) << r.ToString();
    ASSERT_FALSE(FirstMismatch(dst.data(), len, seed).has_value());
    for (int i = 0; i < 16; ++i) ASSERT_EQ(dst[len + i], 0x5A);
  }

  testing::NetnsHosts hosts_{"wt" + std::to_string(::getpid() % 100000), 77};
  pid_t server_pid_ = -1;
  PeerAddr peer_;
};

TEST_F(NetnsTcpTest, TransfersBetweenHostsAreExact) {
  StartServer();
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  const uint64_t shared_off = 80ull << 20, shared_len = (5 << 20) + 77;
  std::atomic<int> done{0};
  std::thread a([&] {
    InNetns(2, [&] {
      auto c = Client();
      std::mt19937_64 rng(FreshSeed());
      for (uint64_t len : {1ull, 4096ull, 65537ull, 1ull << 20, (7ull << 20) + 3, 16ull << 20}) {
        WriteReadBack(*c, peer_, rng() % ((40ull << 20) - len), len);
        if (::testing::Test::HasFatalFailure()) return;
      }
      std::vector<uint8_t> src(shared_len);
      FillRandom(src.data(), shared_len, seed);
      Status w = c->Write(peer_, kSeg, kKey, shared_off, src.data(), shared_len, Deadline::After(Millis(30000)));
      EXPECT_TRUE(w.ok()) << w.ToString();
      done++;
    });
  });
  std::thread b([&] {
    InNetns(3, [&] {
      auto c = Client();
      std::mt19937_64 rng(FreshSeed());
      for (uint64_t len : {3ull, 8191ull, (2ull << 20) + 1, 12ull << 20})
        WriteReadBack(*c, peer_, (40ull << 20) + rng() % ((38ull << 20) - len), len);
    });
  });
  a.join();
  b.join();
  ASSERT_EQ(done.load(), 1);
  // What ns2 wrote, ns3 reads.
  InNetns(3, [&] {
    auto c = Client();
    std::vector<uint8_t> dst(shared_len, 0x5A);
    Status r = c->Read(peer_, kSeg, kKey, shared_off, dst.data(), shared_len, Deadline::After(Millis(30000)));
    ASSERT_TRUE(r.ok()) << r.ToString();
    EXPECT_FALSE(FirstMismatch(dst.data(), shared_len, seed).has_value());
  });
}

TEST_F(NetnsTcpTest, LinkDownMidTransferFailsWithinDeadlineThenRecovers) {
  StartServer();
  if (HasFatalFailure()) return;
  std::atomic<bool> first_ok{false};
  Status failure;
  std::thread client([&] {
    InNetns(2, [&] {
      auto c = Client();
      std::vector<uint8_t> src(32 << 20);
      FillRandom(src.data(), src.size(), FreshSeed());
      for (int i = 0; i < 2000; ++i) {
        Status s = c->Write(peer_, kSeg, kKey, 0, src.data(), src.size(), Deadline::After(Millis(2000)));
        if (!s.ok()) {
          failure = s;
          return;
        }
        first_ok = true;
      }
    });
  });
  while (!first_ok) std::this_thread::sleep_for(Millis(5));
  std::string out;
  ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " down", &out), 0) << out;
  client.join();  // a hang here would be the bug
  EXPECT_TRUE(failure.code() == Code::kTimeout || failure.code() == Code::kPeerDown || failure.code() == Code::kIo)
      << failure.ToString();
  ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " up", &out), 0) << out;
  InNetns(2, [&] {
    auto c = Client();
    // The bridge port and the address come back within moments; allow a few tries.
    Status last;
    for (int i = 0; i < 50; ++i) {
      std::vector<uint8_t> probe(16);
      last = c->Read(peer_, kSeg, kKey, 0, probe.data(), probe.size(), Deadline::After(Millis(1000)));
      if (last.ok()) break;
      std::this_thread::sleep_for(Millis(100));
    }
    ASSERT_TRUE(last.ok()) << last.ToString();
    WriteReadBack(*c, peer_, 4096, (9 << 20) + 1);
  });
}

// A write that failed (its deadline passed while the link was down) must never land after a
// later write to the same bytes was reported done: the failed one's frames sit in the kernel's
// send queue and are retransmitted when the link comes back.
TEST_F(NetnsTcpTest, AWriteThatTimedOutNeverLandsOverALaterOne) {
  StartServer();
  if (HasFatalFailure()) return;
  InNetns(2, [&] {
    auto c = Client();
    const uint64_t len = 2 << 20;
    std::vector<uint8_t> a(len, 0xAA), b(len), got(len);
    WriteReadBack(*c, peer_, 0, len);
    if (::testing::Test::HasFatalFailure()) return;
    std::string out;
    ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " down", &out), 0) << out;
    Status failed = c->Write(peer_, kSeg, kKey, 0, a.data(), len, Deadline::After(Millis(600)));
    ASSERT_FALSE(failed.ok());
    ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " up", &out), 0) << out;
    const uint64_t seed = FreshSeed();
    FillRandom(b.data(), len, seed);
    Status w;
    for (int i = 0; i < 100; ++i) {
      w = c->Write(peer_, kSeg, kKey, 0, b.data(), len, Deadline::After(Millis(1000)));
      if (w.ok()) break;
      std::this_thread::sleep_for(Millis(50));
    }
    ASSERT_TRUE(w.ok()) << w.ToString();
    for (int round = 0; round < 8; ++round) {
      std::this_thread::sleep_for(Millis(500));
      Status r = c->Read(peer_, kSeg, kKey, 0, got.data(), len, Deadline::After(Millis(5000)));
      ASSERT_TRUE(r.ok()) << r.ToString();
      auto bad = FirstMismatch(got.data(), len, seed);
      ASSERT_FALSE(bad.has_value()) << "round " << round << ": byte " << *bad << " is " << int(got[*bad])
                                    << " (failed: " << failed.ToString() << ")";
    }
  });
}

TEST_F(NetnsTcpTest, LossAndDelayStillExact) {
  std::string out;
  if (Sh("ip netns exec " + Ns(1) + " tc qdisc add dev " + If(1) + " root netem loss 5% delay 20ms", &out) != 0)
    GTEST_SKIP() << "netem is not available (the sch_netem kernel module is needed): " << out;
  StartServer();
  if (HasFatalFailure()) return;
  InNetns(3, [&] {
    auto c = Client();
    for (uint64_t len : {1ull, 100000ull, 4ull << 20}) {
      std::vector<uint8_t> src(len), dst(len, 0x5A);
      const uint64_t seed = FreshSeed();
      FillRandom(src.data(), len, seed);
      Status w = c->Write(peer_, kSeg, kKey, 512, src.data(), len, Deadline::After(Millis(60000)));
      if (w.code() == Code::kTimeout) continue;  // a clean timeout is allowed on a lossy link
      ASSERT_TRUE(w.ok()) << w.ToString();
      Status r = c->Read(peer_, kSeg, kKey, 512, dst.data(), len, Deadline::After(Millis(60000)));
      if (r.code() == Code::kTimeout) continue;
      ASSERT_TRUE(r.ok()) << r.ToString();
      EXPECT_FALSE(FirstMismatch(dst.data(), len, seed).has_value());
    }
  });
}

TEST_F(NetnsTcpTest, ServerKilledMidTransfer) {
  StartServer();
  if (HasFatalFailure()) return;
  std::atomic<bool> first_ok{false};
  Status failure;
  std::thread client([&] {
    InNetns(3, [&] {
      auto c = Client();
      std::vector<uint8_t> buf(48 << 20);
      FillRandom(buf.data(), buf.size(), FreshSeed());
      for (int i = 0; i < 2000; ++i) {
        Status s = (i % 2) ? c->Read(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Deadline::After(Millis(10000)))
                           : c->Write(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Deadline::After(Millis(10000)));
        if (!s.ok()) {
          failure = s;
          return;
        }
        first_ok = true;
      }
    });
  });
  while (!first_ok) std::this_thread::sleep_for(Millis(5));
  std::this_thread::sleep_for(Millis(3));
  StopServer();  // SIGKILL to the server's own pid (> 0)
  client.join();
  EXPECT_TRUE(failure.code() == Code::kPeerDown || failure.code() == Code::kIo) << failure.ToString();
  // Later calls fail fast as well.
  InNetns(3, [&] {
    auto c = Client();
    std::vector<uint8_t> probe(16);
    Status s = c->Read(peer_, kSeg, kKey, 0, probe.data(), probe.size(), Deadline::After(Millis(10000)));
    EXPECT_TRUE(s.code() == Code::kPeerDown || s.code() == Code::kIo) << s.ToString();
  });
}

// ---------------------------------------------------------------------------------------------
// Membership over a tcp:// coordinator.

Deadline Generous() { return Deadline::After(std::chrono::seconds(20)); }
uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// Waits until pred(LiveRanks()) holds or the deadline passes.
template <typename Pred>
bool WaitLive(bm::Pool& pool, Deadline deadline, Pred pred) {
  while (!pred(pool.LiveRanks())) {
    if (deadline.expired()) return false;
    std::this_thread::sleep_for(Millis(10));
  }
  return true;
}

bool Has(const std::vector<uint32_t>& v, uint32_t r) { return std::find(v.begin(), v.end(), r) != v.end(); }

// Every other live rank: fresh random bytes written into its slice and read back, every byte
// compared. Returns the number of failures (printed).
int AllToAll(bm::Pool& pool, const std::vector<uint32_t>& ranks) {
  int failures = 0;
  for (uint32_t r : ranks) {
    if (r == pool.rank()) continue;
    for (uint64_t len : {1ull, 4097ull, (3ull << 20) + 5}) {
      auto gva = pool.Alloc(len + 64, Placement::OnRank(r));
      if (!gva.ok()) {
        fprintf(stderr, "rank %u: alloc on %u: %s\n", pool.rank(), r, gva.status().ToString().c_str());
        failures++;
        continue;
      }
      std::vector<uint8_t> src(len), back(len, 0x5A);
      const uint64_t seed = FreshSeed();
      FillRandom(src.data(), len, seed);
      const uint64_t at = *gva + seed % 64;  // unaligned on purpose
      Status w = pool.Copy(at, Addr(src.data()), len);
      Status b = pool.Copy(Addr(back.data()), at, len);
      if (!w.ok() || !b.ok() || FirstMismatch(back.data(), len, seed)) {
        fprintf(stderr, "rank %u -> %u (%llu bytes): %s / %s\n", pool.rank(), r, static_cast<unsigned long long>(len),
                w.ToString().c_str(), b.ToString().c_str());
        failures++;
      }
      if (!pool.Free(*gva).ok()) failures++;
    }
  }
  return failures;
}

// What each process of the scenario is.
enum class Role { kVictim, kSurvivor, kRestarted };

struct Site {
  std::function<bool()> enter;  // into this peer's "host" (namespace); true when there
  std::string ip;               // its data-plane address
};

struct MembershipPlan {
  std::string secret = "membership-" + std::to_string(FreshSeed());
  Config base;
  Site host, victim, survivor;
  // How the victim vanishes: SIGKILL (its connections close), or `cut` (take its link down:
  // half-open connections, noticed only by missed heartbeats) and then SIGKILL; `heal` undoes it.
  std::function<bool()> cut, heal;
};

Config PeerConfig(const MembershipPlan& plan, const std::string& url, const Site& site, const std::string& name) {
  Config c = plan.base;
  c.coordinator = url;
  c.cluster_secret = plan.secret;
  c.data_address = site.ip + ":0";
  c.peer_name = name;
  c.transport = "auto";  // a tcp:// coordinator switches it to tcp
  return c;
}

// Reads "url host_rank victim_rank" from the gate (written by the host once it knows them).
bool ReadGate(int fd, std::string* url, int* host_rank, int* victim_rank) {
  std::string text;
  char ch;
  while (::read(fd, &ch, 1) == 1 && ch != '\n') text.push_back(ch);
  char buf[256] = {};
  if (std::sscanf(text.c_str(), "%255s %d %d", buf, host_rank, victim_rank) != 3) return false;
  *url = buf;
  return true;
}

// The body of a forked peer process; returns its exit code (0 = every check passed).
int MemberBody(const MembershipPlan& plan, Role role, int gate) {
  std::string url;
  int host_rank = -1, victim_rank = -1;
  if (!ReadGate(gate, &url, &host_rank, &victim_rank)) return 2;
  const Site& site = role == Role::kSurvivor ? plan.survivor : plan.victim;
  if (!site.enter()) return 3;
  const std::string name = role == Role::kSurvivor ? "beta" : "alpha";
  Config config = PeerConfig(plan, url, site, name);
  Result<std::unique_ptr<bm::Pool>> joined = Status(Code::kInternal, "not joined");
  // A restart may come while the link is still settling; retry for a while.
  for (auto until = Generous(); !until.expired(); std::this_thread::sleep_for(Millis(200))) {
    joined = bm::Pool::Join(config, bm::JoinMode::kJoin);
    if (joined.ok() || role != Role::kRestarted) break;
  }
  if (!joined.ok()) {
    fprintf(stderr, "%s: join: %s\n", name.c_str(), joined.status().ToString().c_str());
    return 10;
  }
  bm::Pool& pool = **joined;
  auto route_ok = [&](uint32_t other) {
    std::vector<uint8_t> b(64);
    auto route = pool.Route(*pool.SliceAddress(other), Addr(b.data()), b.size());
    return route.ok() && route->path == "tcp";
  };
  if (role == Role::kRestarted) {
    if (static_cast<int>(pool.rank()) != victim_rank) {
      fprintf(stderr, "alpha restarted as rank %u, not its old rank %d\n", pool.rank(), victim_rank);
      return 11;
    }
    if (!WaitLive(pool, Generous(), [](const auto& v) { return v.size() == 3; })) return 12;
    if (!pool.Barrier(Generous()).ok()) return 13;
    if (!route_ok(static_cast<uint32_t>(host_rank))) return 14;
    if (AllToAll(pool, pool.LiveRanks()) != 0) return 15;
    return pool.Barrier(Generous()).ok() ? 0 : 16;
  }
  // Phase 1: three peers.
  if (!WaitLive(pool, Generous(), [](const auto& v) { return v.size() == 3; })) return 20;
  if (!pool.Barrier(Generous()).ok()) return 21;
  if (!route_ok(static_cast<uint32_t>(host_rank))) return 22;
  if (AllToAll(pool, pool.LiveRanks()) != 0) return 23;
  if (!pool.Barrier(Generous()).ok()) return 24;
  if (role == Role::kVictim) {
    for (;;) ::pause();  // until killed
  }
  // Phase 2 (survivor): the victim is gone; copies to it fail PEER_DOWN.
  std::vector<uint32_t> first = pool.LiveRanks();
  uint32_t victim = UINT32_MAX;
  for (uint32_t r : first)
    if (r != pool.rank() && static_cast<int>(r) != host_rank) victim = r;
  if (victim == UINT32_MAX) return 25;
  if (!WaitLive(pool, Generous(), [&](const auto& v) { return !Has(v, victim); })) return 26;
  std::vector<uint8_t> probe(4096);
  Status down = pool.Copy(*pool.SliceAddress(victim), Addr(probe.data()), probe.size());
  if (down.code() != Code::kPeerDown) {
    fprintf(stderr, "beta: copy to the gone rank: %s\n", down.ToString().c_str());
    return 27;
  }
  if (!pool.Barrier(Generous()).ok()) return 28;
  // Phase 3: the victim is back under its name.
  if (!WaitLive(pool, Generous(), [&](const auto& v) { return Has(v, victim) && v.size() == 3; })) return 29;
  if (!pool.Barrier(Generous()).ok()) return 30;
  if (AllToAll(pool, pool.LiveRanks()) != 0) return 31;
  return pool.Barrier(Generous()).ok() ? 0 : 32;
}

// Forked peer processes, each waiting on a gate of its own; forked before the caller starts any
// thread. Killed and reaped on destruction (pids are always > 0 here).
class Members {
 public:
  Members(const MembershipPlan& plan, std::vector<Role> roles) {
    for (Role role : roles) {
      int fds[2];
      if (::pipe(fds) != 0) return;
      pid_t pid = ::fork();
      if (pid == 0) {
        ::close(fds[1]);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(MemberBody(plan, role, fds[0]));
      }
      ::close(fds[0]);
      if (pid < 0) {
        ::close(fds[1]);
        return;
      }
      pids_.push_back(pid);
      gates_.push_back(fds[1]);
    }
  }
  ~Members() {
    for (size_t i = 0; i < pids_.size(); ++i) Kill(i);
    for (int g : gates_)
      if (g >= 0) ::close(g);
  }
  bool ok(size_t n) const { return pids_.size() == n; }
  void Open(size_t i, const std::string& message) {
    std::string line = message + "\n";
    if (::write(gates_[i], line.data(), line.size()) < 0) return;
  }
  void Kill(size_t i) {
    if (pids_[i] > 0) {
      ::kill(pids_[i], SIGKILL);
      ::waitpid(pids_[i], nullptr, 0);
      pids_[i] = -1;
    }
  }
  // Exit status, or -1 (killed, or still running after `limit`).
  int Wait(size_t i, std::chrono::seconds limit = std::chrono::seconds(120)) {
    if (pids_[i] <= 0) return -1;
    auto until = std::chrono::steady_clock::now() + limit;
    int status = 0;
    while (::waitpid(pids_[i], &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        Kill(i);
        return -1;
      }
      std::this_thread::sleep_for(Millis(20));
    }
    pids_[i] = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  std::vector<pid_t> pids_;
  std::vector<int> gates_;
};

// The host's side of the scenario (this process, which hosts the coordinator on tcp).
void RunMembership(const MembershipPlan& plan) {
  Members members(plan, {Role::kVictim, Role::kSurvivor, Role::kRestarted});
  ASSERT_TRUE(members.ok(3)) << "fork failed";
  ASSERT_TRUE(plan.host.enter()) << "cannot enter the host's namespace";
  Config config = PeerConfig(plan, "tcp://" + plan.host.ip + ":0", plan.host, "host");
  auto joined = bm::Pool::Join(config, bm::JoinMode::kHost);
  ASSERT_TRUE(joined.ok()) << joined.status().ToString();
  bm::Pool& pool = **joined;
  const std::string url = pool.coordinator_address();
  ASSERT_EQ(url.rfind("tcp://" + plan.host.ip + ":", 0), 0u) << url;
  const std::string hello = url + " " + std::to_string(pool.rank());

  // Phase 1: the victim joins first (so its rank is known), then the survivor.
  members.Open(0, hello + " -1");
  ASSERT_TRUE(WaitLive(pool, Generous(), [](const auto& v) { return v.size() == 2; }));
  uint32_t victim = UINT32_MAX;
  for (uint32_t r : pool.LiveRanks())
    if (r != pool.rank()) victim = r;
  members.Open(1, hello + " " + std::to_string(victim));
  ASSERT_TRUE(WaitLive(pool, Generous(), [](const auto& v) { return v.size() == 3; }));
  ASSERT_TRUE(pool.Barrier(Generous()).ok());
  EXPECT_EQ(AllToAll(pool, pool.LiveRanks()), 0);

  // A second live peer under a name in use is refused.
  Config twin = PeerConfig(plan, url, plan.host, "beta");
  auto dup = bm::Pool::Join(twin, bm::JoinMode::kJoin);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), Code::kAlreadyExists) << dup.status().ToString();
  ASSERT_TRUE(pool.Barrier(Generous()).ok());

  // Phase 2: the victim vanishes.
  if (plan.cut) {
    ASSERT_TRUE(plan.cut()) << "cannot take the victim's link down";
  } else {
    members.Kill(0);
  }
  // Noticed before a generous deadline (the configured peer timeout is far shorter).
  ASSERT_TRUE(WaitLive(pool, Generous(), [&](const auto& v) { return !Has(v, victim); }))
      << "rank " << victim << " was not declared gone";
  std::vector<uint8_t> probe(1 << 20);
  EXPECT_EQ(pool.Copy(*pool.SliceAddress(victim), Addr(probe.data()), probe.size()).code(), Code::kPeerDown);
  EXPECT_EQ(pool.Copy(Addr(probe.data()), *pool.SliceAddress(victim), probe.size()).code(), Code::kPeerDown);
  members.Kill(0);
  if (plan.heal) {
    ASSERT_TRUE(plan.heal()) << "cannot bring the victim's link back";
  }
  ASSERT_TRUE(pool.Barrier(Generous()).ok());  // with the survivor

  // Phase 3: the victim restarts under its name and gets its rank back.
  members.Open(2, hello + " " + std::to_string(victim));
  ASSERT_TRUE(WaitLive(pool, Deadline::After(std::chrono::seconds(40)),
                       [&](const auto& v) { return Has(v, victim) && v.size() == 3; }));
  ASSERT_TRUE(pool.Barrier(Generous()).ok());
  EXPECT_EQ(AllToAll(pool, pool.LiveRanks()), 0);
  EXPECT_TRUE(pool.Barrier(Generous()).ok());
  EXPECT_EQ(members.Wait(1), 0) << "the survivor failed (its exit code names the check)";
  EXPECT_EQ(members.Wait(2), 0) << "the restarted peer failed (its exit code names the check)";
}

MembershipPlan BasePlan(const std::string& name) {
  MembershipPlan plan;
  plan.base = weft::testing::TestConfig(name, 16 << 20);
  plan.base.heartbeat_ms = 100;
  plan.base.peer_timeout_ms = 1500;
  return plan;
}

// Without root: every peer on loopback, but still only the tcp coordinator and tcp data plane.
TEST(TcpCoordinatorLoopback, PeersJoinDieAndRejoinUnderTheirName) {
  MembershipPlan plan = BasePlan("loop");
  Site lo{[] { return true; }, "127.0.0.1"};
  plan.host = plan.victim = plan.survivor = lo;
  RunMembership(plan);
}

// Three namespaces joined by veth: no shared network, only the tcp coordinator. The victim's
// link goes down (its connections become half-open), so only missed heartbeats reveal it.
TEST_F(NetnsTcpTest, PoolAcrossNamespacesWithTcpCoordinatorSurvivesLinkLossAndRejoin) {
  // The host's side runs on this thread inside ns1; back to our own namespace afterwards (also
  // after a failed assertion) for the tests that follow.
  struct Home {
    int fd = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ~Home() {
      if (fd < 0) return;
      if (::setns(fd, CLONE_NEWNET) != 0) ADD_FAILURE() << "cannot return to the original network namespace";
      ::close(fd);
    }
  } home;
  ASSERT_GE(home.fd, 0);
  MembershipPlan plan = BasePlan("netns");
  plan.host = {[this] { return EnterNetns(Ns(1)); }, Ip(1)};
  plan.victim = {[this] { return EnterNetns(Ns(2)); }, Ip(2)};
  plan.survivor = {[this] { return EnterNetns(Ns(3)); }, Ip(3)};
  plan.cut = [this] { return Sh("ip -n " + Ns(2) + " link set " + If(2) + " down") == 0; };
  plan.heal = [this] { return Sh("ip -n " + Ns(2) + " link set " + If(2) + " up") == 0; };
  RunMembership(plan);
}

}  // namespace
}  // namespace weft::transport::tcp
