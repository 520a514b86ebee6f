// Several peers as processes on this host, pooling memory through the embedded coordinator.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

#include <weft/pool.h>

#include "api/bm/device_slice.h"
#include "api/bm/pool_coordinator.h"
#include "api/bm/pool_internal.h"
#include "api/bm/slice_blobs.h"
#include "base/random.h"
#include "integration/peer_process.h"
#include "mem/host_segment.h"
#include "support/loop_transport.h"
#include "support/ucx_probe.h"
#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif
#include "meta/coordinator_client.h"
#include "transport/tcp/tcp_transport.h"

namespace weft::bm {
namespace {

using testing::PeerProcesses;
using testing::TestConfig;

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }
Deadline Soon() { return Deadline::After(std::chrono::seconds(30)); }

// Random copies between local buffers and the slices of other peers, from several threads.
// Returns the number of failed checks.
int RandomTraffic(Pool& pool, const std::vector<uint32_t>& ranks, int threads, int iterations) {
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      uint64_t state = FreshSeed();
      std::vector<uint8_t> src(4 << 20), back(4 << 20);
      for (int i = 0; i < iterations; ++i) {
        const uint32_t target = ranks[SplitMix64(state) % ranks.size()];
        const uint64_t len = 1 + SplitMix64(state) % (SplitMix64(state) % 2 ? 4096 : src.size());
        auto gva = pool.Alloc(len + 64, Placement::OnRank(target));
        if (!gva.ok()) {
          failures++;
          fprintf(stderr, "alloc on %u: %s\n", target, gva.status().ToString().c_str());
          continue;
        }
        const uint64_t off = SplitMix64(state) % 64;  // unaligned on purpose
        const uint64_t seed = SplitMix64(state);
        FillRandom(src.data(), len, seed);
        std::memset(back.data(), 0xA5, len);
        Status w = pool.Copy(*gva + off, Addr(src.data()), len, Direction::kLH2GH);
        Status r = pool.Copy(Addr(back.data()), *gva + off, len, Direction::kGH2LH);
        if (!w.ok() || !r.ok() || FirstMismatch(back.data(), len, seed)) {
          failures++;
          fprintf(stderr, "copy to rank %u failed: %s / %s\n", target, w.ToString().c_str(), r.ToString().c_str());
        }
        // GH -> GH between two other slices.
        const uint32_t other = ranks[SplitMix64(state) % ranks.size()];
        auto gva2 = pool.Alloc(len, Placement::OnRank(other));
        if (gva2.ok()) {
          std::memset(back.data(), 0x5A, len);
          Status g = pool.Copy(*gva2, *gva + off, len, Direction::kGH2GH);
          Status b = pool.Copy(Addr(back.data()), *gva2, len);
          if (!g.ok() || !b.ok() || FirstMismatch(back.data(), len, seed)) failures++;
          if (!pool.Free(*gva2).ok()) failures++;
        } else {
          failures++;
        }
        if (!pool.Free(*gva).ok()) failures++;
        (void)t;
      }
    });
  }
  for (auto& w : workers) w.join();
  return failures.load();
}

// Every peer writes a seeded pattern into the next peer's memory; the owner checks the bytes
// by direct load from its own slice. Returns failed checks.
int CrossProcessCheck(Pool& pool, const std::vector<uint32_t>& ranks) {
  const size_t me = std::find(ranks.begin(), ranks.end(), pool.rank()) - ranks.begin();
  const uint32_t next = ranks[(me + 1) % ranks.size()];
  const uint64_t len = 3 << 20, seed = FreshSeed();
  auto gva = pool.Alloc(len, Placement::OnRank(next));
  if (!gva.ok()) return 1;
  std::vector<uint8_t> src(len);
  FillRandom(src.data(), len, seed);
  if (!pool.Copy(*gva, Addr(src.data()), len).ok()) return 1;
  uint64_t note[3] = {*gva, seed, next};
  auto all = pool.Allgather({reinterpret_cast<uint8_t*>(note), sizeof note}, Soon());
  if (!all.ok() || all->size() != ranks.size()) return 1;
  int failures = 0, checked = 0;
  for (const auto& [from, bytes] : *all) {
    uint64_t theirs[3];
    std::memcpy(theirs, bytes.data(), sizeof theirs);
    if (theirs[2] != pool.rank()) continue;
    checked++;
    auto where = pool.LocalAddress(theirs[0], len);
    if (!where.ok() || FirstMismatch(*where, len, theirs[1])) failures++;
  }
  if (checked != 1) failures++;
  if (!pool.Barrier(Soon()).ok()) failures++;
  if (!pool.Free(*gva).ok()) failures++;
  return failures;
}

int PeerBody(const Config& config, int peers) {
  auto pool = Pool::Join(config, JoinMode::kJoin);
  if (!pool.ok()) {
    fprintf(stderr, "join: %s\n", pool.status().ToString().c_str());
    return 10;
  }
  auto ranks = (*pool)->WaitForPeers(peers, Soon());
  if (!ranks.ok() || !(*pool)->Barrier(Soon()).ok()) return 11;
  int failures = RandomTraffic(**pool, *ranks, 3, 30);
  failures += CrossProcessCheck(**pool, *ranks);
  if (!(*pool)->Barrier(Soon()).ok()) failures++;
  return failures ? 12 : 0;
}

