// The engine and the segment table in one process: slices are plain heap buffers, rank 0
// marked as this process's own (path memcpy) and ranks 1-2 as another peer's (path shm).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "base/random.h"
#include "engine/dead_owners.h"
#include "engine/engine.h"
#include "gva/segment_table.h"

namespace weft::engine {
namespace {

using gva::Location;
using gva::Medium;

constexpr uint64_t kSlice = 8 << 20;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    layout_ = *gva::Layout::Make(0x200000000000ull, kSlice, 8);
    table_ = std::make_unique<gva::SegmentTable>(layout_);
    for (uint32_t r = 0; r < 3; ++r) ASSERT_TRUE(AttachHeap(r).ok());
    EngineOptions o;
    o.threads = 4;
    o.split_bytes = 256 << 10;  // small, so splitting is exercised
    engine_ = std::make_unique<Engine>(o, *table_, metrics_);
  }
  void TearDown() override {
    engine_.reset();
    table_.reset();
  }

  Status AttachHeap(uint32_t rank) {
    auto* mem = static_cast<uint8_t*>(std::aligned_alloc(4096, kSlice));
    std::memset(mem, 0, kSlice);
    return table_->Attach({Medium::kHost, rank, 0}, mem, kSlice, rank == 0, "rank" + std::to_string(rank),
                          [mem] { std::free(mem); });
  }
  uint64_t Gva(uint32_t rank, uint64_t off) const { return layout_.Encode({Medium::kHost, rank, off}); }
  uint8_t* Mapped(uint32_t rank, uint64_t off) const { return table_->Resolve(Gva(rank, off), 0)->ptr(); }

  gva::Layout layout_;
  MetricsRegistry metrics_;
  std::unique_ptr<gva::SegmentTable> table_;
  std::unique_ptr<Engine> engine_;
};

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// A region whose owner process is given, alive or not, counting how often it is asked.
struct FakeRegion final : transport::ImportedRegion {
  FakeRegion(uint64_t owner, bool alive, int* asked) : owner(owner), alive(alive), asked(asked) {}
  Status OwnerAlive() const override {
    ++*asked;
    return alive ? OkStatus() : Error(Code::kPeerDown, "owner {} exited", owner);
  }
  uint64_t OwnerProcess() const override { return owner; }
  uint64_t owner;
  bool alive;
  int* asked;
};

// After a batch: an owner process is asked once whatever the number of its regions, each
// region of a dead owner fails, a live owner's do not, and an unknown owner (0) is asked per region.
TEST(DeadOwners, AsksEachOwnerProcessOnceAndFailsOnlyTheDeadOnesRegions) {
  int asked_dead = 0, asked_live = 0, asked_unknown = 0;
  FakeRegion dead_a(9, false, &asked_dead), dead_b(9, false, &asked_dead), live(7, true, &asked_live);
  FakeRegion unknown_a(0, true, &asked_unknown), unknown_b(0, false, &asked_unknown);
  const transport::ImportedRegion* regions[] = {&live, &dead_a, &unknown_a, &dead_b, &unknown_b};
  auto gone = DeadOwners(regions);
  EXPECT_EQ(asked_dead, 1);
  EXPECT_EQ(asked_live, 1);
  EXPECT_EQ(asked_unknown, 2);
  ASSERT_EQ(gone.size(), 3u);
  EXPECT_EQ(gone.count(&live), 0u);
  EXPECT_EQ(gone.count(&unknown_a), 0u);
  EXPECT_EQ(gone.at(&dead_a).code(), Code::kPeerDown);
  EXPECT_EQ(gone.at(&dead_b).code(), Code::kPeerDown);
  EXPECT_EQ(gone.at(&unknown_b).code(), Code::kPeerDown);
  EXPECT_TRUE(DeadOwners({}).empty());
}

