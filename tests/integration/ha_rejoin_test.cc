// Peers follow a new elected coordinator: the test plays the HA masters (a coordinator on tcp,
// elected and published on a private etcd), two pools join through coordinator=etcd://...; the
// first master goes away and a second one, holding the peers' ranks, takes over. The pools must
// rejoin it at their ranks by themselves, and copies between them work before, during and after.
// A peer whose rank is not held gives up cleanly, and the surviving pool learns that rank is down
// when its reservation runs out.
//
// Waits are bounded (kPatience) and nothing asserts how fast anything happened. Without the etcd
// binary these tests skip with a message, except under CI=true, where they fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <weft/config.h>
#include <weft/pool.h>

#include "api/bm/pool_internal.h"
#include "meta/coordinator.h"
#include "meta/leader_election.h"
#include "support/etcd_process.h"

namespace weft {
namespace {

using namespace std::chrono_literals;

constexpr auto kPatience = 30s;
constexpr const char* kSecret = "ha-rejoin-secret";
constexpr uint64_t kRankSize = 4 << 20;
constexpr size_t kCopyBytes = 256 << 10;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

std::vector<uint8_t> FreshBytes(size_t n) {
  static std::mt19937_64 rng(std::random_device{}());
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Polls pred until it holds or kPatience passes.
template <typename Pred>
bool Eventually(Pred pred) {
  const auto until = std::chrono::steady_clock::now() + kPatience;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// One master as the test plays it: a coordinator that answers every service call (the pools'
// AddSlice) with OK, elected on etcd and publishing its address.
struct Master {
  std::unique_ptr<meta::Directory> directory;
  std::unique_ptr<meta::LeaderElection> election;
  std::unique_ptr<meta::Coordinator> coordinator;
  std::mutex mu;
  std::vector<uint32_t> gone;  // ranks its PeerGoneHandler was told of (not clean)

  std::vector<uint32_t> Gone() {
    std::lock_guard lock(mu);
    return gone;
  }
  // The coordinator goes first (its peers see their connections close), then the leadership.
  void Stop() {
    coordinator.reset();
    if (election) {
      EXPECT_TRUE(election->Resign().ok());
    }
    election.reset();
  }
};

class HaRejoinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (etcd_test::FindEtcd().empty()) {
      if (etcd_test::InCi()) FAIL() << "etcd is not installed; scripts/install-deps.sh installs etcd-server";
      GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh); skipping "
                      "the HA rejoin tests";
    }
    Status s = etcd_.Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    etcd_url_ = fmt::format("etcd://127.0.0.1:{}", etcd_.port());
    pool_ = fmt::format("rejoin-{}-{}", ::testing::UnitTest::GetInstance()->current_test_info()->name(), getpid());
  }

  std::unique_ptr<Master> StartMaster(std::map<std::string, uint32_t> reserved = {},
                                      std::chrono::milliseconds ttl = 10s) {
    auto m = std::make_unique<Master>();
    meta::CoordinatorOptions o;
    o.socket_path = "tcp://127.0.0.1:0";
    o.pool_name = pool_;
    o.rank_size = kRankSize;
    o.peer_timeout = 1500ms;
    o.cluster_secret = kSecret;
    o.reserved_ranks = std::move(reserved);
    o.reservation_ttl = ttl;
    Master* raw = m.get();
    auto coordinator = meta::Coordinator::Start(
        o, [](uint32_t, std::span<const uint8_t>) -> Result<std::vector<uint8_t>> { return std::vector<uint8_t>{}; },
        [raw](uint32_t rank, bool clean) {
          std::lock_guard lock(raw->mu);
          if (!clean) raw->gone.push_back(rank);
        });
    EXPECT_TRUE(coordinator.ok()) << coordinator.status().ToString();
    if (!coordinator.ok()) return nullptr;
    m->coordinator = std::move(*coordinator);
    auto directory = meta::OpenDirectory(etcd_url_);
    EXPECT_TRUE(directory.ok()) << directory.status().ToString();
    if (!directory.ok()) return nullptr;
    m->directory = std::move(*directory);
    meta::ElectionOptions e;
    e.key = meta::LeaderKey(pool_);
    e.ttl = 2s;
    m->election = std::make_unique<meta::LeaderElection>(*m->directory, e);
    Status won = m->election->Campaign(Deadline::After(kPatience));
    EXPECT_TRUE(won.ok()) << won.ToString();
    Status published = m->election->Publish(m->coordinator->address());
    EXPECT_TRUE(published.ok()) << published.ToString();
    return m;
  }

