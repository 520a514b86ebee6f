// Leader election (meta/leader_election.h) over the in-process MemoryStore ("local") and over a
// private etcd: one leader among concurrent candidates, hand-over on Resign, fail-stop when the
// lease is revoked behind the leader's back or the directory goes away, deadlines, and
// ResolveLeader. Waits are bounded by kPatience; nothing asserts how fast anything happened.
//
// Without the etcd binary the etcd cases skip with a message, except under CI=true, where they
// fail (support/etcd_process.h).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "base/random.h"
#include "meta/directory.h"
#include "meta/leader_election.h"
#include "support/test_directory.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;

constexpr auto kPatience = 30s;

std::string Fresh(const char* what) { return fmt::format("{}-{:016x}", what, FreshSeed()); }

// Polls `done` until it holds or kPatience passes.
template <typename F>
bool Eventually(F done) {
  auto until = Clock::now() + kPatience;
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

using etcd_test::Backend;
using etcd_test::BackendName;

class LeaderElectionTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  void SetUp() override {
    DirectoryOptions options;
    options.timeout = 10s;
    url_ = etcd_test::TestDirectoryUrl(GetParam(), etcd_);
    if (url_.empty()) return;
    ttl_ = GetParam() == Backend::kEtcd ? 2s : 600ms;  // etcd's minimum; short in process
    auto d = OpenDirectory(url_, options);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    dir_ = std::move(d).value();
    key_ = "/weft/" + Fresh("pool") + "/leader";
  }

  ElectionOptions Options(const std::string& value, LostCallback on_lost = {}) const {
    ElectionOptions o;
    o.key = key_;
    o.value = value;
    o.ttl = ttl_;
    o.on_lost = std::move(on_lost);
    return o;
  }

  static etcd_test::EtcdProcess* etcd_;
  std::string url_;
  std::chrono::milliseconds ttl_{};
  std::unique_ptr<Directory> dir_;
  std::string key_;
};

etcd_test::EtcdProcess* LeaderElectionTest::etcd_ = nullptr;

TEST_P(LeaderElectionTest, ExactlyOneOfManyCandidatesLeads) {
  constexpr int kCandidates = 4;
  std::vector<std::unique_ptr<LeaderElection>> candidates;
  for (int i = 0; i < kCandidates; ++i) {
    candidates.push_back(std::make_unique<LeaderElection>(*dir_, Options(fmt::format("tcp://10.0.0.{}:7000", i))));
  }
  std::vector<Status> results(kCandidates, Error(Code::kInternal, "not returned"));
  std::atomic<int> returned{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCandidates; ++i) {
    threads.emplace_back([&, i] {
      results[i] = candidates[i]->Campaign(Deadline::After(kPatience));
      ++returned;
    });
  }
  ASSERT_TRUE(Eventually([&] { return returned.load() >= 1; })) << "nobody was elected";
  // The others stay standbys across several keep-alive rounds of the leader.
  std::this_thread::sleep_for(ttl_ * 2);
  EXPECT_EQ(returned.load(), 1);
  int leader = -1;
  for (int i = 0; i < kCandidates; ++i) {
    if (candidates[i]->leading()) {
      EXPECT_EQ(leader, -1) << "two leaders: " << leader << " and " << i;
      leader = i;
    }
  }
  ASSERT_NE(leader, -1);
  auto resolved = ResolveLeader(*dir_, key_, Deadline::After(kPatience));
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(*resolved, fmt::format("tcp://10.0.0.{}:7000", leader));

  for (auto& c : candidates) c->Stop();  // wakes the standbys
  for (auto& t : threads) t.join();
  for (int i = 0; i < kCandidates; ++i) {
    if (i == leader) {
      EXPECT_TRUE(results[i].ok()) << results[i].ToString();
    } else {
      EXPECT_EQ(results[i].code(), Code::kCancelled) << i << ": " << results[i].ToString();
    }
  }
  EXPECT_TRUE(candidates[leader]->leading()) << "Stop must not end a leadership";
}

TEST_P(LeaderElectionTest, ResignHandsOverToAWaitingCandidate) {
  std::atomic<int> a_lost{0};
  LeaderElection a(*dir_, Options("tcp://a:1", [&](const Status&) { ++a_lost; }));
  ASSERT_TRUE(a.Campaign(Deadline::After(kPatience)).ok());
  LeaderElection b(*dir_, Options("tcp://b:2"));
  Status b_result = Error(Code::kInternal, "not returned");
  std::atomic<bool> b_returned{false};
  std::thread t([&] {
    b_result = b.Campaign(Deadline::After(kPatience));
    b_returned = true;
  });
  std::this_thread::sleep_for(ttl_);  // b is waiting on a's key
  EXPECT_FALSE(b_returned.load());
  ASSERT_TRUE(a.Resign().ok());
  EXPECT_FALSE(a.leading());
  t.join();
  ASSERT_TRUE(b_result.ok()) << b_result.ToString();
  EXPECT_TRUE(b.leading());
  auto resolved = ResolveLeader(*dir_, key_, Deadline::After(kPatience));
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(*resolved, "tcp://b:2");
  EXPECT_EQ(a_lost.load(), 0) << "resigning is not losing";
}

