// The staging pipeline (transport/staging/staging_pipeline.h) with a stand-in device: host memory
// that only the injected copy may touch (it checks that one end is in the "device" arena and the
// other in a bounce buffer from the injected allocator), counted, and able to fail on a chosen
// byte. Random sizes (1 B .. 64 MiB, unaligned), fresh random data, poisoned destinations, every
// byte compared; a failing copy fails its request only; no bounce buffer is leaked; the overlap
// is observed through the order of events (never through durations); over real TCP to a data
// server with a stand-in device segment.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "base/random.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_staging.h"
#include "transport/tcp/tcp_client.h"
#include "transport/tcp/tcp_server.h"
#include "transport/tcp/tcp_transport.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "staging-test-secret";

Deadline Soon(int ms = 60000) { return Deadline::After(Millis(ms)); }

struct Buffer {
  explicit Buffer(uint64_t n) : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {}
  ~Buffer() { std::free(data); }
  uint64_t size;
  uint8_t* data;
};

// Host bounce buffers from a counting allocator, so tests see that the pipeline allocates
// through it, stays within its bound and frees everything.
struct CountingAlloc {
  std::mutex mu;
  std::set<uint8_t*> live;
  uint64_t allocs = 0;
  HostBufferAllocator Get() {
    return {[this](uint64_t bytes) -> Result<void*> {
              auto* p = static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
              std::lock_guard lk(mu);
              live.insert(p);
              ++allocs;
              return static_cast<void*>(p);
            },
            [this](void* p, uint64_t) {
              {
                std::lock_guard lk(mu);
                live.erase(static_cast<uint8_t*>(p));
              }
              std::free(p);
            }};
  }
  bool Owns(const uint8_t* p, uint64_t len, uint64_t buffer_bytes) {
    std::lock_guard lk(mu);
    auto it = live.upper_bound(const_cast<uint8_t*>(p));
    if (it == live.begin()) return false;
    --it;
    return p >= *it && p + len <= *it + buffer_bytes;
  }
};

// The stand-in device: copies with memcpy, after checking which end is which.
struct FakeDevice {
  explicit FakeDevice(uint64_t n) : arena(n) {}
  Buffer arena;
  CountingAlloc* alloc = nullptr;
  uint64_t buffer_bytes = 0;
  std::atomic<uint64_t> copies{0}, bytes{0}, wrong_ends{0};
  std::atomic<int64_t> fail_at{-1};  // arena offset whose copy fails (-1: none)
  // Observers: called with (device offset, len, to_device) when a copy starts.
  std::function<void(uint64_t, uint64_t, bool)> on_copy;

  bool InArena(const void* p, uint64_t len) const {
    auto a = reinterpret_cast<const uint8_t*>(p);
    return a >= arena.data && a + len <= arena.data + arena.size;
  }
  DeviceStagingOps Ops(CountingAlloc* a, uint64_t bbytes) {
    alloc = a;
    buffer_bytes = bbytes;
    DeviceStagingOps ops;
    ops.host = a ? a->Get() : HostBufferAllocator{};
    ops.copy = [this](void* dst, const void* src, uint64_t len) -> Status {
      const bool to_device = InArena(dst, len);
      const uint8_t* dev = static_cast<const uint8_t*>(to_device ? dst : src);
      const uint8_t* host = static_cast<const uint8_t*>(to_device ? src : dst);
      if (to_device == InArena(src, len) || (alloc && !alloc->Owns(host, len, buffer_bytes))) {
        ++wrong_ends;
        return Error(Code::kInternal, "the stand-in device copy got no bounce buffer / device pair");
      }
      const uint64_t off = dev - arena.data;
      if (on_copy) on_copy(off, len, to_device);
      const int64_t f = fail_at.load();
      if (f >= 0 && static_cast<uint64_t>(f) >= off && static_cast<uint64_t>(f) < off + len)
        return Error(Code::kCuda, "injected copy failure at device offset {}", f);
      std::memcpy(dst, src, len);
      ++copies;
      bytes += len;
      return OkStatus();
    };
    return ops;
  }
};

// A network stand-in: moves each piece between its bounce buffer and a "remote" region.
struct FakeRemote {
  explicit FakeRemote(uint64_t n) : mem(n) {}
  Buffer mem;
  std::vector<uint64_t> remote_off;  // per staged request
  std::atomic<uint64_t> rounds{0};
  std::function<void(size_t round, std::span<const StagedPiece>)> on_round;
  NetworkRound Net(std::span<const StagedRequest> reqs) {
    return [this, reqs](std::span<const StagedPiece> pieces) {
      size_t r = rounds++;
      if (on_round) on_round(r, pieces);
      for (const StagedPiece& p : pieces) {
        uint8_t* remote = mem.data + remote_off[p.request] + p.offset;
        if (reqs[p.request].to_network) std::memcpy(remote, p.host, p.len);
        else std::memcpy(p.host, remote, p.len);
      }
      return std::vector<Status>(pieces.size());
    };
  }
};

StagingOptions SmallSlices() {
  StagingOptions o;
  o.slice_bytes = 1u << 20;
  o.buffers = 4;
  o.max_buffers = 8;
  return o;
}

