// The CPU side of the CUDA paths: cost model, batch planner, descriptor packing, the page batch
// (index scan, bounds, launch parameters, the page kernel's address arithmetic run on the host,
// Engine::CopyPages' answers to bad input), and the sixteen explicit directions. Runs without a GPU (nvcc is needed to build weft_cuda, which CI
// has; without it only the direction tests run).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/metrics.h"
#include "base/random.h"
#include "engine/engine.h"
#include "gva/segment_table.h"
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

TEST(ScanPagesTest, ExtentsAreLargestIndexPlusOnePages) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  for (size_t n : {size_t{1}, size_t{7}, size_t{4096}, size_t{100000}}) {
    std::vector<uint32_t> d(n), s(n);
    for (size_t i = 0; i < n; ++i) {
      d[i] = static_cast<uint32_t>(SplitMix64(state) % (4 * n));
      s[i] = static_cast<uint32_t>(SplitMix64(state) % (3 * n));
    }
    const uint64_t page = 1 + SplitMix64(state) % (1 << 20);
    auto e = engine::ScanPages(page, d, s);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->dst, (uint64_t{*std::max_element(d.begin(), d.end())} + 1) * page);
    EXPECT_EQ(e->src, (uint64_t{*std::max_element(s.begin(), s.end())} + 1) * page);
  }
  // Largest index anywhere in the list, including the last and the first element.
  std::vector<uint32_t> d = {3, 1, 9}, s = {20, 0, 2};
  EXPECT_EQ(engine::ScanPages(16, d, s)->dst, 160u);
  EXPECT_EQ(engine::ScanPages(16, d, s)->src, 336u);
  std::vector<uint32_t> none;
  auto empty = engine::ScanPages(4096, none, none);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->dst, 0u);
  EXPECT_EQ(empty->src, 0u);
}

TEST(ScanPagesTest, BadListsAreRefused) {
  std::vector<uint32_t> two = {0, 1}, three = {0, 1, 2};
  auto mismatch = engine::ScanPages(4096, two, three);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), Code::kInvalidArgument) << mismatch.status().ToString();
  auto zero = engine::ScanPages(0, two, two);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().code(), Code::kInvalidArgument) << zero.status().ToString();
  // (UINT32_MAX + 1) pages of 2^33 bytes: past 64 bits.
  std::vector<uint32_t> far = {0, UINT32_MAX};
  auto over = engine::ScanPages(uint64_t{1} << 33, far, two);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().code(), Code::kOutOfRange) << over.status().ToString();
  EXPECT_FALSE(engine::ScanPages(uint64_t{1} << 32, far, two).ok());  // 2^32 pages of 2^32 B: 2^64, one past
  EXPECT_TRUE(engine::ScanPages((uint64_t{1} << 32) - 1, far, two).ok());  // 2^64 - 2^32: fits
}

// What CopyPages answers before any device work, on any machine: bad lists first; without a
// GPU, NOT_SUPPORTED naming the reason; with one, NOT_SUPPORTED for pageable host ends.
TEST(EnginePagesTest, BadInputAndNoGpu) {
  auto layout = *gva::Layout::Make(0x310000000000ull, 1 << 20, 2);
  gva::SegmentTable table(layout);
  MetricsRegistry metrics;
  engine::Engine eng(engine::EngineOptions{}, table, metrics);
  std::vector<uint8_t> a(1 << 16), b(1 << 16);
  const uint64_t da = reinterpret_cast<uint64_t>(a.data()), db = reinterpret_cast<uint64_t>(b.data());
  std::vector<uint32_t> two = {0, 1}, three = {0, 1, 2};
  EXPECT_EQ(eng.CopyPages(da, db, 4096, two, three).code(), Code::kInvalidArgument);
  EXPECT_EQ(eng.CopyPages(da, db, 0, two, two).code(), Code::kInvalidArgument);
  if (eng.FindTransport("cuda") == nullptr) {
    Status s = eng.CopyPages(da, db, 4096, two, two);
    EXPECT_EQ(s.code(), Code::kNotSupported) << s.ToString();
    EXPECT_NE(s.message().find("no path with one"), std::string::npos) << s.ToString();
  } else {
    // Host ends: the page kernel does not take pageable host memory.
    Status s = eng.CopyPages(da, db, 4096, two, two);
    EXPECT_EQ(s.code(), Code::kNotSupported) << s.ToString();
  }
  // Empty lists: nothing to do, on any machine with a cuda path.
  std::vector<uint32_t> none;
  if (eng.FindTransport("cuda")) {
    EXPECT_TRUE(eng.CopyPages(da, db, 4096, none, none).ok());
  }

  // Index pairs in device memory: a zero page size, a null pointer, an extent past 2^64 are
  // refused on any machine; without a GPU the rest is NOT_SUPPORTED with the reason; pairs in
  // host memory are never taken for device memory.
  const uint32_t pairs[4] = {0, 1, 1, 0};
  EXPECT_EQ(eng.CopyPagesDeviceIndexed(da, db, 0, pairs, 2, 1, 1).code(), Code::kInvalidArgument);
  EXPECT_EQ(eng.CopyPagesDeviceIndexed(da, db, 4096, nullptr, 2, 1, 1).code(), Code::kInvalidArgument);
  EXPECT_EQ(eng.CopyPagesDeviceIndexed(da, db, UINT64_MAX / 2, pairs, 2, 7, 1).code(), Code::kOutOfRange);
  Status dev = eng.CopyPagesDeviceIndexed(da, db, 4096, pairs, 2, 1, 1);
  EXPECT_EQ(dev.code(), Code::kNotSupported) << dev.ToString();
  if (eng.FindTransport("cuda") == nullptr) {
    EXPECT_NE(dev.message().find("no path with one"), std::string::npos) << dev.ToString();
  }
}

