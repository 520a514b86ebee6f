// A symmetric team across "hosts" (network namespaces, netns_hosts.h): `weft meta` hosts the
// coordinator on tcp in host 1, and one `weft bench-coll --join` per host joins the pool with
// transport=tcp and the cluster secret, makes a team of three and runs every collective on
// private and heap buffers at a one-shot and a multi-step size, each rank checking every element
// of its result (values shifted by a fresh seed). No heap is mapped across hosts, so every
// message and signal goes through the pool's copy engine over tcp, and heap buffers fall back
// to the channel path. Skips without root except on CI (CI=true).
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/random.h"
#include "netns_hosts.h"

namespace weft {
namespace {

using std::chrono::seconds;
using testing::NetnsHosts;
using testing::Spawned;

TEST(NetnsSymm, EveryCollectiveIsExactAcrossThreeHostsOverTcp) {
  NetnsHosts hosts("wy" + std::to_string(::getpid() % 100000), 81);
  if (std::string why = hosts.Build(3); !why.empty()) {
    hosts.Cleanup();
    if (testing::OnCi()) FAIL() << why;
    GTEST_SKIP() << why;
  }
  const std::string secret = "netns-symm-" + std::to_string(FreshSeed());
  const std::string pool = "symmpool" + std::to_string(::getpid());
  const std::string seed = std::to_string(FreshSeed() % 1000000 + 1);
  const std::vector<std::string> env = {"WEFT_CLUSTER_SECRET=" + secret};
  const std::vector<std::string> shape = {"--set", "pool_name=" + pool, "--set", "rank_size=16MiB"};
  std::vector<std::string> meta_cmd = {"ip", "netns", "exec", hosts.Ns(1), WEFT_BINARY, "meta", "--set",
                                       "coordinator=tcp://" + hosts.Ip(1) + ":0"};
  meta_cmd.insert(meta_cmd.end(), shape.begin(), shape.end());
  Spawned meta(meta_cmd, env);
  ASSERT_TRUE(meta.started());
  const std::string listening = meta.WaitFor("listening on tcp://", seconds(20));
  ASSERT_NE(listening, "") << "the coordinator did not start: " << meta.output();
  const std::string url = listening.substr(listening.find("tcp://"));

  std::vector<std::unique_ptr<Spawned>> ranks;
  for (int h = 1; h <= 3; ++h) {
    std::vector<std::string> rank_env = env;
    rank_env.push_back("WEFT_TRANSPORT=tcp");
    rank_env.push_back("WEFT_DATA_ADDRESS=" + hosts.Ip(h) + ":0");
    std::vector<std::string> cmd = {"ip", "netns", "exec", hosts.Ns(h), WEFT_BINARY, "bench-coll", "--join",
                                    "--ranks", "3", "--sizes", "4K", "1M", "--seed", seed, "--set",
                                    "coordinator=" + url};
    cmd.insert(cmd.end(), shape.begin(), shape.end());
    ranks.push_back(std::make_unique<Spawned>(cmd, rank_env));
    ASSERT_TRUE(ranks.back()->started());
  }
  for (int h = 1; h <= 3; ++h) {
    Spawned& r = *ranks[h - 1];
    // A rank exits 0 only when every element of every case was right; 120 s bounds a hang.
    ASSERT_EQ(r.Wait(seconds(120)), 0) << "the rank in host " << h << " failed:\n" << r.output();
    const std::string& out = r.output();
    EXPECT_NE(out.find("16 cases exact on private and heap buffers (seed " + seed + ")"), std::string::npos) << out;
    // Every other rank is on another host: reached through the copy engine, never mapped.
    EXPECT_EQ(out.find("mapped"), std::string::npos) << out;
    EXPECT_NE(out.find("copy engine"), std::string::npos) << out;
  }
}

}  // namespace
}  // namespace weft