  Config PeerConfig(const std::string& peer_name) const {
    Config c;
    c.pool_name = pool_;
    c.rank_size = kRankSize;
    c.coordinator = etcd_url_;
    c.cluster_secret = kSecret;
    c.peer_name = peer_name;
    c.heartbeat_ms = 100;
    c.peer_timeout_ms = 1500;
    c.deadline_ms = 20000;
    return c;
  }

  std::unique_ptr<bm::Pool> JoinPeer(const Config& config) {
    auto pool = bm::Pool::Join(config, bm::JoinMode::kJoin);
    EXPECT_TRUE(pool.ok()) << pool.status().ToString();
    return pool.ok() ? std::move(*pool) : nullptr;
  }

  etcd_test::EtcdProcess etcd_;
  std::string etcd_url_;
  std::string pool_;
};

// Fresh bytes written by `from` into `to`'s slice, read back by `to` into a poisoned buffer and
// compared byte for byte.
void ExpectCopyWorks(bm::Pool& from, bm::Pool& to, const std::string& when) {
  auto slice = to.SliceAddress(to.rank());
  ASSERT_TRUE(slice.ok()) << slice.status().ToString();
  const uint64_t at = *slice + 4096;
  const std::vector<uint8_t> sent = FreshBytes(kCopyBytes);
  Status wrote = from.Copy(at, Addr(sent.data()), sent.size());
  ASSERT_TRUE(wrote.ok()) << when << ": " << wrote.ToString();
  std::vector<uint8_t> got(kCopyBytes, 0xA5);
  Status read = to.Copy(Addr(got.data()), at, got.size());
  ASSERT_TRUE(read.ok()) << when << ": " << read.ToString();
  EXPECT_TRUE(got == sent) << when << ": the bytes differ";
}

void ExpectCopiesBothWays(bm::Pool& a, bm::Pool& b, const std::string& when) {
  ExpectCopyWorks(a, b, when + " (a -> b)");
  ExpectCopyWorks(b, a, when + " (b -> a)");
}

uint64_t Rejoins(bm::Pool& pool) {
  return bm::PoolAccess::Metrics(pool).counter("weft_pool_coordinator_rejoins_total")->value();
}

// A control call's status while the pool has no coordinator.
Status ControlCall(bm::Pool& pool) { return pool.Alloc(4096).status(); }

bool FailingOver(bm::Pool& pool) {
  Status s = ControlCall(pool);
  return s.code() == Code::kUnavailable && s.message().find("failing over") != std::string::npos;
}

std::map<std::string, uint32_t> RanksByName(const meta::Coordinator& c) {
  std::map<std::string, uint32_t> out;
  for (const auto& p : c.Peers()) out[p.name] = p.rank;
  return out;
}

TEST_F(HaRejoinTest, PeersRejoinTheNewLeaderAtTheirRanks) {
  auto first = StartMaster();
  ASSERT_NE(first, nullptr);
  auto a = JoinPeer(PeerConfig("peer-a"));
  auto b = JoinPeer(PeerConfig(""));  // a default name: the rejoin reuses the one it joined under
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(Eventually([&] { return a->HasSlice(b->rank()) && b->HasSlice(a->rank()); }));
  ExpectCopiesBothWays(*a, *b, "before the failover");
  const auto held = RanksByName(*first->coordinator);
  ASSERT_EQ(held.size(), 2u);

  first->Stop();
  ASSERT_TRUE(Eventually([&] { return FailingOver(*a) && FailingOver(*b); }))
      << ControlCall(*a).ToString() << " / " << ControlCall(*b).ToString();
  EXPECT_EQ(b->Barrier(Deadline::After(kPatience)).code(), Code::kUnavailable);
  ExpectCopiesBothWays(*a, *b, "between coordinators");

  auto second = StartMaster(held, 30s);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(Eventually([&] { return Rejoins(*a) == 1 && Rejoins(*b) == 1; }));
  EXPECT_EQ(RanksByName(*second->coordinator), held) << "every peer is back at its rank";
  EXPECT_EQ(a->coordinator_address(), second->coordinator->address());
  EXPECT_TRUE(a->HasSlice(b->rank()) && b->HasSlice(a->rank())) << "attachments kept";
  ExpectCopiesBothWays(*a, *b, "after the failover");
  auto a_in = std::async(std::launch::async, [&] { return a->Barrier(Deadline::After(kPatience)); });
  EXPECT_TRUE(b->Barrier(Deadline::After(kPatience)).ok()) << "control calls work again";
  EXPECT_TRUE(a_in.get().ok());
  EXPECT_TRUE(second->Gone().empty()) << "no reservation expired";
  EXPECT_TRUE(a->Leave().ok());
  EXPECT_TRUE(b->Leave().ok());
}

TEST_F(HaRejoinTest, APeerWhoseRankIsNotHeldGivesUpAndTheOthersSeeItDown) {
  auto first = StartMaster();
  ASSERT_NE(first, nullptr);
  auto a = JoinPeer(PeerConfig("peer-a"));
  Config lost = PeerConfig("peer-b");
  lost.deadline_ms = 2500;  // how long it keeps trying for its rank
  auto b = JoinPeer(lost);
  ASSERT_TRUE(a && b);
  const uint32_t rank_a = a->rank();
  const uint32_t rank_b = b->rank();
  ASSERT_TRUE(Eventually([&] { return a->HasSlice(rank_b) && b->HasSlice(rank_a); }));
  ExpectCopiesBothWays(*a, *b, "before the failover");

  first->Stop();
  // The new leader holds a's rank, and b's rank for someone else: b is offered another.
  auto second = StartMaster({{"peer-a", rank_a}, {"not-peer-b", rank_b}}, 6s);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(Eventually([&] { return Rejoins(*a) == 1; }));
  ASSERT_TRUE(Eventually([&] { return ControlCall(*b).code() == Code::kMismatch; })) << ControlCall(*b).ToString();
  EXPECT_NE(ControlCall(*b).message().find("gave up"), std::string::npos) << ControlCall(*b).ToString();
  EXPECT_EQ(Rejoins(*b), 0u);
  EXPECT_GT(bm::PoolAccess::Metrics(*b).counter("weft_pool_coordinator_rejoin_failures_total")->value(), 0u);

  // b's rank was never given back: when its reservation runs out, a is told it is down.
  ASSERT_TRUE(Eventually([&] { return !a->HasSlice(rank_b); }));
  const std::vector<uint8_t> bytes = FreshBytes(4096);
  EXPECT_EQ(a->Copy(*a->SliceAddress(rank_b), Addr(bytes.data()), bytes.size()).code(), Code::kPeerDown);
  const std::vector<uint32_t> gone = second->Gone();
  EXPECT_EQ(std::count(gone.begin(), gone.end(), rank_b), 1) << "its gone handler is told once";
  EXPECT_EQ(RanksByName(*second->coordinator), (std::map<std::string, uint32_t>{{"peer-a", rank_a}}));
  EXPECT_TRUE(b->Leave().ok());
  EXPECT_TRUE(a->Leave().ok());
}

}  // namespace
}  // namespace weft