#if WEFT_HAVE_CUDA
using namespace transport::cuda;

TEST(PlanPagesTest, UnitsCoverEveryPageByteOnceAndKeepAlignment) {
  uint64_t state = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed " << state);
  for (int iter = 0; iter < 40; ++iter) {
    // Page sizes around the chunk boundary, odd ones and the KV sizes.
    const uint64_t sizes[] = {1, 15, 16, 4096, 16 << 10, 32 << 10, (32 << 10) + 16, 64 << 10, 100000, 256 << 10};
    const uint64_t page = iter < 10 ? sizes[iter] : 1 + SplitMix64(state) % (300 << 10);
    const uint64_t pages = 1 + SplitMix64(state) % 64;
    const uint32_t max_chunk = iter % 2 ? kPageChunkDefault : 16 + static_cast<uint32_t>(SplitMix64(state) % (64 << 10));
    const PageLaunch pl = PlanPages(page, pages, 132, 8, max_chunk);
    ASSERT_GT(pl.chunk, 0u);
    ASSERT_EQ(pl.units, pages * pl.chunks_per_page);
    ASSERT_GE(pl.grid, 1u);
    ASSERT_LE(pl.grid, std::min<uint64_t>(pl.units, 132 * 8));
    if (page > pl.chunk) {
      ASSERT_EQ(pl.chunk % 16, 0u) << "a split page must keep 16-byte alignment";
    }
    // Scattered page indices (a permutation each way), the kernel's arithmetic run on the host.
    std::vector<uint32_t> d(pages), s(pages);
    for (uint32_t i = 0; i < pages; ++i) d[i] = s[i] = i;
    for (size_t i = pages; i > 1; --i) {
      std::swap(d[i - 1], d[SplitMix64(state) % i]);
      std::swap(s[i - 1], s[SplitMix64(state) % i]);
    }
    const uint64_t seed = SplitMix64(state);
    std::vector<uint8_t> src(pages * page), dst(pages * page, 0xA5), expect(pages * page);
    FillRandom(src.data(), src.size(), seed);
    for (uint64_t i = 0; i < pages; ++i) std::memcpy(expect.data() + d[i] * page, src.data() + s[i] * page, page);
    std::vector<uint32_t> pairs(2 * pages);
    for (uint32_t i = 0; i < pages; ++i) {
      pairs[2 * i] = d[i];
      pairs[2 * i + 1] = s[i];
    }
    // Extents below 2^32 here: the kernel's 32-bit arithmetic must agree with the 64-bit one.
    PageCopyParams p{reinterpret_cast<uint64_t>(dst.data()), reinterpret_cast<uint64_t>(src.data()), page, pairs.data(),
                     static_cast<uint32_t>(pl.units), pl.chunk, pl.chunks_per_page, 1, nullptr, 0, 0};
    std::vector<uint32_t> writes(pages * page, 0);
    for (uint32_t u = 0; u < p.units; ++u) {
      const uint32_t pg = PageOfUnit(p, u);
      ASSERT_LT(pg, pages);
      const PageUnit w = PageUnitAt(p, u, pg, pairs[2 * pg], pairs[2 * pg + 1]);
      const PageUnit w32 = PageUnitAt32(p, u, pg, pairs[2 * pg], pairs[2 * pg + 1]);
      ASSERT_EQ(w.dst, w32.dst);
      ASSERT_EQ(w.src, w32.src);
      ASSERT_EQ(w.len, w32.len);
      ASSERT_GT(w.len, 0u);
      ASSERT_LE(w.len, pl.chunk);
      // A unit keeps the relative alignment of its page's ends (16-byte vectors stay usable).
      ASSERT_EQ((w.dst - p.dst_base) % 16 == (w.src - p.src_base) % 16 || page % 16 != 0, true);
      std::memcpy(reinterpret_cast<void*>(w.dst), reinterpret_cast<const void*>(w.src), w.len);
      for (uint64_t k = 0; k < w.len; ++k) ++writes[w.dst - p.dst_base + k];
    }
    ASSERT_EQ(std::memcmp(dst.data(), expect.data(), dst.size()), 0) << "page " << page << " iteration " << iter;
    ASSERT_TRUE(std::all_of(writes.begin(), writes.end(), [](uint32_t c) { return c == 1; }))
        << "every destination byte written exactly once";
  }
}