TEST(StagingPipeline, RandomSizesEveryByteBothWays) {
  constexpr uint64_t kMax = 64ull << 20;
  FakeDevice dev(kMax + 8192);
  FakeRemote remote(kMax + 8192);
  CountingAlloc alloc;
  StagingOptions o = SmallSlices();
  StagingPipeline pipe(o, dev.Ops(&alloc, o.slice_bytes));
  uint64_t state = FreshSeed();
  std::vector<uint64_t> sizes = {1, 2, 4095, 4097, (1u << 20) - 1, 1u << 20, (1u << 20) + 1, (3u << 20) + 7, kMax};
  for (int i = 0; i < 4; ++i) sizes.push_back(1 + SplitMix64(state) % kMax);
  for (uint64_t len : sizes) {
    SCOPED_TRACE(::testing::Message() << len << " bytes");
    const uint64_t off_d = SplitMix64(state) % 4096, off_r = SplitMix64(state) % 4096;
    // WRITE: device -> network.
    uint64_t seed = FreshSeed();
    FillRandom(dev.arena.data + off_d, len, seed);
    std::memset(remote.mem.data + off_r, 0xEE, len);
    std::vector<StagedRequest> w = {{true, dev.arena.data + off_d, len}};
    remote.remote_off = {off_r};
    auto res = pipe.Run(w, remote.Net(w), Soon());
    ASSERT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_FALSE(FirstMismatch(remote.mem.data + off_r, len, seed).has_value()) << "WRITE";
    // READ: network -> device, fresh bytes.
    seed = FreshSeed();
    FillRandom(remote.mem.data + off_r, len, seed);
    std::memset(dev.arena.data + off_d, 0x5A, len);
    std::vector<StagedRequest> r = {{false, dev.arena.data + off_d, len}};
    res = pipe.Run(r, remote.Net(r), Soon());
    ASSERT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_FALSE(FirstMismatch(dev.arena.data + off_d, len, seed).has_value()) << "READ";
  }
  EXPECT_EQ(dev.wrong_ends.load(), 0u);
  auto ps = pipe.pool_stats();
  EXPECT_EQ(ps.in_use, 0u);
  EXPECT_LE(ps.allocated, o.max_buffers);  // bounded whatever the sizes
  EXPECT_EQ(alloc.allocs, ps.allocated);   // through the injected allocator, reused
  EXPECT_GT(pipe.stats().rounds, sizes.size());
}

TEST(StagingPipeline, ManySmallRequestsArePackedAndMixedWithLargeOnes) {
  FakeDevice dev(16u << 20);
  FakeRemote remote(16u << 20);
  CountingAlloc alloc;
  StagingOptions o = SmallSlices();
  StagingPipeline pipe(o, dev.Ops(&alloc, o.slice_bytes));
  // 300 pages of 16 KiB + 7 bytes (unaligned), alternating WRITE and READ, plus two large ones.
  constexpr uint64_t kPage = (16u << 10) + 7;
  std::vector<StagedRequest> reqs;
  remote.remote_off.clear();
  uint64_t at = 0;
  for (int i = 0; i < 300; ++i, at += kPage) {
    reqs.push_back({i % 2 == 0, dev.arena.data + at, kPage});
    remote.remote_off.push_back(at);
  }
  for (bool w : {true, false}) {
    reqs.push_back({w, dev.arena.data + at, (2u << 20) + 3});
    remote.remote_off.push_back(at);
    at += (2u << 20) + 3;
  }
  const uint64_t seed_dev = FreshSeed(), seed_rem = FreshSeed();
  FillRandom(dev.arena.data, at, seed_dev);
  FillRandom(remote.mem.data, at, seed_rem);
  std::vector<uint8_t> want_dev(dev.arena.data, dev.arena.data + at), want_rem(remote.mem.data, remote.mem.data + at);
  for (size_t i = 0; i < reqs.size(); ++i) {
    uint64_t off = remote.remote_off[i];
    if (reqs[i].to_network) {
      std::memcpy(want_rem.data() + off, want_dev.data() + off, reqs[i].len);
      std::memset(remote.mem.data + off, 0xEE, reqs[i].len);  // poisoned destination
    } else {
      std::memcpy(want_dev.data() + off, want_rem.data() + off, reqs[i].len);
      std::memset(dev.arena.data + off, 0xEE, reqs[i].len);
    }
  }
  uint64_t copies_before = dev.copies;
  auto res = pipe.Run(reqs, remote.Net(reqs), Soon());
  for (size_t i = 0; i < res.size(); ++i) EXPECT_TRUE(res[i].ok()) << i << ": " << res[i].ToString();
  EXPECT_EQ(std::memcmp(dev.arena.data, want_dev.data(), at), 0);
  EXPECT_EQ(std::memcmp(remote.mem.data, want_rem.data(), at), 0);
  // Packed: 150 small WRITEs (2.3 MiB) fill 3 buffers, not 150 rounds.
  EXPECT_LT(pipe.stats().rounds, 20u);
  EXPECT_GE(dev.copies - copies_before, reqs.size());  // none adjacent to the next of its pass
  EXPECT_EQ(pipe.pool_stats().in_use, 0u);

  // 256 pages adjacent on the device (a KV block): one copy per buffer, not one per page.
  std::vector<StagedRequest> block;
  remote.remote_off.clear();
  for (uint64_t i = 0; i < 256; ++i) {
    block.push_back({true, dev.arena.data + i * (16u << 10), 16u << 10});
    remote.remote_off.push_back(i * (16u << 10));
  }
  const uint64_t seed = FreshSeed();
  FillRandom(dev.arena.data, 4u << 20, seed);
  std::memset(remote.mem.data, 0xEE, 4u << 20);
  copies_before = dev.copies;
  res = pipe.Run(block, remote.Net(block), Soon());
  for (size_t i = 0; i < res.size(); ++i) ASSERT_TRUE(res[i].ok()) << i << ": " << res[i].ToString();
  EXPECT_FALSE(FirstMismatch(remote.mem.data, 4u << 20, seed).has_value());
  EXPECT_EQ(dev.copies - copies_before, 4u);  // 4 MiB in 1 MiB buffers
}