TEST_F(EngineTest, EveryDirectionWithRandomSizesAndOffsets) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  std::vector<uint8_t> local_src(kSlice), local_dst(kSlice);
  for (int iter = 0; iter < 60; ++iter) {
    const uint64_t len = 1 + SplitMix64(state) % (2 << 20);
    const uint64_t src_off = SplitMix64(state) % (kSlice - len);
    const uint64_t dst_off = SplitMix64(state) % (kSlice - len);
    const uint32_t src_rank = SplitMix64(state) % 3, dst_rank = SplitMix64(state) % 3;
    const int kind = iter % 4;  // LH2LH, LH2GH, GH2LH, GH2GH
    const uint64_t seed = SplitMix64(state);
    uint64_t src = (kind == 0 || kind == 1) ? Addr(local_src.data() + src_off) : Gva(src_rank, src_off);
    uint64_t dst = (kind == 0 || kind == 2) ? Addr(local_dst.data() + dst_off) : Gva(dst_rank, dst_off);
    uint8_t* src_bytes = (kind == 0 || kind == 1) ? local_src.data() + src_off : Mapped(src_rank, src_off);
    uint8_t* dst_bytes = (kind == 0 || kind == 2) ? local_dst.data() + dst_off : Mapped(dst_rank, dst_off);
    if (kind == 3 && src_rank == dst_rank) continue;  // overlapping ranges in one slice: memmove semantics, not this test
    FillRandom(src_bytes, len, seed);
    std::memset(dst_bytes, 0xA5, len);
    const Direction dirs[] = {Direction::kLH2LH, Direction::kLH2GH, Direction::kGH2LH, Direction::kGH2GH};
    Direction dir = iter % 2 ? dirs[kind] : Direction::kAuto;
    ASSERT_TRUE(engine_->Copy(dst, src, len, dir).ok()) << "iteration " << iter;
    ASSERT_FALSE(FirstMismatch(dst_bytes, len, seed).has_value()) << "iteration " << iter << " len " << len;
  }
  EXPECT_GT(metrics_.counter("weft_copy_bytes_total")->value(), 0u);
}

TEST_F(EngineTest, RoutesNameThePath) {
  std::vector<uint8_t> buf(64);
  auto own = engine_->Route(Gva(0, 0), Addr(buf.data()), 64);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own->path, "memcpy");
  EXPECT_EQ(own->dst_kind, transport::EndKind::kGH);
  EXPECT_EQ(own->src_kind, transport::EndKind::kLH);
  auto other = engine_->Route(Addr(buf.data()), Gva(1, 0), 64);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->path, "shm");
  EXPECT_NE(other->ToString().find("GH -> LH"), std::string::npos);
}

TEST_F(EngineTest, BadInputGetsSpecificErrors) {
  std::vector<uint8_t> buf(4096);
  const uint64_t b = Addr(buf.data());
  EXPECT_EQ(engine_->Copy(0, b, 16).code(), Code::kInvalidArgument);
  EXPECT_EQ(engine_->Copy(b, 0, 16).code(), Code::kInvalidArgument);
  EXPECT_EQ(engine_->Copy(Gva(1, kSlice - 8), b, 16).code(), Code::kOutOfRange);
  EXPECT_EQ(engine_->Copy(b, Gva(1, kSlice - 1), 2).code(), Code::kOutOfRange);
  EXPECT_EQ(engine_->Copy(Gva(5, 0), b, 16).code(), Code::kInvalidAddress);  // no peer holds rank 5
  EXPECT_EQ(engine_->Copy(b, b + 8, 8, Direction::kGH2LH).code(), Code::kInvalidArgument);
  EXPECT_EQ(engine_->Copy(Gva(1, 0), b, 16, Direction::kLH2LH).code(), Code::kInvalidArgument);
  EXPECT_EQ(engine_->Copy(b, ~0ull - 4, 16).code(), Code::kInvalidArgument);  // wraps around
  EXPECT_EQ(engine_->Copy(Gva(1, 0), b, 16, Direction::kAuto, Deadline::After(std::chrono::seconds(-1))).code(),
            Code::kTimeout);
  // Nothing was written by the failed calls.
  std::vector<uint8_t> zeros(16, 0);
  EXPECT_EQ(std::memcmp(Mapped(1, 0), zeros.data(), 16), 0);
  EXPECT_EQ(metrics_.counter("weft_copy_failures_total")->value(), 9u);
  // By code as well: what kind of failure is rising.
  auto errors = [&](const char* code) {
    return metrics_.counter(std::string("weft_copy_errors_total{code=\"") + code + "\"}")->value();
  };
  EXPECT_EQ(errors("INVALID_ARGUMENT"), 5u);
  EXPECT_EQ(errors("OUT_OF_RANGE"), 2u);
  EXPECT_EQ(errors("INVALID_ADDRESS"), 1u);
  EXPECT_EQ(errors("TIMEOUT"), 1u);
}

