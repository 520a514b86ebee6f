// The CPU side of the CUDA paths: cost model, batch planner, descriptor packing, and the
// sixteen explicit directions. Runs without a GPU (nvcc is needed to build weft_cuda, which CI
// has; without it only the direction tests run).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "base/random.h"
#include "engine/engine.h"
#if WEFT_HAVE_CUDA
#include "transport/cuda/copy_plan.h"
#endif

namespace weft {
namespace {

using engine::Direction;
using transport::EndKind;

TEST(DirectionTest, SixteenNamesRoundTripAndMapToTheirEnds) {
  const EndKind kinds[] = {EndKind::kLH, EndKind::kLD, EndKind::kGH, EndKind::kGD};
  int seen = 0;
  for (EndKind s : kinds) {
    for (EndKind d : kinds) {
      Direction dir = engine::DirectionOf(s, d);
      ASSERT_NE(dir, Direction::kAuto);
      std::string name = engine::DirectionName(dir);
      EXPECT_EQ(name, std::string(transport::EndKindName(s)) + "2" + transport::EndKindName(d));
      auto parsed = engine::ParseDirection(name);
      ASSERT_TRUE(parsed.ok()) << name;
      EXPECT_EQ(*parsed, dir);
      auto lower = engine::ParseDirection(std::string(1, static_cast<char>(std::tolower(name[0]))) + name.substr(1));
      EXPECT_TRUE(lower.ok());
      ++seen;
    }
  }
  EXPECT_EQ(seen, 16);
  // The first values stay as they were (the C API carries them).
  EXPECT_EQ(static_cast<int>(Direction::kLH2LH), 1);
  EXPECT_EQ(static_cast<int>(Direction::kGH2GH), 4);
  EXPECT_EQ(*engine::ParseDirection("auto"), Direction::kAuto);
  auto bad = engine::ParseDirection("LX2GD");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
}

#if WEFT_HAVE_CUDA
using namespace transport::cuda;

TEST(CostModelTest, SingleCopiesTakeTheCopyEngineAndKvBatchesTheKernel) {
  CostModel m;
  // One copy: the planner never launches the kernel for it.
  PlanItem one{Link::kSameDevice, 0, true, 16 << 10};
  BatchPlan p = PlanBatch({&one, 1}, m);
  EXPECT_TRUE(p.kernel.empty());
  ASSERT_EQ(p.copy_engine.size(), 1u);
  // 4096 scattered 16 KiB pages on one GPU: one launch.
  std::vector<PlanItem> pages(4096, PlanItem{Link::kSameDevice, 0, true, 16 << 10});
  p = PlanBatch(pages, m);
  ASSERT_EQ(p.kernel.size(), 1u);
  EXPECT_EQ(p.kernel[0].items.size(), 4096u);
  EXPECT_EQ(p.kernel[0].bytes, 4096ull * (16 << 10));
  EXPECT_TRUE(p.copy_engine.empty());
  EXPECT_LT(m.KernelNanos(Link::kSameDevice, 4096, 64 << 20), m.CopyEngineNanos(Link::kSameDevice, 4096, 64 << 20));
  // Two large pieces: the copy engine is as fast and leaves the SMs alone.
  std::vector<PlanItem> big(2, PlanItem{Link::kSameDevice, 0, true, 64 << 20});
  p = PlanBatch(big, m);
  EXPECT_TRUE(p.kernel.empty());
  EXPECT_EQ(p.copy_engine.size(), 2u);
}

TEST(CostModelTest, IneligibleAndFailedItemsAreKeptApart) {
  CostModel m;
  std::vector<PlanItem> items;
  for (int i = 0; i < 100; ++i) items.push_back(PlanItem{Link::kSameDevice, i % 2, true, 4096});  // two GPUs
  items.push_back(PlanItem{Link::kStaged, 0, false, 4096});        // pageable host: copy engine only
  items.push_back(PlanItem{Link::kHostToDevice, 0, false, 4096});  // unmapped pinned host
  items.push_back(PlanItem{Link::kSameDevice, -1, false, 0});      // failed classification
  BatchPlan p = PlanBatch(items, m);
  ASSERT_EQ(p.kernel.size(), 2u);
  EXPECT_EQ(p.kernel[0].device, 0);
  EXPECT_EQ(p.kernel[1].device, 1);
  EXPECT_EQ(p.kernel[0].items.size() + p.kernel[1].items.size(), 100u);
  for (const KernelGroup& g : p.kernel)
    for (uint32_t i : g.items) EXPECT_EQ(items[i].device, g.device);
  EXPECT_EQ(p.copy_engine, (std::vector<uint32_t>{100, 101}));
  // The kernel cannot do staged links at all.
  EXPECT_GT(m.KernelNanos(Link::kStaged, 10, 1 << 20), 1e20);
  EXPECT_EQ(m.CopyEngineNanos(Link::kSameDevice, 0, 0), 0);
}

TEST(PackTest, DescriptorsCoverEveryByteOnceAndKeepAlignment) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  constexpr size_t kBuf = 4 << 20;
  std::vector<uint8_t> src(kBuf), dst(kBuf);
  for (int iter = 0; iter < 50; ++iter) {
    const uint64_t seed = SplitMix64(state);
    FillRandom(src.data(), kBuf, seed);
    std::memset(dst.data(), 0xA5, kBuf);
    const uint32_t chunk = 16 + static_cast<uint32_t>(SplitMix64(state) % (64 << 10));
    // Random copies into disjoint destination ranges, random source offsets.
    std::vector<DeviceCopyDesc> descs;
    struct Copy { uint64_t dst, src, len; };
    std::vector<Copy> copies;
    uint64_t at = 0;
    while (true) {
      const uint64_t len = 1 + SplitMix64(state) % (200 << 10);
      const uint64_t gap = SplitMix64(state) % 64;
      if (at + gap + len > kBuf) break;
      const uint64_t s = SplitMix64(state) % (kBuf - len);
      copies.push_back({at + gap, s, len});
      PackDescriptors(reinterpret_cast<uint64_t>(dst.data()) + at + gap, reinterpret_cast<uint64_t>(src.data()) + s,
                      len, chunk, descs);
      at += gap + len;
    }
    const uint32_t rounded = chunk & ~15u;
    for (const DeviceCopyDesc& d : descs) {
      ASSERT_GT(d.len, 0u);
      ASSERT_LE(d.len, rounded);
      // Each chunk keeps the copy's relative alignment: 16-byte vectors stay usable.
      EXPECT_EQ(d.reserved, 0u);
      std::memcpy(reinterpret_cast<void*>(d.dst), reinterpret_cast<const void*>(d.src), d.len);  // what a block does
    }
    std::vector<uint8_t> expect(kBuf, 0xA5);
    for (const Copy& c : copies) std::memcpy(expect.data() + c.dst, src.data() + c.src, c.len);
    ASSERT_EQ(std::memcmp(expect.data(), dst.data(), kBuf), 0) << "iteration " << iter;
  }
}

TEST(PackTest, ChunkAndGridStayInBounds) {
  for (uint64_t total : {uint64_t{0}, uint64_t{1}, uint64_t{64} << 20, uint64_t{1} << 40}) {
    for (int sms : {0, 1, 16, 132}) {
      const uint32_t c = ChooseChunk(total, 1, sms);
      EXPECT_GE(c, 4096u);
      EXPECT_LE(c, 256u << 10);
      EXPECT_EQ(c % 16, 0u);
    }
  }
  // 4096 pages of 16 KiB on 132 SMs: pages are not split.
  EXPECT_GE(ChooseChunk(4096ull * (16 << 10), 4096, 132), 16u << 10);
  EXPECT_EQ(ChooseGrid(0, 132, 8), 1u);
  EXPECT_EQ(ChooseGrid(10, 132, 8), 10u);
  EXPECT_EQ(ChooseGrid(1 << 20, 132, 8), 132u * 8);
  EXPECT_EQ(ChooseGrid(1 << 20, 16, 8), 128u);
}

TEST(PackTest, EmptyAndTinyCopies) {
  std::vector<DeviceCopyDesc> d;
  PackDescriptors(0x1000, 0x2000, 0, 4096, d);
  EXPECT_TRUE(d.empty());
  PackDescriptors(0x1001, 0x2003, 1, 4096, d);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].len, 1u);
  d.clear();
  PackDescriptors(0x1000, 0x2000, 10000, 5, d);  // max_chunk below 16 is raised to 16
  EXPECT_EQ(d.size(), 625u);
}
#else
TEST(CudaPlanTest, NeedsNvcc) { GTEST_SKIP() << "built without nvcc: the CUDA planner is not compiled"; }
#endif

}  // namespace
}  // namespace weft