TEST(StagingPipeline, AFailedCopyFailsOnlyItsRequestInEitherDirection) {
  FakeDevice dev(32u << 20);
  FakeRemote remote(32u << 20);
  CountingAlloc alloc;
  StagingOptions o = SmallSlices();
  StagingPipeline pipe(o, dev.Ops(&alloc, o.slice_bytes));
  for (bool to_network : {true, false}) {
    SCOPED_TRACE(to_network ? "WRITE" : "READ");
    // Three requests of 5 MiB + odd bytes; the middle one fails in the middle of its third slice.
    constexpr uint64_t kLen = (5u << 20) + 123;
    std::vector<StagedRequest> reqs;
    remote.remote_off.clear();
    for (int i = 0; i < 3; ++i) {
      reqs.push_back({to_network, dev.arena.data + i * kLen, kLen});
      remote.remote_off.push_back(i * kLen);
    }
    const uint64_t seed = FreshSeed();
    FillRandom(to_network ? dev.arena.data : remote.mem.data, 3 * kLen, seed);
    std::memset(to_network ? remote.mem.data : dev.arena.data, 0xEE, 3 * kLen);
    dev.fail_at = static_cast<int64_t>(kLen + (2u << 20) + 4321);
    auto res = pipe.Run(reqs, remote.Net(reqs), Soon());
    dev.fail_at = -1;
    EXPECT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_EQ(res[1].code(), Code::kCuda) << res[1].ToString();
    EXPECT_NE(res[1].message().find("injected copy failure"), std::string::npos) << res[1].ToString();
    EXPECT_TRUE(res[2].ok()) << res[2].ToString();
    const uint8_t* dst = to_network ? remote.mem.data : dev.arena.data;
    for (int i : {0, 2}) {
      // Bytes of the good requests are exact (checked against the seed's stream at their offset).
      std::vector<uint8_t> want(3 * kLen);
      FillRandom(want.data(), 3 * kLen, seed);
      EXPECT_EQ(std::memcmp(dst + i * kLen, want.data() + i * kLen, kLen), 0) << "request " << i;
    }
    EXPECT_EQ(pipe.pool_stats().in_use, 0u);
  }
}

TEST(StagingPipeline, DeviceToHostCopyOfTheNextSliceRunsWhileASliceIsOnTheNetwork) {
  FakeDevice dev(16u << 20);
  FakeRemote remote(16u << 20);
  StagingOptions o = SmallSlices();  // 1 MiB buffers, rounds of at most 2 buffers
  StagingPipeline pipe(o, dev.Ops(nullptr, o.slice_bytes));
  constexpr uint64_t kLen = 12u << 20;
  std::mutex mu;
  std::condition_variable cv;
  uint64_t last_copy_start = 0;  // device offset of the latest copy begun (copies go in order)
  bool any_copy = false;
  bool round0_started = false;
  // Round 0 carries fills 0 and 1 ([0, 2 MiB)). A copy of a later fill does not finish before
  // round 0 has begun, so that, whatever the scheduling (one CPU included), the copy is in
  // progress while round 0 is on the network; a pipeline that copied only between rounds would
  // never start round 0 and fail the wait below.
  dev.on_copy = [&](uint64_t off, uint64_t, bool) {
    std::unique_lock lk(mu);
    last_copy_start = std::max(last_copy_start, off);
    any_copy = true;
    cv.notify_all();
    if (off >= 2 * o.slice_bytes) cv.wait_for(lk, std::chrono::seconds(60), [&] { return round0_started; });
  };
  bool observed = false;
  remote.on_round = [&](size_t round, std::span<const StagedPiece> pieces) {
    if (round != 0) return;
    std::unique_lock lk(mu);
    round0_started = true;
    cv.notify_all();
    const uint64_t first_round_end = pieces.back().offset + pieces.back().len;
    // Round 0 is "on the network" until the copy of a later slice has begun (it may have begun
    // already: the copy thread runs ahead). Without overlap this never happens (the copy would
    // wait for the round): the bound only keeps a broken pipeline from hanging the test.
    observed = cv.wait_for(lk, std::chrono::seconds(60),
                           [&] { return any_copy && last_copy_start >= first_round_end; });
  };
  std::vector<StagedRequest> w = {{true, dev.arena.data, kLen}};
  remote.remote_off = {0};
  const uint64_t seed = FreshSeed();
  FillRandom(dev.arena.data, kLen, seed);
  auto res = pipe.Run(w, remote.Net(w), Soon());
  ASSERT_TRUE(res[0].ok()) << res[0].ToString();
  EXPECT_TRUE(observed) << "the device->host copy of slice k+1 did not start while slice k was being sent";
  EXPECT_FALSE(FirstMismatch(remote.mem.data, kLen, seed).has_value());
  EXPECT_GE(pipe.stats().overlapped_rounds, 1u);
}

TEST(StagingPipeline, HostToDeviceCopyOfASliceRunsWhileTheNextIsReceived) {
  FakeDevice dev(16u << 20);
  FakeRemote remote(16u << 20);
  StagingOptions o = SmallSlices();
  StagingPipeline pipe(o, dev.Ops(nullptr, o.slice_bytes));
  constexpr uint64_t kLen = 12u << 20;
  std::mutex mu;
  std::condition_variable cv;
  bool first_copy_started = false;
  dev.on_copy = [&](uint64_t, uint64_t, bool to_device) {
    std::lock_guard lk(mu);
    if (to_device) first_copy_started = true;
    cv.notify_all();
  };
  bool observed = false;
  remote.on_round = [&](size_t round, std::span<const StagedPiece>) {
    if (round != 1) return;
    // Round 1 is "being received" until the host->device copy of round 0 has begun.
    std::unique_lock lk(mu);
    observed = cv.wait_for(lk, std::chrono::seconds(60), [&] { return first_copy_started; });
  };
  std::vector<StagedRequest> r = {{false, dev.arena.data, kLen}};
  remote.remote_off = {0};
  const uint64_t seed = FreshSeed();
  FillRandom(remote.mem.data, kLen, seed);
  std::memset(dev.arena.data, 0xEE, kLen);
  auto res = pipe.Run(r, remote.Net(r), Soon());
  ASSERT_TRUE(res[0].ok()) << res[0].ToString();
  EXPECT_TRUE(observed) << "the host->device copy of slice k did not start while slice k+1 was being received";
  EXPECT_FALSE(FirstMismatch(dev.arena.data, kLen, seed).has_value());
}