// A batch's failed entries are counted when the batch completes, each under its code, and only
// its failed ones.
TEST_F(EngineTest, BatchFailuresAreCountedByCode) {
  std::vector<uint8_t> buf(4096);
  const uint64_t b = Addr(buf.data());
  std::vector<CopyRequest> reqs = {{Gva(1, 0), b, 64}, {Gva(5, 0), b, 64}, {Gva(1, kSlice - 8), b, 16},
                                   {b, Gva(1, 0), 64}};
  auto results = engine_->CopyBatch(reqs);
  ASSERT_EQ(results.size(), 4u);
  EXPECT_TRUE(results[0].ok() && results[3].ok());
  EXPECT_EQ(metrics_.counter("weft_copy_failures_total")->value(), 2u);
  EXPECT_EQ(metrics_.counter("weft_copy_errors_total{code=\"INVALID_ADDRESS\"}")->value(), 1u);
  EXPECT_EQ(metrics_.counter("weft_copy_errors_total{code=\"OUT_OF_RANGE\"}")->value(), 1u);
}

// The copy threads' load is published when the metrics are read: the thread count (threads - 1,
// the caller copies too), and, once the helpers a split copy queued have found its pieces taken
// (a copy returns when its pieces are done, not when every helper has run), nothing queued or
// running. (WorkerPool.LoadCountsQueuedTasksAndBusyThreads counts a held pool.)
TEST_F(EngineTest, CopyThreadLoadIsPublishedWhenMetricsAreRead) {
  std::vector<uint8_t> buf(2 << 20, 7);
  ASSERT_TRUE(engine_->Copy(Gva(1, 0), Addr(buf.data()), buf.size()).ok());
  Gauge* queued = metrics_.gauge("weft_engine_copy_tasks_queued");
  Gauge* busy = metrics_.gauge("weft_engine_copy_threads_busy");
  bool idle = false;
  for (int i = 0; i < 10000 && !idle; ++i) {
    queued->Set(-1);  // what a scrape that ran no hook would leave
    busy->Set(-1);
    (void)metrics_.PrometheusText();
    idle = queued->value() == 0 && busy->value() == 0;
    if (!idle) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(idle) << "queued " << queued->value() << ", busy " << busy->value();
  EXPECT_EQ(metrics_.gauge("weft_engine_copy_threads")->value(), 3);
  const std::string text = metrics_.PrometheusText();
  EXPECT_NE(text.find("# TYPE weft_engine_copy_tasks_queued gauge"), std::string::npos) << text;
}

TEST_F(EngineTest, BatchReportsOneResultPerCopy) {
  std::vector<uint8_t> src(1 << 20), dst(1 << 20, 0xA5);
  const uint64_t seed = FreshSeed();
  FillRandom(src.data(), src.size(), seed);
  std::vector<CopyRequest> reqs;
  for (uint64_t i = 0; i < 64; ++i) reqs.push_back({Gva(1 + i % 2, i * 16384), Addr(src.data() + i * 16384), 16384});
  reqs.push_back({Gva(7, 0), Addr(src.data()), 16});            // no such peer
  reqs.push_back({Gva(1, kSlice - 1), Addr(src.data()), 16});   // past the end
  auto results = engine_->CopyBatch(reqs);
  ASSERT_EQ(results.size(), reqs.size());
  for (size_t i = 0; i < 64; ++i) EXPECT_TRUE(results[i].ok()) << i << results[i].ToString();
  EXPECT_EQ(results[64].code(), Code::kInvalidAddress);
  EXPECT_EQ(results[65].code(), Code::kOutOfRange);
  // Read the pages back in a second batch and compare every byte.
  std::vector<CopyRequest> back;
  for (uint64_t i = 0; i < 64; ++i) back.push_back({Addr(dst.data() + i * 16384), Gva(1 + i % 2, i * 16384), 16384});
  for (const auto& s : engine_->CopyBatch(back)) ASSERT_TRUE(s.ok());
  EXPECT_FALSE(FirstMismatch(dst.data(), dst.size(), seed).has_value());
}

TEST_F(EngineTest, AsyncCopiesCompleteAndReport) {
  std::vector<uint8_t> src(4 << 20), dst(4 << 20, 0xA5);
  const uint64_t seed = FreshSeed();
  FillRandom(src.data(), src.size(), seed);
  auto h1 = engine_->CopyAsync(Gva(2, 4096), Addr(src.data()), src.size());
  ASSERT_TRUE(h1.Wait(Deadline::After(std::chrono::seconds(30))).ok());
  auto h2 = engine_->CopyAsync(Addr(dst.data()), Gva(2, 4096), dst.size(), Direction::kGH2LH);
  ASSERT_TRUE(h2.Wait(Deadline::After(std::chrono::seconds(30))).ok());
  ASSERT_TRUE(h2.Poll().has_value());
  EXPECT_TRUE(h2.Poll()->ok());
  EXPECT_FALSE(FirstMismatch(dst.data(), dst.size(), seed).has_value());
  auto bad = engine_->CopyAsync(Addr(dst.data()), Gva(6, 0), 16);
  EXPECT_EQ(bad.Wait(Deadline::After(std::chrono::seconds(30))).code(), Code::kInvalidAddress);
  ASSERT_EQ(bad.Results().size(), 1u);
  EXPECT_EQ(CopyHandle().Wait().code(), Code::kInvalidArgument);
}

TEST_F(EngineTest, ConcurrentCopiesFromManyThreads) {
  constexpr int kThreads = 6;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t state = FreshSeed();
      std::vector<uint8_t> src(512 << 10), back(512 << 10);
      for (int i = 0; i < 20; ++i) {
        const uint64_t len = 1 + SplitMix64(state) % src.size();
        const uint64_t off = t * (1 << 20);  // each thread owns 1 MiB of rank 1's slice
        const uint64_t seed = SplitMix64(state);
        FillRandom(src.data(), len, seed);
        std::memset(back.data(), 0xA5, len);
        if (!engine_->Copy(Gva(1, off), Addr(src.data()), len).ok()) failures++;
        if (!engine_->Copy(Addr(back.data()), Gva(1, off), len).ok()) failures++;
        if (FirstMismatch(back.data(), len, seed)) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(EngineTest, DetachDrainsCopiesThenFailsThemWithPeerDown) {
  // Copies run against rank 2 while it is detached; the release frees the memory, so a copy
  // still touching it would be a use-after-free (caught by the ASAN build).
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, down{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&] {
      std::vector<uint8_t> buf(1 << 20);
      while (!stop) {
        Status s = engine_->Copy(Addr(buf.data()), Gva(2, 0), buf.size());
        if (s.ok()) ok++;
        else if (s.code() == Code::kPeerDown) down++;
        else other++;
      }
    });
  }
  while (ok.load() < 10) std::this_thread::yield();
  table_->Detach({Medium::kHost, 2, 0}, /*dead=*/true);
  while (down.load() < 10) std::this_thread::yield();
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  std::vector<uint8_t> buf(16);
  Status s = engine_->Copy(Addr(buf.data()), Gva(2, 0), 16);
  EXPECT_EQ(s.code(), Code::kPeerDown);
  EXPECT_NE(s.message().find("died"), std::string::npos);
  // The rank can be attached again (a peer rejoining under it).
  ASSERT_TRUE(AttachHeap(2).ok());
  EXPECT_TRUE(engine_->Copy(Addr(buf.data()), Gva(2, 0), 16).ok());
}

TEST(Layout, RejectsWindowsThatDoNotFit) {
  EXPECT_EQ(gva::Layout::Make(0, 1 << 20, 4).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(gva::Layout::Make(0x200000000001ull, 1 << 20, 4).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(gva::Layout::Make(0x200000000000ull, 1ull << 40, 64).status().code(), Code::kInvalidArgument);
  auto l = gva::Layout::Make(0x200000000000ull, 3 << 20, 4);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->rank_stride(), 4u << 20);  // rounded up to 2 MiB
}

}  // namespace
}  // namespace weft::engine