TEST_P(LeaderElectionTest, RevokedLeaseCallsOnLostOnce) {
  std::atomic<int> lost{0};
  Status why;
  std::mutex mu;
  LeaderElection a(*dir_, Options("tcp://a:1", [&](const Status& s) {
    std::lock_guard lock(mu);
    why = s;
    ++lost;
  }));
  ASSERT_TRUE(a.Campaign(Deadline::After(kPatience)).ok());
  LeaseId lease = a.lease();
  ASSERT_NE(lease, 0);
  ASSERT_TRUE(dir_->Revoke(lease).ok());  // behind the leader's back
  ASSERT_TRUE(Eventually([&] { return lost.load() >= 1; })) << "the leader did not notice";
  EXPECT_FALSE(a.leading());
  std::this_thread::sleep_for(ttl_);  // several more keep-alive periods
  EXPECT_EQ(lost.load(), 1);
  std::lock_guard lock(mu);
  EXPECT_EQ(why.code(), Code::kNotFound) << why.ToString();
  EXPECT_NE(why.message().find(key_), std::string::npos) << why.ToString();
}

TEST_P(LeaderElectionTest, CampaignPastItsDeadlineIsTimeout) {
  LeaderElection a(*dir_, Options("tcp://a:1"));
  ASSERT_TRUE(a.Campaign(Deadline::After(kPatience)).ok());
  LeaderElection b(*dir_, Options("tcp://b:2"));
  Status s = b.Campaign(Deadline::After(300ms));
  EXPECT_EQ(s.code(), Code::kTimeout) << s.ToString();
  EXPECT_FALSE(b.leading());
  EXPECT_TRUE(a.leading());
}

TEST_P(LeaderElectionTest, ResolveLeaderWithNoLeaderIsTimeoutWithTheKey) {
  auto r = ResolveLeader(*dir_, key_, Deadline::After(300ms));
  ASSERT_EQ(r.status().code(), Code::kTimeout) << r.status().ToString();
  const std::string& m = r.status().message();
  EXPECT_NE(m.find("no leader is elected"), std::string::npos) << m;
  EXPECT_NE(m.find(key_), std::string::npos) << m;
  EXPECT_NE(m.find(dir_->Describe()), std::string::npos) << m;
}

TEST_P(LeaderElectionTest, ResolveLeaderWaitsForThePublishedAddress) {
  // Elected with an empty value: still starting, not yet a leader to dial.
  LeaderElection a(*dir_, Options(""));
  ASSERT_TRUE(a.Campaign(Deadline::After(kPatience)).ok());
  EXPECT_EQ(ResolveLeader(*dir_, key_, Deadline::After(200ms)).status().code(), Code::kTimeout);
  Result<std::string> resolved = Error(Code::kInternal, "not returned");
  std::thread t([&] { resolved = ResolveLeader(*dir_, key_, Deadline::After(kPatience)); });
  ASSERT_TRUE(a.Publish("tcp://127.0.0.1:7777").ok());
  t.join();
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(*resolved, "tcp://127.0.0.1:7777");
  LeaderElection idle(*dir_, Options("x"));
  EXPECT_FALSE(idle.Publish("y").ok()) << "only the leader publishes";
}

INSTANTIATE_TEST_SUITE_P(Backends, LeaderElectionTest, ::testing::Values(Backend::kLocal, Backend::kEtcd),
                         BackendName);

// A leader that cannot reach etcd for a whole ttl stops leading (fail-stop): its lease may have
// expired there and a standby may lead already.
TEST(LeaderElectionEtcdTest, UnreachableDirectoryLosesLeadership) {
  if (etcd_test::FindEtcd().empty()) {
    if (etcd_test::InCi()) FAIL() << "etcd is not installed; scripts/install-deps.sh installs etcd-server";
    GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh); skipping";
  }
  etcd_test::EtcdProcess etcd;
  Status started = etcd.Start();
  ASSERT_TRUE(started.ok()) << started.ToString();
  DirectoryOptions options;
  options.timeout = 1s;
  auto d = OpenDirectory(fmt::format("etcd://127.0.0.1:{}", etcd.port()), options);
  ASSERT_TRUE(d.ok());
  std::atomic<int> lost{0};
  ElectionOptions o;
  o.key = LeaderKey(Fresh("pool"));
  o.value = "tcp://a:1";
  o.ttl = 2s;
  o.on_lost = [&](const Status&) { ++lost; };
  LeaderElection a(**d, o);
  ASSERT_TRUE(a.Campaign(Deadline::After(kPatience)).ok());
  etcd.Stop();
  ASSERT_TRUE(Eventually([&] { return lost.load() >= 1; })) << "a leader without its directory kept leading";
  EXPECT_FALSE(a.leading());
  EXPECT_EQ(lost.load(), 1);
}

TEST(LeaderKeyTest, FormatAndElectedAddresses) {
  EXPECT_EQ(LeaderKey("kv"), "/weft/kv/leader");
  EXPECT_TRUE(IsElectedCoordinator("etcd://h1:2379;h2:2379"));
  EXPECT_FALSE(IsElectedCoordinator("tcp://h:1"));
  EXPECT_FALSE(IsElectedCoordinator("/tmp/weft-kv.sock"));
  // An unreachable etcd: no leader, and the message says where it looked.
  uint16_t port = etcd_test::FreePort();
  auto r = ResolveCoordinator(fmt::format("etcd://127.0.0.1:{}", port), "kv", Deadline::After(300ms));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kTimeout) << r.status().ToString();
  EXPECT_NE(r.status().message().find("/weft/kv/leader"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find(fmt::format("127.0.0.1:{}", port)), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace weft::meta