// The pipeline's copy threads are few and shared. Here more passes run at once than there are
// copy threads, and none may start its third round before every pass has copied in its first
// fill: a copy that held a copy thread while it waited for its own pass's next round would keep
// the other passes' copies from running and never let them get there.
TEST(StagingPipeline, MorePassesThanCopyThreadsNeverWaitOnEachOther) {
  constexpr size_t kRuns = 6;
  constexpr uint64_t kLen = 4u << 20;  // four 1 MiB fills, two buffers: round 2 needs fill 0 copied in
  FakeDevice dev(kRuns * kLen);
  StagingOptions o = SmallSlices();
  o.buffers = 2;
  o.max_buffers = 2 * kRuns;
  StagingPipeline pipe(o, dev.Ops(nullptr, o.slice_bytes));
  std::mutex mu;
  std::condition_variable cv;
  size_t at_round2 = 0;
  bool all_met = true;
  std::vector<std::unique_ptr<FakeRemote>> remotes;
  std::vector<std::vector<StagedRequest>> reqs(kRuns);
  const uint64_t seed = FreshSeed();
  for (size_t i = 0; i < kRuns; ++i) {
    remotes.push_back(std::make_unique<FakeRemote>(kLen));
    remotes[i]->remote_off = {0};
    FillRandom(remotes[i]->mem.data, kLen, seed + i);
    reqs[i] = {{false, dev.arena.data + i * kLen, kLen}};
    remotes[i]->on_round = [&](size_t round, std::span<const StagedPiece>) {
      if (round != 2) return;
      std::unique_lock lk(mu);
      ++at_round2;
      cv.notify_all();
      // Bounded, so that a pipeline with the bug fails here instead of hanging the test.
      if (!cv.wait_for(lk, std::chrono::seconds(60), [&] { return at_round2 == kRuns; })) all_met = false;
    };
  }
  std::memset(dev.arena.data, 0xEE, kRuns * kLen);
  std::vector<std::vector<Status>> res(kRuns);
  std::vector<std::thread> runs;
  for (size_t i = 0; i < kRuns; ++i)
    runs.emplace_back([&, i] { res[i] = pipe.Run(reqs[i], remotes[i]->Net(reqs[i]), Soon(120000)); });
  for (auto& t : runs) t.join();
  EXPECT_TRUE(all_met) << "a pass waited for another's copies: the copy threads were held";
  for (size_t i = 0; i < kRuns; ++i) {
    ASSERT_TRUE(res[i][0].ok()) << i << ": " << res[i][0].ToString();
    EXPECT_FALSE(FirstMismatch(dev.arena.data + i * kLen, kLen, seed + i).has_value()) << i;
  }
  EXPECT_EQ(pipe.pool_stats().in_use, 0u);
}

TEST(StagingPipeline, NetworkFailureFailsItsRequestAndLeaksNothing) {
  FakeDevice dev(16u << 20);
  FakeRemote remote(16u << 20);
  StagingPipeline pipe(SmallSlices(), dev.Ops(nullptr, 1u << 20));
  std::vector<StagedRequest> reqs = {{false, dev.arena.data, 3u << 20}, {false, dev.arena.data + (3u << 20), 3u << 20}};
  remote.remote_off = {0, 3u << 20};
  auto inner = remote.Net(reqs);
  NetworkRound net = [&](std::span<const StagedPiece> pieces) {
    auto st = inner(pieces);
    for (size_t k = 0; k < pieces.size(); ++k)
      if (pieces[k].request == 0) st[k] = Error(Code::kPeerDown, "injected: connection reset");
    return st;
  };
  std::memset(dev.arena.data, 0xEE, 6u << 20);
  const uint64_t seed = FreshSeed();
  FillRandom(remote.mem.data, 6u << 20, seed);
  auto res = pipe.Run(reqs, net, Soon());
  EXPECT_EQ(res[0].code(), Code::kPeerDown);
  ASSERT_TRUE(res[1].ok()) << res[1].ToString();
  std::vector<uint8_t> want(6u << 20);
  FillRandom(want.data(), want.size(), seed);
  EXPECT_EQ(std::memcmp(dev.arena.data + (3u << 20), want.data() + (3u << 20), 3u << 20), 0);
  EXPECT_EQ(pipe.pool_stats().in_use, 0u);
}