TEST(PlanPagesTest, KvShapesAndLimits) {
  // KV pages up to 256 KiB: one unit each; 1 MiB pages: 4 units of 256 KiB; 32 KiB units when asked.
  PageLaunch a = PlanPages(16 << 10, 4096, 132, 8);
  EXPECT_EQ(a.chunk, 16u << 10);
  EXPECT_EQ(a.chunks_per_page, 1u);
  EXPECT_EQ(a.units, 4096u);
  EXPECT_EQ(a.grid, 132u * 8);
  EXPECT_EQ(PlanPages(256 << 10, 4096, 132, 8).chunks_per_page, 1u);
  PageLaunch b = PlanPages(1 << 20, 4096, 132, 8);
  EXPECT_EQ(b.chunk, kPageChunkDefault);
  EXPECT_EQ(b.chunks_per_page, 4u);
  EXPECT_EQ(b.units, 4096u * 4);
  EXPECT_EQ(PlanPages(256 << 10, 4096, 132, 8, 32 << 10).chunks_per_page, 8u);
  // Few units: no more blocks than units; an SM budget caps the grid.
  EXPECT_EQ(PlanPages(4096, 3, 132, 8).grid, 3u);
  EXPECT_EQ(PlanPages(4096, 100000, 16, 8).grid, 128u);
  // Nothing to do.
  EXPECT_EQ(PlanPages(0, 10, 132, 8).units, 0u);
  EXPECT_EQ(PlanPages(4096, 0, 132, 8).units, 0u);
  // Huge pages still give a unit count that fits 32 bits per page.
  PageLaunch h = PlanPages(uint64_t{1} << 50, 1, 132, 8);
  EXPECT_GE(uint64_t{h.chunk} * h.chunks_per_page, uint64_t{1} << 50);
  EXPECT_EQ(h.chunk % 16, 0u);
}

TEST(PlanPagesTest, ThirtyTwoBitOffsetsAgreeUpToTheirLimit) {
  // The largest extents the transport gives the 32-bit kernel: just below 2^32 at each end.
  // Addresses only (nothing is copied), checked against the 64-bit arithmetic.
  const uint64_t dst_base = 0x7f0000000000ull, src_base = 0x7e0000000000ull;
  for (uint64_t page : {uint64_t{16} << 10, uint64_t{256} << 10, uint64_t{1} << 20, uint64_t{100000}}) {
    const uint32_t max_index = static_cast<uint32_t>(((uint64_t{1} << 32) - 1) / page - 1);
    ASSERT_LT((uint64_t{max_index} + 1) * page, uint64_t{1} << 32);
    const PageLaunch pl = PlanPages(page, 4, 132, 8);
    const uint32_t pairs[8] = {max_index, 0, 0, max_index, max_index / 2, max_index - 1, 7, max_index};
    PageCopyParams p{dst_base, src_base, page, pairs, static_cast<uint32_t>(pl.units), pl.chunk, pl.chunks_per_page, 1,
                     nullptr, 0, 0};
    for (uint32_t u = 0; u < p.units; ++u) {
      const uint32_t pg = PageOfUnit(p, u);
      const PageUnit w = PageUnitAt(p, u, pg, pairs[2 * pg], pairs[2 * pg + 1]);
      const PageUnit w32 = PageUnitAt32(p, u, pg, pairs[2 * pg], pairs[2 * pg + 1]);
      EXPECT_EQ(w.dst, w32.dst) << page << " unit " << u;
      EXPECT_EQ(w.src, w32.src) << page << " unit " << u;
      EXPECT_EQ(w.len, w32.len) << page << " unit " << u;
      EXPECT_LT(w.dst + w.len - dst_base, uint64_t{1} << 32);
    }
  }
}

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
