// A pool across "hosts" (network namespaces, netns_hosts.h) over ucx: `weft meta` hosts the
// coordinator on tcp in host 1, and one `weft demo-peer` per host joins it with transport=ucx and
// the cluster secret, UCX_TLS=tcp. Every process is started with `ip netns exec` (UCX finds
// interfaces through /sys/class/net, which a setns()'d process does not see: docs/ucx.md). Each
// peer copies into and out of the others' slices (fresh random bytes, poisoned destinations, every
// byte compared), a batch of 1000 scattered 16 KiB pages into the next peer's slice and back, a
// copy between two other peers' slices, and a write the owner checks by load; the route of every
// copy to another peer says ucx. Skips without UCX, and without root except on CI (CI=true).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "base/random.h"
#include "netns_hosts.h"
#include "support/ucx_probe.h"

namespace weft {
namespace {

using std::chrono::seconds;
using testing::NetnsHosts;
using testing::Spawned;

// The row of `direction` in a demo table: its path and its "verified" column ("3/3").
struct Row {
  std::string path, verified;
};
Row FindRow(const std::string& table, const std::string& direction) {
  std::istringstream lines(table);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(direction + " ", 0) != 0) continue;
    std::istringstream rest(line.substr(direction.size()));
    std::string path, bytes, gbps, verified;
    if (rest >> path >> bytes >> gbps >> verified) return {path, verified};
  }
  return {};
}

TEST(NetnsUcxPool, PeersInThreeNamespacesCopyExactlyOverUcx) {
  if (std::string why; !testing::UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  NetnsHosts hosts("wu" + std::to_string(::getpid() % 100000), 80);
  if (std::string why = hosts.Build(3); !why.empty()) {
    hosts.Cleanup();
    if (testing::OnCi()) FAIL() << why;
    GTEST_SKIP() << why;
  }
  const std::string secret = "netns-ucx-pool-" + std::to_string(FreshSeed());
  const std::string pool = "ucxpool" + std::to_string(::getpid());
  const std::vector<std::string> env = {"WEFT_CLUSTER_SECRET=" + secret, "UCX_TLS=tcp",
                                        testing::UcxChildAsanOptions()};
  Spawned meta({"ip", "netns", "exec", hosts.Ns(1), WEFT_BINARY, "meta", "--set", "pool_name=" + pool, "--set",
                "coordinator=tcp://" + hosts.Ip(1) + ":0", "--set", "rank_size=64MiB"},
               env);
  ASSERT_TRUE(meta.started());
  const std::string listening = meta.WaitFor("listening on tcp://", seconds(20));
  ASSERT_NE(listening, "") << "the coordinator did not start: " << meta.output();
  const std::string url = listening.substr(listening.find("tcp://"));

  std::vector<std::unique_ptr<Spawned>> peers;
  for (int h = 1; h <= 3; ++h) {
    std::vector<std::string> peer_env = env;
    peer_env.push_back("WEFT_TRANSPORT=ucx");
    peer_env.push_back("WEFT_DATA_ADDRESS=" + hosts.Ip(h) + ":0");
    peers.push_back(std::make_unique<Spawned>(
        std::vector<std::string>{"ip", "netns", "exec", hosts.Ns(h), WEFT_BINARY, "demo-peer", "--peers", "3", "--size",
                                 "64MiB", "--block", "16MiB", "--pool", pool, "--socket", url, "--batch-pages", "1000",
                                 "--report"},
        peer_env));
    ASSERT_TRUE(peers.back()->started());
  }
  for (int h = 1; h <= 3; ++h) {
    Spawned& p = *peers[h - 1];
    // Each peer exits 0 only if every copy of every peer verified; 60 s bounds a hang.
    ASSERT_EQ(p.Wait(seconds(60)), 0) << "the peer in host " << h << " failed:\n" << p.output();
    const std::string& out = p.output();
    EXPECT_NE(out.find("transport ucx"), std::string::npos) << out;
    // Every peer's table gathers all three peers' results (3/3).
    for (const char* direction : {"LH -> GH other peer", "GH other peer -> LH", "GH own -> GH other peer",
                                  "GH other peer -> GH own", "GH other -> GH third peer",
                                  "batch 1000 x 16KiB LH -> GH other"}) {
      Row row = FindRow(out, direction);
      EXPECT_EQ(row.path, "ucx") << direction << " in host " << h << ":\n" << out;
      EXPECT_EQ(row.verified, "3/3") << direction << " in host " << h << ":\n" << out;
    }
    EXPECT_EQ(FindRow(out, "written by another peer, read by load").verified, "3/3") << out;
    EXPECT_EQ(out.find("FAILED"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace weft