TEST(StagingPipeline, BuffersAreBoundedAndWaitedForUntilTheDeadline) {
  FakeDevice dev(16u << 20);
  FakeRemote remote(16u << 20);
  StagingOptions o = SmallSlices();
  o.max_buffers = 4;  // one run's worth
  StagingPipeline pipe(o, dev.Ops(nullptr, o.slice_bytes));
  // Two runs at once share the bound: both complete, one after the other's buffers came back.
  std::vector<StagedRequest> a = {{true, dev.arena.data, 6u << 20}}, b = {{true, dev.arena.data + (8u << 20), 6u << 20}};
  FakeRemote ra(8u << 20), rb(8u << 20);
  ra.remote_off = {0};
  rb.remote_off = {0};
  const uint64_t seed = FreshSeed();
  FillRandom(dev.arena.data, 16u << 20, seed);
  std::vector<Status> res_a, res_b;
  std::thread t([&] { res_a = pipe.Run(a, ra.Net(a), Soon()); });
  res_b = pipe.Run(b, rb.Net(b), Soon());
  t.join();
  ASSERT_TRUE(res_a[0].ok()) << res_a[0].ToString();
  ASSERT_TRUE(res_b[0].ok()) << res_b[0].ToString();
  std::vector<uint8_t> want(16u << 20);
  FillRandom(want.data(), want.size(), seed);
  EXPECT_EQ(std::memcmp(ra.mem.data, want.data(), 6u << 20), 0);
  EXPECT_EQ(std::memcmp(rb.mem.data, want.data() + (8u << 20), 6u << 20), 0);
  EXPECT_LE(pipe.pool_stats().allocated, 4u);
  // Buffers held by a run whose round does not finish until after the other's deadline: the
  // other gets TIMEOUT, moves nothing, and nothing is leaked.
  std::mutex mu;
  std::condition_variable cv;
  bool holding = false, let_go = false;
  FakeRemote rc(8u << 20);
  rc.remote_off = {0};
  rc.on_round = [&](size_t, std::span<const StagedPiece>) {
    std::unique_lock lk(mu);
    holding = true;
    cv.notify_all();
    cv.wait(lk, [&] { return let_go; });
  };
  std::thread holder([&] { res_a = pipe.Run(a, rc.Net(a), Soon()); });
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return holding; });
  }
  FakeRemote rd(8u << 20);
  rd.remote_off = {0};
  res_b = pipe.Run(b, rd.Net(b), Deadline::After(Millis(50)));
  EXPECT_EQ(res_b[0].code(), Code::kTimeout) << res_b[0].ToString();
  EXPECT_EQ(rd.rounds.load(), 0u);
  {
    std::lock_guard lk(mu);
    let_go = true;
  }
  cv.notify_all();
  holder.join();
  EXPECT_TRUE(res_a[0].ok()) << res_a[0].ToString();
  EXPECT_EQ(pipe.pool_stats().in_use, 0u);
}

TEST(StagingPipeline, WithoutADeviceCopyOrWithBadOptionsStagedRequestsAreRefused) {
  FakeRemote remote(1u << 20);
  StagingPipeline none(SmallSlices(), DeviceStagingOps{});
  uint8_t byte = 0;
  std::vector<StagedRequest> r = {{true, &byte, 1}};
  remote.remote_off = {0};
  auto res = none.Run(r, remote.Net(r), Soon());
  EXPECT_EQ(res[0].code(), Code::kNotSupported) << res[0].ToString();
  FakeDevice dev(1u << 20);
  StagingOptions bad = SmallSlices();
  bad.slice_bytes = 100;
  StagingPipeline tiny(bad, dev.Ops(nullptr, 100));
  res = tiny.Run(r, remote.Net(r), Soon());
  EXPECT_EQ(res[0].code(), Code::kInvalidArgument) << res[0].ToString();
  EXPECT_EQ(remote.rounds.load(), 0u);
}

// Over real TCP: a client whose local ends are stand-in device memory (the pipeline) and a data
// server whose segment is stand-in device memory (its bounce buffers, smaller than a request so
// WRITEs arrive in pieces and large READs take memory of their own), with host ends mixed in.
TEST(StagingPipeline, DeviceEndsAtBothSidesOverTcp) {
  constexpr uint64_t kMax = 64ull << 20;
  FakeDevice client_dev(kMax + 8192), server_dev(kMax + 8192);
  CountingAlloc client_alloc, server_alloc;
  Buffer host(kMax + 8192);
  AccessTable table;
  constexpr uint32_t kDevSeg = 3, kHostSeg = 4;
  constexpr uint64_t kKey = 0x5eed5eed5eed5eedull;
  ASSERT_TRUE(table.Register({kDevSeg, server_dev.arena.data, server_dev.arena.size, kKey, mem::kReadWrite, true}).ok());
  Buffer server_host(kMax + 8192);
  ASSERT_TRUE(table.Register({kHostSeg, server_host.data, server_host.size, kKey, mem::kReadWrite, false}).ok());
  TcpServerOptions so;
  so.host = "127.0.0.1";
  so.auth.cluster_secret = kSecret;
  so.device_staging_bytes = 256u << 10;
  so.device_staging_buffers = 4;
  // The server's host end is a pooled buffer or, for what does not fit, memory of its own: the
  // stand-in checks only which end is the device here.
  so.device_copy = server_dev.Ops(nullptr, 0).copy;
  so.staging_alloc = server_alloc.Get();
  auto server = TcpServer::Start(so, &table);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  TcpClientOptions co;
  co.auth.cluster_secret = kSecret;
  TcpClient client(co);
  StagingOptions o = SmallSlices();
  StagingPipeline pipe(o, client_dev.Ops(&client_alloc, o.slice_bytes));
  const PeerAddr peer{"127.0.0.1", (*server)->port()};

  uint64_t state = FreshSeed();
  std::vector<uint64_t> sizes = {1, 4097, (1u << 20) + 1, (9u << 20) + 3, 1 + SplitMix64(state) % (24u << 20), kMax};
  for (uint64_t len : sizes) {
    SCOPED_TRACE(::testing::Message() << len << " bytes");
    const uint64_t off_l = SplitMix64(state) % 4096, off_r = SplitMix64(state) % 4096;
    // local device -> remote device, then back into a poisoned local device range.
    uint64_t seed = FreshSeed();
    FillRandom(client_dev.arena.data + off_l, len, seed);
    std::memset(server_dev.arena.data + off_r, 0xEE, len);
    TcpRequest w{wire::DataOp::kWrite, kDevSeg, kKey, off_r, client_dev.arena.data + off_l, len};
    const uint8_t on_dev = 1;
    auto res = StagedTransfer(pipe, client, peer, {&w, 1}, {&on_dev, 1}, Soon());
    ASSERT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_FALSE(FirstMismatch(server_dev.arena.data + off_r, len, seed).has_value()) << "device WRITE";
    std::memset(client_dev.arena.data + off_l, 0x5A, len);
    TcpRequest r{wire::DataOp::kRead, kDevSeg, kKey, off_r, client_dev.arena.data + off_l, len};
    res = StagedTransfer(pipe, client, peer, {&r, 1}, {&on_dev, 1}, Soon());
    ASSERT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_FALSE(FirstMismatch(client_dev.arena.data + off_l, len, seed).has_value()) << "device READ";
    // A mixed batch: host -> remote host and local device -> remote host in one call.
    if (len <= (24u << 20)) {
      seed = FreshSeed();
      FillRandom(host.data, len, seed);
      FillRandom(client_dev.arena.data + off_l, len, seed);
      std::memset(server_host.data, 0xEE, 2 * len + off_r);
      TcpRequest both[2] = {{wire::DataOp::kWrite, kHostSeg, kKey, 0, host.data, len},
                            {wire::DataOp::kWrite, kHostSeg, kKey, len + off_r, client_dev.arena.data + off_l, len}};
      const uint8_t flags[2] = {0, 1};
      res = StagedTransfer(pipe, client, peer, both, flags, Soon());
      ASSERT_TRUE(res[0].ok() && res[1].ok()) << res[0].ToString() << " / " << res[1].ToString();
      EXPECT_FALSE(FirstMismatch(server_host.data, len, seed).has_value());
      EXPECT_FALSE(FirstMismatch(server_host.data + len + off_r, len, seed).has_value());
    }
  }
  // The server's device copy fails in the middle of one request: that request alone fails.
  {
    const uint64_t len = 3u << 20;
    const uint64_t seed = FreshSeed();
    FillRandom(client_dev.arena.data, 2 * len, seed);
    server_dev.fail_at = static_cast<int64_t>(len + (1u << 20) + 77);
    TcpRequest two[2] = {{wire::DataOp::kWrite, kDevSeg, kKey, 0, client_dev.arena.data, len},
                         {wire::DataOp::kWrite, kDevSeg, kKey, len, client_dev.arena.data + len, len}};
    const uint8_t flags[2] = {1, 1};
    auto res = StagedTransfer(pipe, client, peer, two, flags, Soon());
    server_dev.fail_at = -1;
    EXPECT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_EQ(res[1].code(), Code::kCuda) << res[1].ToString();
    EXPECT_FALSE(FirstMismatch(server_dev.arena.data, len, seed).has_value());
  }
  auto st = (*server)->stats();
  EXPECT_GT(st.device_staged, 0u);
  EXPECT_GT(st.device_unpooled, 0u) << "no READ found every buffer in use; the test meant to cover it";
  EXPECT_EQ((*server)->staging_stats().in_use, 0u);
  EXPECT_LE((*server)->staging_stats().allocated, so.device_staging_buffers);
  EXPECT_EQ(pipe.pool_stats().in_use, 0u);
  EXPECT_EQ(client_dev.wrong_ends.load(), 0u);
  EXPECT_EQ(server_dev.wrong_ends.load(), 0u);
  (*server)->Stop();
  EXPECT_EQ(server_alloc.allocs, (*server)->staging_stats().allocated);
}