TEST(Pool, FourPeersCopyRandomDataInEveryDirection) {
  Config config = TestConfig("four");
  PeerProcesses children(3, [&](int) { return PeerBody(config, 4); });
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  children.Release();
  auto ranks = (*pool)->WaitForPeers(4, Soon());
  ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
  ASSERT_EQ(ranks->size(), 4u);
  ASSERT_TRUE((*pool)->Barrier(Soon()).ok());
  EXPECT_EQ(RandomTraffic(**pool, *ranks, 3, 30), 0);
  EXPECT_EQ(CrossProcessCheck(**pool, *ranks), 0);
  EXPECT_TRUE((*pool)->Barrier(Soon()).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(children.Wait(i), 0) << "peer " << i;
  EXPECT_GT(bm::PoolAccess::Metrics(**pool).counter("weft_copy_bytes_total")->value(), 0u);
}

// transport=tcp: the same traffic, but every other peer is reached through its TCP data server
// (authenticated with the cluster secret), not through a shared mapping.
TEST(Pool, FourPeersOverForcedTcp) {
  Config config = TestConfig("tcp");
  config.transport = "tcp";
  config.cluster_secret = "test-secret-" + std::to_string(FreshSeed());
  PeerProcesses children(3, [&](int) { return PeerBody(config, 4); });
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  children.Release();
  auto ranks = (*pool)->WaitForPeers(4, Soon());
  ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
  ASSERT_TRUE((*pool)->Barrier(Soon()).ok());
  std::vector<uint8_t> buf(64);
  const uint32_t other = (*ranks)[0] == (*pool)->rank() ? (*ranks)[1] : (*ranks)[0];
  auto route = (*pool)->Route(*(*pool)->SliceAddress(other), Addr(buf.data()), buf.size());
  ASSERT_TRUE(route.ok()) << route.status().ToString();
  EXPECT_EQ(route->path, "tcp");
  EXPECT_EQ(route->locality, transport::Locality::kRemoteNode);
  EXPECT_EQ(RandomTraffic(**pool, *ranks, 3, 20), 0);
  EXPECT_EQ(CrossProcessCheck(**pool, *ranks), 0);
  EXPECT_TRUE((*pool)->Barrier(Soon()).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(children.Wait(i), 0) << "peer " << i;
}

// A transport added through the registry alone (tests/support/loop_transport.h) carries a pool's
// copies: transport=loop reaches every other peer through its regions, with no edit to the pool,
// the engine or the wire. Three peers in this process: writes, reads, a copy between two other
// peers' slices (bounced here), bounds and a departed peer.
// Three pools of this process on one network path: writes, reads, a copy into our own slice, a
// copy between two other peers' slices (bounced here), bounds, and a peer that left.
void CheckPoolOverNetworkPath(const Config& config, const transport::Registry& registry) {
  std::vector<std::unique_ptr<Pool>> pools;
  for (JoinMode mode : {JoinMode::kHost, JoinMode::kJoin, JoinMode::kJoin}) {
    auto p = PoolAccess::Join(config, mode, registry);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    pools.push_back(std::move(*p));
  }
  for (auto& p : pools) ASSERT_TRUE(p->WaitForPeers(3, Soon()).ok());
  Pool& a = *pools[0];
  const uint64_t len = (1 << 20) + 13, off = 4097;
  for (size_t t = 1; t < pools.size(); ++t) {
    Pool& target = *pools[t];
    const uint64_t gva = *a.SliceAddress(target.rank()) + off;
    auto route = a.Route(gva, Addr(&len), 8);
    ASSERT_TRUE(route.ok()) << route.status().ToString();
    EXPECT_EQ(route->path, config.transport) << route->ToString();
    EXPECT_EQ(route->locality, transport::Locality::kRemoteNode);
    EXPECT_EQ(a.LocalAddress(gva, len).status().code(), Code::kNotSupported);  // not mapped here
    auto* theirs = static_cast<uint8_t*>(*target.LocalAddress(gva, len));
    const uint64_t seed = FreshSeed();
    std::vector<uint8_t> src(len), back(len, 0x5a);
    FillRandom(src.data(), len, seed);
    std::memset(theirs, 0xEE, len);
    ASSERT_TRUE(a.Copy(gva, Addr(src.data()), len, Direction::kLH2GH, Soon()).ok());
    EXPECT_FALSE(FirstMismatch(theirs, len, seed).has_value());
    ASSERT_TRUE(a.Copy(Addr(back.data()), gva, len, Direction::kAuto, Soon()).ok());
    EXPECT_EQ(back, src);
    // Into our own slice from theirs: a READ into memory mapped here.
    const uint64_t mine = *a.SliceAddress(a.rank()) + off;
    std::memset(*a.LocalAddress(mine, len), 0, len);
    ASSERT_TRUE(a.Copy(mine, gva, len, Direction::kAuto, Soon()).ok());
    EXPECT_FALSE(FirstMismatch(static_cast<uint8_t*>(*a.LocalAddress(mine, len)), len, seed).has_value());
    // Bounds are checked before anything moves.
    const uint64_t end = *a.SliceAddress(target.rank()) + config.rank_size;
    EXPECT_EQ(a.Copy(end - 8, Addr(src.data()), 16).code(), Code::kOutOfRange);
  }
  // Between the slices of two other peers: bounced through this one.
  const uint64_t from = *a.SliceAddress(pools[1]->rank()) + off, to = *a.SliceAddress(pools[2]->rank()) + 3 * off;
  auto route = a.Route(to, from, len);
  ASSERT_TRUE(route.ok()) << route.status().ToString();
  EXPECT_NE(route->reason.find("bounced"), std::string::npos) << route->ToString();
  const uint64_t seed = FreshSeed();
  FillRandom(static_cast<uint8_t*>(*pools[1]->LocalAddress(from, len)), len, seed);
  ASSERT_TRUE(a.Copy(to, from, len).ok());
  EXPECT_FALSE(FirstMismatch(static_cast<uint8_t*>(*pools[2]->LocalAddress(to, len)), len, seed).has_value());
  // A peer that left: PEER_DOWN (the notice is asynchronous).
  const uint32_t gone_rank = pools[2]->rank();
  const uint64_t gone = *a.SliceAddress(gone_rank);
  ASSERT_TRUE(pools[2]->Leave().ok());
  if (config.transport == "loop") {
    // The test's loop transport writes the peer's memory directly, and Leave unmapped it: it may
    // not be used before the notice arrives (a real transport's peer answers for its memory).
    for (int i = 0; i < 500 && a.HasSlice(gone_rank); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_FALSE(a.HasSlice(gone_rank)) << "the peer's leaving was never noticed";
  }
  Status s;
  std::vector<uint8_t> buf(64);
  for (int i = 0; i < 500; ++i) {
    s = a.Copy(gone, Addr(buf.data()), buf.size());
    if (s.code() == Code::kPeerDown) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
}

TEST(Pool, ATransportAddedThroughTheRegistryReachesPeers) {
  Config config = TestConfig("loop", 8 << 20);
  config.transport = "loop";
  const int posted = testing::LoopTransport::posted.load();
  CheckPoolOverNetworkPath(config, testing::RegistryWithLoop());
  EXPECT_GT(testing::LoopTransport::posted.load(), posted);  // the copies went through its Post
}

#if WEFT_HAVE_UCX
// transport=ucx, over UCX's tcp transport here.
TEST(Pool, PeersAreReachedOverUcx) {
  if (std::string why; !testing::UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  Config config = TestConfig("ucx", 8 << 20);
  config.transport = "ucx";
  config.cluster_secret = "ucx-test-" + std::to_string(FreshSeed());
  ::setenv("UCX_TLS", "tcp", 1);  // read by each pool's ucx transport as it starts
  CheckPoolOverNetworkPath(config, engine::BuiltinTransports());
  ::unsetenv("UCX_TLS");
}
#endif

TEST(Pool, TcpNeedsTheSameSecret) {
  Config config = TestConfig("tcp-secret", 4 << 20);
  config.transport = "tcp";
  EXPECT_EQ(Pool::Join(config, JoinMode::kHost).status().code(), Code::kUnauthenticated);  // no secret at all
  config.cluster_secret = "right";
  auto host = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  Config intruder = config;
  intruder.cluster_secret = "wrong";
  auto other = Pool::Join(intruder, JoinMode::kJoin);
  ASSERT_TRUE(other.ok()) << other.status().ToString();  // the coordinator is a local socket
  std::vector<uint8_t> buf(4096, 7);
  ASSERT_TRUE((*host)->WaitForPeers(2, Soon()).ok());
  const uint64_t theirs = *(*host)->SliceAddress((*other)->rank());
  // Both directions are refused: each data server rejects the other's proof.
  EXPECT_EQ((*host)->Copy(theirs, Addr(buf.data()), buf.size()).code(), Code::kUnauthenticated);
  EXPECT_EQ((*other)->Copy(Addr(buf.data()), *(*host)->SliceAddress((*host)->rank()), 16).code(),
            Code::kUnauthenticated);
}

TEST(Pool, KilledPeerFailsCopiesWithPeerDownAndOthersKeepWorking) {
  Config config = TestConfig("kill");
  PeerProcesses children(2, [&](int i) -> int {
    auto pool = Pool::Join(config, JoinMode::kJoin);
    if (!pool.ok()) return 10;
    if (!(*pool)->WaitForPeers(3, Soon()).ok() || !(*pool)->Barrier(Soon()).ok()) return 11;
    // Child 0 is the victim and just waits to be killed; child 1 keeps copying to rank 0.
    if (i == 0) {
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    std::vector<uint8_t> buf(1 << 20);
    uint64_t target = *(*pool)->SliceAddress(0);
    for (int k = 0; k < 50; ++k)
      if (!(*pool)->Copy(target, Addr(buf.data()), buf.size()).ok()) return 12;
    // Once the victim is gone, copies to the host still work and a barrier of the two passes.
    for (int k = 0; k < 3000 && (*pool)->LiveRanks().size() != 2; ++k)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if ((*pool)->LiveRanks().size() != 2) return 13;
    for (int k = 0; k < 50; ++k)
      if (!(*pool)->Copy(target, Addr(buf.data()), buf.size()).ok()) return 14;
    Status barrier = (*pool)->Barrier(Soon());
    if (!barrier.ok()) fprintf(stderr, "survivor barrier: %s\n", barrier.ToString().c_str());
    return barrier.ok() ? 0 : 15;
  });
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  children.Release();
  auto ranks = (*pool)->WaitForPeers(3, Soon());
  ASSERT_TRUE(ranks.ok());
  ASSERT_TRUE((*pool)->Barrier(Soon()).ok());
  // Copy to both other peers from threads; child 0 is killed meanwhile.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, down{0}, other{0};
  std::vector<std::thread> copiers;
  for (uint32_t r : *ranks) {
    if (r == (*pool)->rank()) continue;
    copiers.emplace_back([&, r] {
      std::vector<uint8_t> buf(256 << 10);
      uint64_t target = *(*pool)->SliceAddress(r);
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (!stop && std::chrono::steady_clock::now() < until) {
        Status s = (*pool)->Copy(target, Addr(buf.data()), buf.size());
        if (s.ok()) ok++;
        else if (s.code() == Code::kPeerDown) down++;
        else other++;
      }
    });
  }
  while (ok.load() < 20) std::this_thread::yield();
  children.Kill(0);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (down.load() == 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  stop = true;
  for (auto& c : copiers) c.join();
  EXPECT_GT(down.load(), 0) << "copies to the killed peer never failed with PEER_DOWN";
  EXPECT_EQ(other.load(), 0);
  // Exactly one rank is gone, and the survivor still answers.
  auto live = (*pool)->LiveRanks();
  EXPECT_EQ(live.size(), 2u);
  Status barrier = (*pool)->Barrier(Soon());
  EXPECT_TRUE(barrier.ok()) << barrier.ToString();
  EXPECT_EQ(children.Wait(1), 0) << "the surviving peer failed";
  EXPECT_EQ((*pool)->Alloc(64, Placement::OnRank(*std::find_if(ranks->begin(), ranks->end(), [&](uint32_t r) {
              return std::find(live.begin(), live.end(), r) == live.end();
            }))).status().code(),
            Code::kPeerDown);
}

// Issue 15: a tcp copy in flight to a peer that froze (SIGSTOP: its data server never answers
// and its sockets never close) must not stall the control thread that declares the peer down,
// and must itself fail with PEER_DOWN once the pool says so, not wait out its 30 s deadline.
// Meanwhile another peer's join and leave are seen at once.
bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

bool WaitForFile(const std::string& path, std::chrono::seconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!Exists(path) && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return Exists(path);
}

void Touch(const std::string& path) {
  if (FILE* f = ::fopen(path.c_str(), "w")) ::fclose(f);
}

// Copies 4 KiB to the slice of `rank` until one succeeds (true) or `limit` passes.
bool CopySucceedsWithin(Pool& pool, uint32_t rank, std::chrono::seconds limit) {
  std::vector<uint8_t> buf(4096, 7);
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    auto at = pool.SliceAddress(rank);
    if (at.ok() && pool.Copy(*at, Addr(buf.data()), buf.size()).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void CheckFrozenPeerFailsCopiesInFlight(const std::string& transport) {
  Config config = TestConfig("frozen-" + transport);
  config.transport = transport;
  config.cluster_secret = "test-secret-" + std::to_string(FreshSeed());
  config.peer_timeout_ms = 500;
  config.deadline_ms = 30000;
  const std::string join_marker = "/tmp/weft-test-" + config.pool_name + ".join";
  const std::string leave_marker = "/tmp/weft-test-" + config.pool_name + ".leave";
  struct Cleanup {
    std::vector<std::string> paths;
    ~Cleanup() {
      for (const auto& p : paths) ::unlink(p.c_str());
    }
  } cleanup{{join_marker, leave_marker}};
  // Child 0 is frozen; child 1 joins only once that happened, and leaves when told.
  PeerProcesses children(2, [&](int i) -> int {
    if (i == 1 && !WaitForFile(join_marker, std::chrono::seconds(60))) return 20;
    auto pool = Pool::Join(config, JoinMode::kJoin);
    if (!pool.ok()) return 10;
    if (i == 0) {
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    if (!WaitForFile(leave_marker, std::chrono::seconds(60))) return 21;
    return (*pool)->Leave().ok() ? 0 : 22;
  });
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  Pool& p = **pool;
  children.Release();
  auto ranks = p.WaitForPeers(2, Soon());
  ASSERT_TRUE(ranks.ok()) << ranks.status().ToString();
  const uint32_t victim = (*ranks)[0] == p.rank() ? (*ranks)[1] : (*ranks)[0];
  ASSERT_TRUE(CopySucceedsWithin(p, victim, std::chrono::seconds(10))) << "the victim's slice never attached";

  // Far more than the sockets buffer: the copy stays in flight until something ends it. A first
  // one connects every lane, so the frozen peer's copy is stuck on sockets, not in a handshake.
  std::vector<uint8_t> big(48 << 20, 1);
  const uint64_t target = *p.SliceAddress(victim);
  ASSERT_TRUE(p.Copy(target, Addr(big.data()), big.size()).ok());
  ::kill(children.pid(0), SIGSTOP);
  std::promise<Status> copied;
  auto copy_result = copied.get_future();
  std::thread copier([&] { copied.set_value(p.Copy(target, Addr(big.data()), big.size())); });
  Touch(join_marker);

  // The pool declares the victim down after 0.5 s; the copy must end then, far from its 30 s.
  const bool ended = copy_result.wait_for(std::chrono::seconds(15)) == std::future_status::ready;
  EXPECT_TRUE(ended) << "the copy to the frozen peer still waits (for its 30 s deadline?)";
  // The newcomer's join got through the control thread and its slice is reached.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  uint32_t newcomer = UINT32_MAX;
  while (newcomer == UINT32_MAX && std::chrono::steady_clock::now() < until) {
    for (uint32_t r : p.LiveRanks())
      if (r != p.rank() && r != victim) newcomer = r;
    if (newcomer == UINT32_MAX) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_NE(newcomer, UINT32_MAX) << "the newcomer never showed up";
  EXPECT_TRUE(CopySucceedsWithin(p, newcomer, std::chrono::seconds(10)))
      << "the newcomer's join was not handled while a copy to the frozen peer was in flight";
  copier.join();
  Status s = copy_result.get();
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
  EXPECT_NE(s.message().find("declared down"), std::string::npos) << s.ToString();
  EXPECT_EQ(p.Copy(target, Addr(big.data()), 4096).code(), Code::kPeerDown);

  // Its leave is seen too: copies to it fail with PEER_DOWN.
  Touch(leave_marker);
  EXPECT_EQ(children.Wait(1, std::chrono::seconds(30)), 0) << "the newcomer failed";
  std::vector<uint8_t> small(4096);
  Status after = OkStatus();
  for (int k = 0; k < 500; ++k) {
    after = p.Copy(*p.SliceAddress(newcomer), Addr(small.data()), small.size());
    if (after.code() == Code::kPeerDown) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(after.code(), Code::kPeerDown) << after.ToString();
  children.Kill(0);  // SIGKILL ends a stopped process too
}

TEST(Pool, FrozenPeerFailsTcpCopiesInFlightAndDoesNotStallTheControlThread) {
  CheckFrozenPeerFailsCopiesInFlight("tcp");
}

#if WEFT_HAVE_UCX
// The same over ucx (UCX's own tcp here): the forced close of the endpoint ends the flush.
TEST(Pool, FrozenPeerFailsUcxCopiesInFlightAndDoesNotStallTheControlThread) {
  if (std::string why; !testing::UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  ::setenv("UCX_TLS", "tcp", 1);  // read by each pool's ucx transport as it starts
  CheckFrozenPeerFailsCopiesInFlight("ucx");
  ::unsetenv("UCX_TLS");
}
#endif

// Joins the pool whose coordinator another process is starting (retries while none answers).
Result<std::unique_ptr<Pool>> JoinOnceUp(const Config& config) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    auto pool = Pool::Join(config, JoinMode::kJoin);
    if (pool.ok() || pool.status().code() != Code::kUnavailable || std::chrono::steady_clock::now() > until) {
      return pool;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

// Issue 15: a frozen coordinator (SIGSTOP) used to cost every control call its whole deadline
// (30 s), since its sockets stay open. It lives in a child process here; the two peers in this
// process find that it stopped answering their heartbeats, so a call in flight and the next ones
// fail with UNAVAILABLE within about peer_timeout_ms, copies between the peers go on, and once it
// runs again control calls work again by themselves.
TEST(Pool, FrozenCoordinatorFailsControlCallsFastAndCopiesGoOn) {
  Config config = TestConfig("frozen-coordinator");
  config.heartbeat_ms = 100;
  config.peer_timeout_ms = 1000;
  config.deadline_ms = 30000;
  PeerProcesses host(1, [&](int) -> int {
    auto coordinator = PoolCoordinator::Start(config);
    if (!coordinator.ok()) return 10;
    std::this_thread::sleep_for(std::chrono::seconds(300));
    return 0;
  });
  host.Release();
  auto a = JoinOnceUp(config);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = JoinOnceUp(config);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE((*a)->WaitForPeers(2, Soon()).ok());
  ASSERT_TRUE((*b)->WaitForPeers(2, Soon()).ok());
  const uint32_t b_rank = (*b)->rank();
  ASSERT_TRUE(CopySucceedsWithin(**a, b_rank, std::chrono::seconds(10)));

  ::kill(host.pid(0), SIGSTOP);
  int wait_status = 0;  // the signal is asynchronous: wait until the child has stopped
  ASSERT_EQ(::waitpid(host.pid(0), &wait_status, WUNTRACED), host.pid(0));
  ASSERT_TRUE(WIFSTOPPED(wait_status));
  const auto stopped = std::chrono::steady_clock::now();
  auto in_flight = (*a)->Alloc(4096, Placement::Local());
  const auto first = std::chrono::steady_clock::now() - stopped;
  ASSERT_FALSE(in_flight.ok());
  EXPECT_EQ(in_flight.status().code(), Code::kUnavailable) << in_flight.status().ToString();
  EXPECT_NE(in_flight.status().message().find("stopped answering"), std::string::npos)
      << in_flight.status().ToString();
  EXPECT_LT(first, std::chrono::seconds(10)) << "the call waited for its deadline";
  // Later calls fail at once, barriers and frees too.
  const auto again = std::chrono::steady_clock::now();
  EXPECT_EQ((*b)->Alloc(4096, Placement::Local()).status().code(), Code::kUnavailable);
  EXPECT_EQ((*b)->Barrier(Soon()).code(), Code::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - again, std::chrono::seconds(10));
  // The data path never asks the coordinator.
  std::vector<uint8_t> out(1 << 20), back(1 << 20);
  const uint64_t seed = FreshSeed();
  FillRandom(out.data(), out.size(), seed);
  auto target = (*a)->SliceAddress(b_rank);
  ASSERT_TRUE(target.ok());
  ASSERT_TRUE((*a)->Copy(*target, Addr(out.data()), out.size()).ok());
  ASSERT_TRUE((*b)->Copy(Addr(back.data()), *target, back.size()).ok());
  EXPECT_FALSE(FirstMismatch(back.data(), back.size(), seed).has_value());

  ::kill(host.pid(0), SIGCONT);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  auto gva = (*a)->Alloc(4096, Placement::OnRank(b_rank));
  while (!gva.ok() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gva = (*a)->Alloc(4096, Placement::OnRank(b_rank));
  }
  ASSERT_TRUE(gva.ok()) << "control calls did not recover: " << gva.status().ToString();
  EXPECT_TRUE((*a)->Free(*gva).ok());
  // The coordinator read the heartbeats that waited in its sockets: nobody was declared down.
  auto live = (*a)->LiveRanks();
  EXPECT_NE(std::find(live.begin(), live.end(), b_rank), live.end());
  EXPECT_TRUE((*a)->Copy(*target, Addr(out.data()), 4096).ok());
}

TEST(Pool, BadInputGetsSpecificErrors) {
  Config config = TestConfig("bad", 4 << 20);
  config.max_ranks = 2;
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  Pool& p = **pool;
  std::vector<uint8_t> buf(8 << 20);

  // A full pool, then the same pool usable again after a free.
  auto big = p.Alloc(4 << 20);
  ASSERT_TRUE(big.ok()) << big.status().ToString();
  auto full = p.Alloc(64);
  EXPECT_EQ(full.status().code(), Code::kPoolFull);
  EXPECT_NE(full.status().message().find("largest"), std::string::npos) << full.status().message();
  ASSERT_TRUE(p.Free(*big).ok());
  EXPECT_EQ(p.Free(*big).code(), Code::kDoubleFree);
  EXPECT_EQ(p.Free(12345).code(), Code::kInvalidAddress);
  EXPECT_EQ(p.Alloc(0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(p.Alloc(64, Placement::OnRank(1)).status().code(), Code::kNotFound);

  // Copies: past the slice, a rank no peer holds, null.
  const uint64_t slice = *p.SliceAddress(p.rank());
  EXPECT_EQ(p.Copy(slice + (4 << 20) - 8, Addr(buf.data()), 16).code(), Code::kOutOfRange);
  EXPECT_EQ(p.Copy(Addr(buf.data()), *p.SliceAddress(1), 16).code(), Code::kInvalidAddress);
  EXPECT_EQ(p.Copy(0, Addr(buf.data()), 16).code(), Code::kInvalidArgument);
  EXPECT_EQ(p.RankOf(42).status().code(), Code::kInvalidAddress);
  EXPECT_EQ(*p.RankOf(slice + 100), p.rank());

  // A transport this build lacks, and one the pool cannot use for its peers' slices.
  Config no_such = config;
  no_such.transport = "rdma-next";
  auto lacking = Pool::Join(no_such, JoinMode::kJoin);
  EXPECT_EQ(lacking.status().code(), Code::kNotSupported);
  EXPECT_NE(lacking.status().message().find("shm"), std::string::npos) << lacking.status().message();
  EXPECT_NE(lacking.status().message().find("tcp"), std::string::npos) << lacking.status().message();
  Config engine_only = config;
  engine_only.transport = "cma";
  EXPECT_EQ(Pool::Join(engine_only, JoinMode::kJoin).status().code(), Code::kNotSupported);

  // Joining with another pool name or size on the same coordinator.
  Config other_name = config;
  other_name.pool_name = "someone-else";
  other_name.coordinator = config.CoordinatorPath();
  EXPECT_EQ(Pool::Join(other_name, JoinMode::kJoin).status().code(), Code::kMismatch);
  Config other_size = config;
  other_size.rank_size = 8 << 20;
  EXPECT_EQ(Pool::Join(other_size, JoinMode::kJoin).status().code(), Code::kMismatch);
  // A second coordinator on the same socket is refused; a join with nobody there is UNAVAILABLE.
  EXPECT_EQ(Pool::Join(config, JoinMode::kHost).status().code(), Code::kAlreadyExists);
  Config nobody = TestConfig("nobody", 4 << 20);
  EXPECT_EQ(Pool::Join(nobody, JoinMode::kJoin).status().code(), Code::kUnavailable);

  // max_ranks = 2: a second peer fits, a third is refused.
  auto second = Pool::Join(config, JoinMode::kJoin);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ(Pool::Join(config, JoinMode::kJoin).status().code(), Code::kPoolFull);
  // The second peer leaves: copies to its memory fail with PEER_DOWN.
  const uint64_t theirs = *p.SliceAddress((*second)->rank());
  ASSERT_TRUE((*second)->Leave().ok());
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  Status s;
  do {
    s = p.Copy(theirs, Addr(buf.data()), 16);
  } while (s.ok() && std::chrono::steady_clock::now() < until);
  EXPECT_EQ(s.code(), Code::kPeerDown);
  EXPECT_EQ((*second)->Copy(slice, Addr(buf.data()), 16).code(), Code::kCancelled);
  auto late = (*second)->CopyAsync(slice, Addr(buf.data()), 16);
  EXPECT_EQ(late.Wait(Soon()).code(), Code::kCancelled);
  ASSERT_TRUE(late.Poll().has_value());
  EXPECT_EQ(late.Poll()->code(), Code::kCancelled);
}

// The device region without a GPU (CI): joining with a device slice is refused with the reason
// and what to do, nothing is left behind (the same config without one joins at once), and the
// region's addresses answer with specific errors. With a GPU the slice is created instead
// (tests/gpu/pool_device_test covers its bytes).
TEST(Pool, DeviceSliceNeedsAGpuAndFitsTheRegion) {
  Config config = TestConfig("dev", 4 << 20);
  config.device_size = 64ull << 20;  // more than rank_size rounded up to 2 MiB
  auto too_big = Pool::Join(config, JoinMode::kHost);
  ASSERT_FALSE(too_big.ok());
  EXPECT_EQ(too_big.status().code(), Code::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("device_size"), std::string::npos) << too_big.status().ToString();

  config.device_size = 2 << 20;
  auto with_device = Pool::Join(config, JoinMode::kHost);
  if (DeviceSlicesUsable().ok()) {
    ASSERT_TRUE(with_device.ok()) << with_device.status().ToString();
    EXPECT_EQ((*with_device)->device_size(), 2u << 20);
    EXPECT_TRUE((*with_device)->HasSlice((*with_device)->rank(), Medium::kDevice));
    return;
  }
  ASSERT_FALSE(with_device.ok());
  EXPECT_EQ(with_device.status().code(), Code::kNotSupported);
  EXPECT_NE(with_device.status().message().find("device_size=0"), std::string::npos)
      << with_device.status().ToString();

  config.device_size = 0;
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  Pool& p = **pool;
  EXPECT_EQ(p.device_size(), 0u);
  EXPECT_TRUE(p.HasSlice(p.rank(), Medium::kHost));
  EXPECT_FALSE(p.HasSlice(p.rank(), Medium::kDevice));
  const uint64_t device_slice = *p.SliceAddress(p.rank(), Medium::kDevice);
  EXPECT_EQ(device_slice, bm::PoolAccess::Layout(p).SliceBase(Medium::kDevice, p.rank()));
  EXPECT_NE(device_slice, *p.SliceAddress(p.rank()));
  std::vector<uint8_t> buf(4096, 0x5a);
  Status s = p.Copy(device_slice, Addr(buf.data()), buf.size());
  EXPECT_EQ(s.code(), Code::kInvalidAddress);
  EXPECT_NE(s.message().find("device slice"), std::string::npos) << s.ToString();
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0x5a; }));
  EXPECT_FALSE(p.Alloc(4096, Placement::Local(Medium::kDevice)).ok());
}

// ---- What a peer advertises in its transport blobs ----

// A peer put together by hand from the pool's parts (a memfd slice, a tcp transport exporting it
// as a region of its data server, the coordinator client), so that its blobs can be what a pool
// peer of this build never sends: a transport from the future, a corrupt blob.
struct HandMadePeer {
  std::unique_ptr<mem::HostSegment> segment;
  std::unique_ptr<transport::tcp::TcpTransport> tcp;
  std::unique_ptr<meta::CoordinatorClient> client;
  uint32_t rank = 0;
};

Result<std::unique_ptr<HandMadePeer>> JoinByHand(const Config& config, const std::string& name,
                                                 const std::function<void(wire::TransportBlobs&)>& edit) {
  auto p = std::make_unique<HandMadePeer>();
  WEFT_ASSIGN_OR_RETURN(p->segment, mem::HostSegment::Create("weft-" + name, config.rank_size, -1));
  transport::tcp::TcpTransportOptions topts;
  topts.serve = transport::tcp::TcpServerOptions{};
  topts.serve->host = "127.0.0.1";
  topts.serve->auth.cluster_secret = config.cluster_secret;
  WEFT_ASSIGN_OR_RETURN(p->tcp, transport::tcp::TcpTransport::Create(topts));
  OwnSlices own;
  own.host_fd = p->segment->fd();
  WEFT_ASSIGN_OR_RETURN(own.paths["tcp"].endpoint, p->tcp->EndpointBlob());
  WEFT_ASSIGN_OR_RETURN(own.paths["tcp"].host_region,
                        p->tcp->ExportRegion({1, p->segment->data(), config.rank_size, false, -1, -1, 0}));
  SliceAdvert advert = AdvertiseSlices(own);
  edit(advert.blobs);
  meta::JoinOptions jopts;
  jopts.socket_path = config.CoordinatorPath();
  jopts.pool_name = config.pool_name;
  jopts.rank_size = config.rank_size;
  jopts.peer_name = name;
  jopts.segment.size = config.rank_size;
  jopts.segment.permissions = 3;
  jopts.segment.transports = std::move(advert.blobs);
  jopts.fds = std::move(advert.fds);
  jopts.heartbeat_interval = std::chrono::milliseconds(config.heartbeat_ms);
  WEFT_ASSIGN_OR_RETURN(p->client, meta::CoordinatorClient::Join(
                                       jopts, [](meta::SegmentDescriptor, std::vector<net::UniqueFd>) {},
                                       [](uint32_t, bool) {}));
  p->rank = p->client->rank();
  return p;
}

// Writes a fresh pattern into `peer`'s slice through `pool` and reads it back both through the
// pool and straight from the peer's memory. Returns the first failure.
Status WriteAndCheck(Pool& pool, HandMadePeer& peer) {
  const uint64_t len = 300000, off = 4096 + 7, seed = FreshSeed();
  std::vector<uint8_t> src(len), back(len, 0);
  FillRandom(src.data(), len, seed);
  const uint64_t gva = *pool.SliceAddress(peer.rank) + off;
  WEFT_RETURN_IF_ERROR(pool.Copy(gva, Addr(src.data()), len, Direction::kLH2GH, Soon()));
  if (FirstMismatch(peer.segment->data() + off, len, seed))
    return Error(Code::kInternal, "the peer's memory does not hold what was written");
  WEFT_RETURN_IF_ERROR(pool.Copy(Addr(back.data()), gva, len, Direction::kGH2LH, Soon()));
  if (back != src) return Error(Code::kInternal, "read back differs");
  return OkStatus();
}

Config BlobTestConfig(const std::string& name) {
  Config config = TestConfig(name, 4 << 20);
  config.cluster_secret = "blob-test-" + std::to_string(FreshSeed());
  return config;
}

// A peer advertising a transport this build does not know ("future-rdma") next to its usual ones
// joins; the others skip that blob and reach it as before: mapped over shm (transport=auto) and
// through its data server (transport=tcp).
TEST(Pool, UnknownTransportBlobIsSkippedAndThePeerIsStillReached) {
  Config config = BlobTestConfig("future");
  auto host = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  Config tcp_config = config;
  tcp_config.transport = "tcp";
  auto tcp_peer = Pool::Join(tcp_config, JoinMode::kJoin);
  ASSERT_TRUE(tcp_peer.ok()) << tcp_peer.status().ToString();
  auto newer = JoinByHand(config, "newer", [](wire::TransportBlobs& blobs) {
    blobs["future-rdma"] = std::string("\x05") + " a format this build has never seen";
  });
  ASSERT_TRUE(newer.ok()) << newer.status().ToString();
  for (Pool* pool : {host->get(), tcp_peer->get()}) {
    ASSERT_TRUE(pool->WaitForPeers(3, Soon()).ok());
    EXPECT_TRUE(pool->HasSlice((*newer)->rank));
    Status s = WriteAndCheck(*pool, **newer);
    EXPECT_TRUE(s.ok()) << "transport=" << pool->config().transport << ": " << s.ToString();
  }
  std::vector<uint8_t> buf(64);
  auto shm_route = (*host)->Route(*(*host)->SliceAddress((*newer)->rank), Addr(buf.data()), buf.size());
  ASSERT_TRUE(shm_route.ok()) << shm_route.status().ToString();
  EXPECT_EQ(shm_route->locality, transport::Locality::kSameNode);
  auto tcp_route = (*tcp_peer)->Route(*(*tcp_peer)->SliceAddress((*newer)->rank), Addr(buf.data()), buf.size());
  ASSERT_TRUE(tcp_route.ok()) << tcp_route.status().ToString();
  EXPECT_EQ(tcp_route->path, "tcp");
}

// A corrupt shm blob (or one naming a descriptor that did not come) disables shm for that peer
// only: the others still join and reach each other, a transport=tcp peer reaches it through its
// good tcp blob, and a transport=auto peer, which has no other path, gets UNAVAILABLE naming each
// transport's reason, at once and without a hang.
TEST(Pool, CorruptShmBlobDisablesShmForThatPeerOnly) {
  Config config = BlobTestConfig("corrupt");
  auto host = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  auto plain = Pool::Join(config, JoinMode::kJoin);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  Config tcp_config = config;
  tcp_config.transport = "tcp";
  auto tcp_peer = Pool::Join(tcp_config, JoinMode::kJoin);
  ASSERT_TRUE(tcp_peer.ok()) << tcp_peer.status().ToString();
  auto corrupt = JoinByHand(config, "corrupt", [](wire::TransportBlobs& blobs) { blobs["shm"] = "\x07garbage"; });
  ASSERT_TRUE(corrupt.ok()) << corrupt.status().ToString();
  auto stray = JoinByHand(config, "stray", [](wire::TransportBlobs& blobs) { blobs["shm"] = EncodeShmBlob({3}); });
  ASSERT_TRUE(stray.ok()) << stray.status().ToString();
  for (Pool* pool : {host->get(), plain->get(), tcp_peer->get()}) ASSERT_TRUE(pool->WaitForPeers(5, Soon()).ok());

  for (HandMadePeer* bad : {corrupt->get(), stray->get()}) {
    Status over_tcp = WriteAndCheck(**tcp_peer, *bad);
    EXPECT_TRUE(over_tcp.ok()) << over_tcp.ToString();
    for (Pool* pool : {host->get(), plain->get()}) {
      EXPECT_FALSE(pool->HasSlice(bad->rank));
      const auto start = std::chrono::steady_clock::now();
      Status s = WriteAndCheck(*pool, *bad);
      EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
      EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
      for (const char* part : {"shm: ", "PROTOCOL", "transport=tcp"})
        EXPECT_NE(s.message().find(part), std::string::npos) << "'" << part << "' in " << s.ToString();
    }
  }
  // Among themselves the pool peers are unaffected.
  std::vector<uint8_t> buf(4096, 0x3c), back(4096, 0);
  const uint64_t theirs = *(*host)->SliceAddress((*plain)->rank()) + 64;
  ASSERT_TRUE((*host)->Copy(theirs, Addr(buf.data()), buf.size()).ok());
  ASSERT_TRUE((*plain)->Copy(Addr(back.data()), theirs, back.size()).ok());
  EXPECT_EQ(back, buf);
}

// Leave while other threads copy (sync, batch, async) and wait in the coordinator: every call
// ends with OK (and exact bytes) or CANCELLED, none touches a torn-down engine (the ASAN build
// runs this too), and the waiter is woken with an error instead of waiting forever.
TEST(Pool, LeaveWhileOtherThreadsAreCalling) {
  Config config = TestConfig("leave-race", 8 << 20);
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  Pool& p = **pool;
  const uint64_t slice = *p.SliceAddress(p.rank());
  std::atomic<int> ok{0}, cancelled{0}, other{0};
  const Deadline give_up = Deadline::After(std::chrono::seconds(60));
  auto tally = [&](const Status& s) {
    if (s.ok()) ok++;
    else if (s.code() == Code::kCancelled) cancelled++;
    else other++;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> src(64 << 10), dst(64 << 10);
      const uint64_t at = slice + static_cast<uint64_t>(t) * (1 << 20);
      // Each thread goes on until it has seen the pool left (or, if something is wrong, until
      // the safety deadline; the counts below then fail the test).
      for (bool seen_cancel = false; !seen_cancel && !give_up.expired();) {
        uint64_t seed = FreshSeed();
        FillRandom(src.data(), src.size(), seed);
        Status w = t == 0   ? p.Copy(at, Addr(src.data()), src.size())
                   : t == 1 ? p.CopyBatch({{CopyRequest{at, Addr(src.data()), src.size()}}})[0]
                            : p.Wait(p.CopyAsync(at, Addr(src.data()), src.size()));
        tally(w);
        seen_cancel = w.code() == Code::kCancelled;
        if (!w.ok()) continue;
        Status r = p.Copy(Addr(dst.data()), at, dst.size());
        tally(r);
        seen_cancel = r.code() == Code::kCancelled;
        if (r.ok()) {
          EXPECT_FALSE(FirstMismatch(dst.data(), dst.size(), seed).has_value());
        }
      }
    });
  }
  Status waited;
  std::thread waiter([&] { waited = p.WaitForPeers(5, Deadline::Never()).status(); });
  while (ok.load() < 6 && !give_up.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(p.Leave().ok());
  for (auto& th : threads) th.join();
  waiter.join();
  EXPECT_FALSE(waited.ok());
  EXPECT_GT(ok.load(), 0);
  EXPECT_GE(cancelled.load(), 3);  // every thread saw it
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(p.Copy(slice, slice, 8).code(), Code::kCancelled);
}

TEST(Pool, UnifiedVaMakesGvasDereferenceable) {
  Config config = TestConfig("uva", 4 << 20);
  config.unified_va = true;
  config.gva_base = 0x300000000000ull;  // away from other tests in this process
  auto pool = Pool::Join(config, JoinMode::kHost);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  if (!(*pool)->unified_va()) GTEST_SKIP() << "the VA window could not be reserved here";
  auto gva = (*pool)->Alloc(4096);
  ASSERT_TRUE(gva.ok());
  std::vector<uint8_t> src(4096);
  const uint64_t seed = FreshSeed();
  FillRandom(src.data(), src.size(), seed);
  ASSERT_TRUE((*pool)->Copy(*gva, Addr(src.data()), src.size()).ok());
  EXPECT_FALSE(FirstMismatch(reinterpret_cast<void*>(*gva), 4096, seed).has_value());
  EXPECT_EQ(*(*pool)->LocalAddress(*gva), reinterpret_cast<void*>(*gva));
  // A second pool at the same base cannot have the window and falls back to translation.
  Config second = TestConfig("uva2", 4 << 20);
  second.unified_va = true;
  second.gva_base = config.gva_base;
  auto fallback = Pool::Join(second, JoinMode::kHost);
  ASSERT_TRUE(fallback.ok());
  EXPECT_FALSE((*fallback)->unified_va());
  auto g2 = (*fallback)->Alloc(4096);
  ASSERT_TRUE(g2.ok());
  ASSERT_TRUE((*fallback)->Copy(*g2, Addr(src.data()), 4096).ok());
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE((*fallback)->Copy(Addr(back.data()), *g2, 4096).ok());
  EXPECT_EQ(back, src);
}

}  // namespace
}  // namespace weft::bm