// The region contract (transport.h) with device ends: one
// transport serves a host region and a stand-in device region (its data server stages the device
// one through bounce buffers from its staging_alloc, with the owner's device copy); another, whose
// local device memory is a second stand-in, connects, imports both and posts. Every combination
// of a local host or device end with a remote host or device region, both ways; a batch mixing
// all four in one Post; refusals.
TEST(TcpTransportDevice, LocalAndRemoteDeviceEndsThroughRegions) {
  const uint64_t region_size = 24ull << 20;
  FakeDevice remote_dev(region_size), local_dev(region_size);
  Buffer remote_host(region_size), local_host(region_size);
  CountingAlloc server_alloc, client_alloc;
  auto all_bytes = [](const uint8_t* p, uint64_t n, uint8_t v) {
    return std::all_of(p, p + n, [v](uint8_t b) { return b == v; });
  };

  TcpTransportOptions oo;
  oo.client.auth.cluster_secret = kSecret;
  TcpServerOptions so;
  so.host = "127.0.0.1";
  so.auth.cluster_secret = kSecret;
  so.device_copy = remote_dev.Ops(nullptr, 0).copy;
  so.staging_alloc = server_alloc.Get();
  oo.serve = so;
  auto owner = TcpTransport::Create(oo);
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  auto endpoint = (*owner)->EndpointBlob();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  constexpr uint64_t kHostRegion = 1, kDevRegion = 2;
  auto host_blob = (*owner)->ExportRegion(LocalRegion{kHostRegion, remote_host.data, region_size});
  ASSERT_TRUE(host_blob.ok()) << host_blob.status().ToString();
  auto dev_blob = (*owner)->ExportRegion(LocalRegion{kDevRegion, remote_dev.arena.data, region_size, true, 0});
  ASSERT_TRUE(dev_blob.ok()) << dev_blob.status().ToString();

  TcpTransportOptions io;
  io.client.auth.cluster_secret = kSecret;
  io.staging = SmallSlices();  // 1 MiB bounce buffers: an op of several MiB takes many rounds
  io.device = local_dev.Ops(&client_alloc, io.staging.slice_bytes);
  auto initiator = TcpTransport::Create(io);
  ASSERT_TRUE(initiator.ok()) << initiator.status().ToString();
  TcpTransport& t = **initiator;
  EXPECT_NE(t.capabilities() & kCapDeviceMemory, 0u);
  auto peer = t.Connect(*endpoint);
  ASSERT_TRUE(peer.ok()) << peer.status().ToString();
  auto host_region = t.ImportRegion(**peer, reinterpret_cast<uint64_t>(remote_host.data), region_size, *host_blob);
  ASSERT_TRUE(host_region.ok()) << host_region.status().ToString();
  auto dev_region = t.ImportRegion(**peer, reinterpret_cast<uint64_t>(remote_dev.arena.data), region_size, *dev_blob);
  ASSERT_TRUE(dev_region.ok()) << dev_region.status().ToString();
  auto post = [&](TcpTransport& via, RemoteOpKind kind, uint8_t* local, bool local_device, const PeerLink& p,
                  const ImportedRegion& r, uint64_t offset, uint64_t len) {
    RemoteOp op{kind, local, local_device, &p, &r, offset, len};
    std::vector<Status> res(1);
    via.Post({&op, 1}, res, Soon());
    return res[0];
  };

  struct Local {
    const char* name;
    uint8_t* base;
    bool device;
  };
  struct Remote {
    const char* name;
    const ImportedRegion* region;
    uint8_t* base;
  };
  const Local locals[] = {{"local host", local_host.data, false}, {"local device", local_dev.arena.data, true}};
  const Remote remotes[] = {{"remote host region", host_region->get(), remote_host.data},
                            {"remote device region", dev_region->get(), remote_dev.arena.data}};
  const uint64_t len = (5u << 20) + 321, local_off = 8191, remote_off = 4097;
  // The stand-in devices are host memory, so right bytes alone would not show that a device end
  // went through its device copy: their byte counts do.
  auto check_device_copies = [&](const Local& l, const Remote& r, uint64_t local_before, uint64_t remote_before) {
    if (l.device) EXPECT_GE(local_dev.bytes.load() - local_before, len) << "the local device end was not staged";
    else EXPECT_EQ(local_dev.bytes.load(), local_before) << "a local host end went through the device copy";
    if (r.base == remote_dev.arena.data) EXPECT_GE(remote_dev.bytes.load() - remote_before, len);
    else EXPECT_EQ(remote_dev.bytes.load(), remote_before);
  };
  for (const Local& l : locals) {
    for (const Remote& r : remotes) {
      SCOPED_TRACE(::testing::Message() << l.name << " <-> " << r.name);
      uint8_t* mine = l.base + local_off;
      uint8_t* theirs = r.base + remote_off;
      uint64_t seed = FreshSeed();
      FillRandom(mine, len, seed);
      std::memset(theirs - 64, 0xEE, len + 128);
      uint64_t local_before = local_dev.bytes, remote_before = remote_dev.bytes;
      Status s = post(t, RemoteOpKind::kWrite, mine, l.device, **peer, *r.region, remote_off, len);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_FALSE(FirstMismatch(theirs, len, seed).has_value()) << "WRITE";
      EXPECT_TRUE(all_bytes(theirs - 64, 64, 0xEE) && all_bytes(theirs + len, 64, 0xEE)) << "WRITE outside its range";
      check_device_copies(l, r, local_before, remote_before);
      seed = FreshSeed();
      FillRandom(theirs, len, seed);
      std::memset(mine - 64, 0x5A, len + 128);
      local_before = local_dev.bytes;
      remote_before = remote_dev.bytes;
      s = post(t, RemoteOpKind::kRead, mine, l.device, **peer, *r.region, remote_off, len);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_FALSE(FirstMismatch(mine, len, seed).has_value()) << "READ";
      EXPECT_TRUE(all_bytes(mine - 64, 64, 0x5A) && all_bytes(mine + len, 64, 0x5A)) << "READ outside its range";
      check_device_copies(l, r, local_before, remote_before);
    }
  }

  // 64 ops in one Post: every (local end, remote region, READ/WRITE) in turn, odd lengths, some
  // larger than a bounce buffer; disjoint ranges (one offset for both ends of an op).
  {
    std::vector<RemoteOp> ops;
    std::vector<uint64_t> seeds;
    std::vector<uint8_t*> dsts;
    uint64_t at = 17;
    for (int i = 0; i < 64; ++i) {
      const Local& l = locals[i % 2];
      const Remote& r = remotes[(i / 2) % 2];
      const bool write = (i / 4) % 2 == 0;
      const uint64_t n = i % 16 == 0 ? (2u << 20) + 2 * i + 1 : 65536 + 2 * i + 1;
      seeds.push_back(FreshSeed());
      FillRandom(write ? l.base + at : r.base + at, n, seeds.back());
      dsts.push_back(write ? r.base + at : l.base + at);
      std::memset(dsts.back(), 0xEE, n);
      ops.push_back(RemoteOp{write ? RemoteOpKind::kWrite : RemoteOpKind::kRead, l.base + at, l.device, peer->get(),
                             r.region, at, n});
      at += n + 13;
    }
    ASSERT_LT(at, region_size);
    std::vector<Status> results(ops.size());
    t.Post(ops, results, Soon());
    for (size_t i = 0; i < ops.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "op " << i << ": " << locals[i % 2].name << ", " << remotes[(i / 2) % 2].name
                                        << (ops[i].kind == RemoteOpKind::kWrite ? ", WRITE" : ", READ"));
      ASSERT_TRUE(results[i].ok()) << results[i].ToString();
      EXPECT_FALSE(FirstMismatch(dsts[i], ops[i].len, seeds[i]).has_value());
    }
  }
  EXPECT_GT(t.staging().stats().bytes, 0u);
  EXPECT_EQ(t.staging().pool_stats().in_use, 0u);
  EXPECT_LE(t.staging().pool_stats().allocated, io.staging.max_buffers);
  EXPECT_EQ(client_alloc.allocs, t.staging().pool_stats().allocated);  // through the injected allocator
  EXPECT_GT(server_alloc.allocs, 0u);  // the owner staged device requests in buffers of its staging_alloc
  EXPECT_EQ(local_dev.wrong_ends.load(), 0u);
  EXPECT_EQ(remote_dev.wrong_ends.load(), 0u);

  // Past the device region's end: OUT_OF_RANGE from the owner's access table, from either local end;
  // nothing moves.
  std::memset(remote_dev.arena.data + region_size - 64, 0xEE, 64);
  for (const Local& l : locals) {
    SCOPED_TRACE(l.name);
    std::memset(l.base, 0x5A, 64);
    EXPECT_EQ(post(t, RemoteOpKind::kWrite, l.base, l.device, **peer, **dev_region, region_size - 10, 20).code(),
              Code::kOutOfRange);
    EXPECT_EQ(post(t, RemoteOpKind::kRead, l.base, l.device, **peer, **dev_region, region_size - 10, 20).code(),
              Code::kOutOfRange);
    EXPECT_TRUE(all_bytes(l.base, 64, 0x5A));
  }
  EXPECT_TRUE(all_bytes(remote_dev.arena.data + region_size - 64, 64, 0xEE));

  // A transport with no device copy (no GPU): a local device end is NOT_SUPPORTED and nothing
  // moves; its host ends still reach the device region (staged by the owner).
  {
    TcpTransportOptions plain_options;
    plain_options.client.auth.cluster_secret = kSecret;
    auto plain = TcpTransport::Create(plain_options);
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    EXPECT_EQ((*plain)->capabilities() & kCapDeviceMemory, 0u);
    auto p = (*plain)->Connect(*endpoint);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto r = (*plain)->ImportRegion(**p, reinterpret_cast<uint64_t>(remote_dev.arena.data), region_size, *dev_blob);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::memset(remote_dev.arena.data, 0xEE, 4096);
    EXPECT_EQ(post(**plain, RemoteOpKind::kWrite, local_dev.arena.data, true, **p, **r, 0, 4096).code(),
              Code::kNotSupported);
    EXPECT_EQ(post(**plain, RemoteOpKind::kRead, local_dev.arena.data, true, **p, **r, 0, 4096).code(),
              Code::kNotSupported);
    EXPECT_TRUE(all_bytes(remote_dev.arena.data, 4096, 0xEE));
    EXPECT_TRUE(all_bytes(local_dev.arena.data, 64, 0x5A));
    const uint64_t seed = FreshSeed();
    FillRandom(local_host.data, 4096, seed);
    Status s = post(**plain, RemoteOpKind::kWrite, local_host.data, false, **p, **r, 0, 4096);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_FALSE(FirstMismatch(remote_dev.arena.data, 4096, seed).has_value());
  }

  // The device region withdrawn by its owner: NOT_FOUND from either local end, its memory
  // untouched; the host region is still served.
  (*owner)->WithdrawRegion(kDevRegion);
  std::memset(remote_dev.arena.data, 0xEE, 4096);
  for (const Local& l : locals) {
    SCOPED_TRACE(l.name);
    EXPECT_EQ(post(t, RemoteOpKind::kWrite, l.base, l.device, **peer, **dev_region, 0, 4096).code(), Code::kNotFound);
    std::memset(l.base, 0x5A, 4096);
    EXPECT_EQ(post(t, RemoteOpKind::kRead, l.base, l.device, **peer, **dev_region, 0, 4096).code(), Code::kNotFound);
    EXPECT_TRUE(all_bytes(l.base, 4096, 0x5A));
  }
  EXPECT_TRUE(all_bytes(remote_dev.arena.data, 4096, 0xEE));
  {
    const uint64_t seed = FreshSeed();
    FillRandom(local_dev.arena.data, 1u << 20, seed);
    Status s = post(t, RemoteOpKind::kWrite, local_dev.arena.data, true, **peer, **host_region, 0, 1u << 20);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_FALSE(FirstMismatch(remote_host.data, 1u << 20, seed).has_value());
  }
  EXPECT_EQ(t.staging().pool_stats().in_use, 0u);
  EXPECT_EQ(local_dev.wrong_ends.load(), 0u);
  EXPECT_EQ(remote_dev.wrong_ends.load(), 0u);

  // The owner gone: PEER_DOWN from either local end; its bounce buffers went back to its allocator.
  owner->reset();
  EXPECT_EQ(post(t, RemoteOpKind::kWrite, local_host.data, false, **peer, **host_region, 0, 64).code(),
            Code::kPeerDown);
  EXPECT_EQ(post(t, RemoteOpKind::kWrite, local_dev.arena.data, true, **peer, **host_region, 0, 64).code(),
            Code::kPeerDown);
  EXPECT_TRUE(server_alloc.live.empty());
  EXPECT_EQ(t.staging().pool_stats().in_use, 0u);
}

TEST(BouncePool, AcquireWaitsUntilTheDeadlineAndTryAcquireNeverWaits) {
  CountingAlloc alloc;
  {
    BouncePool pool(4096, 2, alloc.Get());
    auto two = pool.Acquire(2, Soon());
    ASSERT_TRUE(two.ok());
    EXPECT_EQ(pool.TryAcquire(), nullptr);
    auto more = pool.Acquire(1, Deadline::After(Millis(20)));
    EXPECT_EQ(more.status().code(), Code::kTimeout) << more.status().ToString();
    EXPECT_EQ(pool.Acquire(3, Soon()).status().code(), Code::kInvalidArgument);
    std::thread t([&] { pool.Release(*two); });
    auto again = pool.Acquire(2, Soon());  // woken by the release
    t.join();
    ASSERT_TRUE(again.ok());
    pool.Release(*again);
    EXPECT_EQ(pool.stats().in_use, 0u);
    EXPECT_EQ(pool.stats().allocated, 2u);
  }
  EXPECT_TRUE(alloc.live.empty());  // freed through the allocator
  // An allocator that fails: its error, no buffer.
  BouncePool failing(4096, 2, {[](uint64_t) -> Result<void*> { return Error(Code::kPoolFull, "pinned memory gone"); },
                               [](void*, uint64_t) {}});
  auto got = failing.Acquire(1, Soon());
  EXPECT_EQ(got.status().code(), Code::kPoolFull);
  EXPECT_EQ(failing.TryAcquire(), nullptr);
}

}  // namespace
}  // namespace weft::transport::tcp
