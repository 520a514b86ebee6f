// Tests of the gva layer: pool layout (Make, Encode/Decode) and the pool allocator.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <future>
#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gva/allocator.h"
#include "gva/layout.h"
#include "gva/segment_table.h"

namespace weft::gva {
namespace {

constexpr uint64_t kKiB = 1ull << 10;
constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kBase = 1ull << 40;  // a 2 MiB multiple well inside 2^47

// Fresh seed for every test; printed with every failure through SCOPED_TRACE.
class Seeded : public ::testing::Test {
 protected:
  Seeded() : seed_(std::random_device{}()), rng_(seed_), trace_(__FILE__, __LINE__, "seed " + std::to_string(seed_)) {}
  uint64_t Uniform(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }

  uint64_t seed_;
  std::mt19937_64 rng_;
  ::testing::ScopedTrace trace_;
};

Layout MakeLayout(uint64_t rank_size = 64 * kMiB, uint32_t max_ranks = 8) {
  auto l = Layout::Make(kBase, rank_size, max_ranks);
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  return *l;
}

// ---------------------------------------------------------------------------------------------
// Layout

TEST(Layout, MakeRejectsBadArguments) {
  EXPECT_EQ(Layout::Make(kBase, 0, 4).status().code(), Code::kInvalidArgument);                 // rank_size 0
  EXPECT_EQ(Layout::Make(kBase, kMiB, 0).status().code(), Code::kInvalidArgument);               // no ranks
  EXPECT_EQ(Layout::Make(0, kMiB, 4).status().code(), Code::kInvalidArgument);                   // base 0
  EXPECT_EQ(Layout::Make(kBase + 4096, kMiB, 4).status().code(), Code::kInvalidArgument);        // unaligned
  EXPECT_EQ(Layout::Make(kBase, (1ull << 47) + 1, 1).status().code(), Code::kInvalidArgument);   // > 128 TiB
  EXPECT_EQ(Layout::Make(kBase, 1ull << 40, 1024).status().code(), Code::kInvalidArgument);      // window too big
  EXPECT_EQ(Layout::Make((1ull << 47) - 2 * kMiB, 2 * kMiB, 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Layout::Make(kBase, std::numeric_limits<uint64_t>::max(), 1).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(Layout::Make(kBase, kMiB, std::numeric_limits<uint32_t>::max()).status().code(),
            Code::kInvalidArgument);
}

TEST(Layout, MakeRoundsStrideToHugePages) {
  auto l = Layout::Make(kBase, 3 * kMiB, 4);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->rank_size(), 3 * kMiB);
  EXPECT_EQ(l->rank_stride(), 4 * kMiB);
  EXPECT_EQ(l->region_size(), 16 * kMiB);
  EXPECT_EQ(l->end(), kBase + 32 * kMiB);
  EXPECT_EQ(l->SliceBase(Medium::kDevice, 1), kBase + 16 * kMiB + 4 * kMiB);
  auto exact = Layout::Make(kBase, 4 * kMiB, 4);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->rank_stride(), 4 * kMiB);
}

class LayoutRandom : public Seeded {};

TEST_F(LayoutRandom, EncodeDecodeRoundTrip) {
  for (int round = 0; round < 50; ++round) {
    const uint64_t rank_size = Uniform(1, 64 * kMiB * 1024);  // up to 64 GiB
    const uint32_t max_ranks = static_cast<uint32_t>(Uniform(1, 512));
    const uint64_t base = Uniform(1, 1024) * 2 * kMiB;
    auto l = Layout::Make(base, rank_size, max_ranks);
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    for (int i = 0; i < 1000; ++i) {
      Location loc{Uniform(0, 1) ? Medium::kDevice : Medium::kHost, static_cast<uint32_t>(Uniform(0, max_ranks - 1)),
                   Uniform(0, rank_size - 1)};
      const uint64_t gva = l->Encode(loc);
      ASSERT_TRUE(l->Contains(gva));
      auto back = l->Decode(gva);
      ASSERT_TRUE(back.has_value());
      ASSERT_EQ(*back, loc) << "gva " << gva;
    }
  }
}

TEST(Layout, DecodeOutsideWindow) {
  const Layout l = MakeLayout(3 * kMiB, 4);
  for (uint64_t addr : {uint64_t{0}, kBase - 1, l.end(), l.end() + 1, std::numeric_limits<uint64_t>::max()}) {
    EXPECT_FALSE(l.Contains(addr)) << addr;
    EXPECT_EQ(l.Decode(addr), std::nullopt) << addr;
  }
  auto first = l.Decode(kBase);
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, (Location{Medium::kHost, 0, 0}));
  auto last = l.Decode(l.end() - 1);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(*last, (Location{Medium::kDevice, 3, l.rank_stride() - 1}));
}

// ---------------------------------------------------------------------------------------------
// Allocator: errors

TEST(Allocator, AddSliceErrors) {
  Allocator a(MakeLayout(64 * kMiB, 4));
  EXPECT_EQ(a.AddSlice(4, Medium::kHost, kMiB).code(), Code::kOutOfRange);        // rank >= max_ranks
  EXPECT_EQ(a.AddSlice(0, Medium::kHost, 64 * kMiB + 1).code(), Code::kOutOfRange);  // > rank_size
  EXPECT_EQ(a.AddSlice(0, Medium::kHost, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(a.AddSlice(0, Medium::kHost, 63).code(), Code::kInvalidArgument);     // below the alignment
  EXPECT_EQ(a.AddSlice(0, static_cast<Medium>(7), kMiB).code(), Code::kInvalidArgument);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 64 * kMiB).ok());
  EXPECT_EQ(a.AddSlice(0, Medium::kHost, kMiB).code(), Code::kAlreadyExists);
  EXPECT_TRUE(a.AddSlice(0, Medium::kDevice, kMiB).ok());  // the other medium is another slice
  EXPECT_EQ(a.Stats(1, Medium::kHost).status().code(), Code::kNotFound);
}

TEST(Allocator, UnalignedCapacityIsRoundedDown) {
  Allocator a(MakeLayout(), 64);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 1000).ok());
  auto st = a.Stats(0, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->capacity, 960u);
  EXPECT_EQ(st->largest_free, 960u);
  EXPECT_TRUE(a.Alloc(960, Placement::Local(), 0).ok());
}

TEST(Allocator, AllocErrors) {
  Allocator a(MakeLayout(64 * kMiB, 4));
  ASSERT_TRUE(a.AddSlice(2, Medium::kHost, 4 * kMiB).ok());
  EXPECT_EQ(a.Alloc(0, Placement::OnRank(2), 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a.Alloc(0, Placement::Spread(), 0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(1), 0).status().code(), Code::kNotFound);
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(9), 0).status().code(), Code::kNotFound);  // beyond max_ranks
  EXPECT_EQ(a.Alloc(64, Placement::Local(), 0).status().code(), Code::kNotFound);
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(2, Medium::kDevice), 0).status().code(), Code::kNotFound);
  EXPECT_EQ(a.Alloc(64, Placement::Spread(Medium::kDevice), 0).status().code(), Code::kNotFound);
  EXPECT_EQ(a.Alloc(64, Placement{Placement::Kind::kRank, 2, static_cast<Medium>(5)}, 0).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(a.Alloc(64, Placement{static_cast<Placement::Kind>(9), 2, Medium::kHost}, 0).status().code(),
            Code::kInvalidArgument);

  // Sizes that overflow any rounding: an error, never UB or a wrapped-around small block.
  for (uint64_t size : {std::numeric_limits<uint64_t>::max(), std::numeric_limits<uint64_t>::max() - 10,
                        std::numeric_limits<uint64_t>::max() - 63, (uint64_t{1} << 63) + 1, 64 * kMiB + 1,
                        4 * kMiB + 1}) {
    for (Placement p : {Placement::OnRank(2), Placement::Local(), Placement::Spread()}) {
      auto r = a.Alloc(size, p, 2);
      ASSERT_FALSE(r.ok()) << size;
      EXPECT_TRUE(r.status().code() == Code::kPoolFull || r.status().code() == Code::kInvalidArgument)
          << r.status().ToString();
    }
  }
  auto st = a.Stats(2, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->used, 0u);
  EXPECT_EQ(st->allocations, 0u);
}

TEST(Allocator, PoolFullMessageSaysWhatAndWhere) {
  Allocator a(MakeLayout(64 * kMiB, 4));
  ASSERT_TRUE(a.AddSlice(2, Medium::kHost, 4 * kMiB).ok());
  ASSERT_TRUE(a.Alloc(3 * kMiB, Placement::OnRank(2), 0).ok());
  auto r = a.Alloc(2 * kMiB, Placement::OnRank(2), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kPoolFull);
  const std::string& msg = r.status().message();
  EXPECT_NE(msg.find(std::to_string(2 * kMiB)), std::string::npos) << msg;            // requested size
  EXPECT_NE(msg.find("largest free block is " + std::to_string(kMiB)), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 2 host"), std::string::npos) << msg;
  EXPECT_NE(msg.find("free memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("join more peers"), std::string::npos) << msg;

  auto s = a.Alloc(2 * kMiB, Placement::Spread(), 0);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Code::kPoolFull);
  EXPECT_NE(s.status().message().find("rank 2 host"), std::string::npos) << s.status().message();
  EXPECT_NE(s.status().message().find("largest free block is " + std::to_string(kMiB)), std::string::npos);
}

TEST(Allocator, FreeAndSizeErrors) {
  const Layout l = MakeLayout(64 * kMiB, 4);
  Allocator a(l, 64);
  ASSERT_TRUE(a.AddSlice(1, Medium::kHost, 4 * kMiB).ok());
  ASSERT_TRUE(a.AddSlice(3, Medium::kHost, 4 * kMiB).ok());
  auto g = a.Alloc(100, Placement::OnRank(1), 0);  // takes [0, 128)
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  auto g2 = a.Alloc(4096, Placement::OnRank(1), 0);  // takes [128, 4224)
  ASSERT_TRUE(g2.ok());
  ASSERT_EQ(*g, l.SliceBase(Medium::kHost, 1));
  ASSERT_TRUE(a.Alloc(64, Placement::OnRank(3), 0).ok());
  a.RemoveSlice(3, Medium::kHost);

  struct Case {
    uint64_t gva;
    Code code;
    const char* what;
  };
  const Case cases[] = {
      {0, Code::kInvalidAddress, "null"},
      {kBase - 1, Code::kInvalidAddress, "below the pool"},
      {l.end(), Code::kInvalidAddress, "past the pool"},
      {std::numeric_limits<uint64_t>::max(), Code::kInvalidAddress, "UINT64_MAX"},
      {*g + 1, Code::kInvalidAddress, "inside a live block"},
      {*g + 64, Code::kInvalidAddress, "inside the alignment padding of a live block"},
      {*g2 + 4095, Code::kInvalidAddress, "last byte of a live block"},
      {*g2 + 4096, Code::kDoubleFree, "free space right after the last block"},
      {*g2 + kMiB + 3, Code::kDoubleFree, "free space, unaligned"},
      {l.SliceBase(Medium::kHost, 1) + 4 * kMiB, Code::kInvalidAddress, "past the slice's capacity"},
      {l.SliceBase(Medium::kHost, 1) + l.rank_stride() - 1, Code::kInvalidAddress, "in the stride padding"},
      {l.SliceBase(Medium::kHost, 0), Code::kInvalidAddress, "never-added slice"},
      {l.SliceBase(Medium::kDevice, 1), Code::kInvalidAddress, "never-added medium"},
      {l.SliceBase(Medium::kHost, 3), Code::kPeerDown, "removed slice"},
      {l.SliceBase(Medium::kHost, 3) + 12345, Code::kPeerDown, "removed slice, anywhere"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(a.Free(c.gva).code(), c.code) << c.what << ": " << a.Free(c.gva).ToString();
    EXPECT_EQ(a.AllocationSize(c.gva).status().code(), c.code) << c.what;
  }
  // Nothing above changed the live blocks.
  ASSERT_EQ(a.AllocationSize(*g).value_or(0), 100u);
  ASSERT_EQ(a.AllocationSize(*g2).value_or(0), 4096u);
  ASSERT_TRUE(a.Free(*g).ok());
  EXPECT_EQ(a.Free(*g).code(), Code::kDoubleFree);
  EXPECT_EQ(a.AllocationSize(*g).status().code(), Code::kDoubleFree);
  ASSERT_TRUE(a.Free(*g2).ok());
  EXPECT_EQ(a.Free(*g2).code(), Code::kDoubleFree);
  auto st = a.Stats(1, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->free_blocks, 1u);
  EXPECT_EQ(st->largest_free, 4 * kMiB);
}

TEST(Allocator, InvalidAlignmentIsClampedTo64) {
  for (uint64_t align : {uint64_t{0}, uint64_t{1}, uint64_t{4}, uint64_t{3}, uint64_t{100}, uint64_t{96}}) {
    Allocator a(MakeLayout(), align);
    ASSERT_TRUE(a.AddSlice(0, Medium::kHost, kMiB).ok());
    auto x = a.Alloc(1, Placement::Local(), 0);
    auto y = a.Alloc(1, Placement::Local(), 0);
    ASSERT_TRUE(x.ok() && y.ok());
    EXPECT_EQ(*y - *x, 64u) << "alignment " << align;
    EXPECT_EQ(a.Stats(0, Medium::kHost)->used, 128u);
  }
}

TEST(Allocator, ValidAlignmentsAreHonoured) {
  for (uint64_t align : {uint64_t{8}, uint64_t{16}, uint64_t{4096}, 2 * kMiB}) {
    Allocator a(MakeLayout(), align);
    ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 32 * kMiB).ok());
    for (uint64_t size : {uint64_t{1}, uint64_t{7}, align - 1, align, align + 1, 3 * align + 5}) {
      if (size == 0) continue;
      auto g = a.Alloc(size, Placement::Local(), 0);
      ASSERT_TRUE(g.ok()) << g.status().ToString();
      EXPECT_EQ((*g - kBase) % align, 0u);
      EXPECT_EQ(*g % align, 0u);  // slices start on 2 MiB, so the GVA itself is aligned too
      EXPECT_EQ(a.AllocationSize(*g).value_or(0), size);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Allocator: random stress against a shadow model

struct Block {
  uint64_t requested;
  uint64_t rounded;
};

// Checks that the live blocks are disjoint, inside their slice and aligned, and that the
// allocator's statistics match them.
void CheckModel(const Allocator& a, const std::map<uint64_t, Block>& model, uint32_t rank, uint64_t capacity,
                uint64_t align) {
  const uint64_t lo = a.layout().SliceBase(Medium::kHost, rank);
  uint64_t used = 0;
  uint64_t prev_end = lo;
  for (const auto& [gva, b] : model) {
    ASSERT_GE(gva, prev_end) << "overlapping allocations";
    ASSERT_LE(gva + b.rounded, lo + capacity) << "allocation past the slice";
    ASSERT_EQ((gva - lo) % align, 0u);
    ASSERT_EQ(b.rounded % align, 0u);
    ASSERT_GE(b.rounded, b.requested);
    ASSERT_LT(b.rounded - b.requested, align);
    prev_end = gva + b.rounded;
    used += b.rounded;
  }
  auto st = a.Stats(rank, Medium::kHost);
  ASSERT_TRUE(st.ok());
  ASSERT_EQ(st->used, used);
  ASSERT_EQ(st->allocations, model.size());
  ASSERT_EQ(st->capacity, capacity);
  ASSERT_LE(st->largest_free, capacity - used);
  ASSERT_GE(st->free_blocks, capacity > used ? 1u : 0u);
  // The free list holds exactly the gaps between live blocks (all coalesced): count them.
  uint64_t gaps = 0;
  uint64_t largest_gap = 0;
  uint64_t cursor = lo;
  for (const auto& [gva, b] : model) {
    if (gva > cursor) {
      ++gaps;
      largest_gap = std::max(largest_gap, gva - cursor);
    }
    cursor = gva + b.rounded;
  }
  if (lo + capacity > cursor) {
    ++gaps;
    largest_gap = std::max(largest_gap, lo + capacity - cursor);
  }
  ASSERT_EQ(st->free_blocks, gaps) << "free neighbours were not coalesced";
  ASSERT_EQ(st->largest_free, largest_gap);
}

class AllocatorRandom : public Seeded, public ::testing::WithParamInterface<uint64_t> {};

TEST_P(AllocatorRandom, StressAgainstShadowModel) {
  const uint64_t align = GetParam();
  const uint64_t capacity = 48 * kMiB;
  Allocator a(MakeLayout(64 * kMiB, 4), align);
  ASSERT_TRUE(a.AddSlice(1, Medium::kHost, capacity).ok());
  std::map<uint64_t, Block> model;
  std::vector<uint64_t> live;  // for picking a random one to free
  int full = 0;
  for (int op = 0; op < 20000; ++op) {
    const bool alloc = live.empty() || Uniform(0, 99) < 60;
    if (alloc) {
      const uint64_t size = Uniform(0, 3) == 0 ? Uniform(1, 256) : Uniform(1, kMiB);
      const uint64_t rounded = (size + align - 1) / align * align;
      const uint64_t largest_before = a.Stats(1, Medium::kHost)->largest_free;
      auto g = a.Alloc(size, Uniform(0, 1) ? Placement::Local() : Placement::OnRank(1), 1);
      if (!g.ok()) {
        ASSERT_EQ(g.status().code(), Code::kPoolFull) << g.status().ToString();
        ASSERT_LT(largest_before, rounded) << "POOL_FULL although a block fits";
        ++full;
        continue;
      }
      ASSERT_GE(largest_before, rounded);
      ASSERT_EQ(a.AllocationSize(*g).value_or(0), size);
      // Disjoint from its neighbours in the model.
      auto next = model.lower_bound(*g);
      if (next != model.end()) {
        ASSERT_GE(next->first, *g + rounded) << "overlaps the next block";
      }
      if (next != model.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second.rounded, *g) << "overlaps the previous block";
      }
      model.emplace(*g, Block{size, rounded});
      live.push_back(*g);
    } else {
      const size_t i = Uniform(0, live.size() - 1);
      const uint64_t g = live[i];
      live[i] = live.back();
      live.pop_back();
      ASSERT_TRUE(a.Free(g).ok()) << a.Free(g).ToString();
      model.erase(g);
      ASSERT_EQ(a.Free(g).code(), Code::kDoubleFree);
    }
    if (op % 97 == 0) {
      CheckModel(a, model, 1, capacity, align);
      if (HasFatalFailure()) return;
    }
  }
  CheckModel(a, model, 1, capacity, align);
  if (HasFatalFailure()) return;
  EXPECT_GT(full, 0) << "the stress never filled the slice";
  std::shuffle(live.begin(), live.end(), rng_);
  for (uint64_t g : live) ASSERT_TRUE(a.Free(g).ok());
  auto st = a.Stats(1, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->used, 0u);
  EXPECT_EQ(st->allocations, 0u);
  EXPECT_EQ(st->free_blocks, 1u);
  EXPECT_EQ(st->largest_free, capacity);
  auto whole = a.Alloc(capacity, Placement::Local(), 1);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  EXPECT_EQ(*whole, a.layout().SliceBase(Medium::kHost, 1));
}

INSTANTIATE_TEST_SUITE_P(Alignments, AllocatorRandom, ::testing::Values(8, 64, 4096),
                         [](const auto& info) { return "align" + std::to_string(info.param); });

TEST(Allocator, FragmentationAndCoalescing) {
  constexpr uint64_t kBlock = 64 * kKiB;
  constexpr int kN = 64;
  Allocator a(MakeLayout(), 64);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, kN * kBlock).ok());
  std::vector<uint64_t> blocks;
  for (int i = 0; i < kN; ++i) {
    auto g = a.Alloc(kBlock, Placement::Local(), 0);
    ASSERT_TRUE(g.ok()) << i << ": " << g.status().ToString();
    blocks.push_back(*g);
  }
  EXPECT_EQ(a.Alloc(1, Placement::Local(), 0).status().code(), Code::kPoolFull);
  for (int i = 0; i < kN; i += 2) ASSERT_TRUE(a.Free(blocks[i]).ok());
  auto st = a.Stats(0, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->used, kN / 2 * kBlock);
  EXPECT_EQ(st->free_blocks, static_cast<uint64_t>(kN / 2));
  EXPECT_EQ(st->largest_free, kBlock);
  // Half the slice is free, but in holes of one block: twice a block does not fit.
  auto two = a.Alloc(2 * kBlock, Placement::Local(), 0);
  ASSERT_FALSE(two.ok());
  EXPECT_EQ(two.status().code(), Code::kPoolFull);
  // Best fit at the lowest address: a one-block request fills the first hole exactly.
  auto one = a.Alloc(kBlock, Placement::Local(), 0);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, blocks[0]);
  ASSERT_TRUE(a.Free(*one).ok());
  for (int i = 1; i < kN; i += 2) ASSERT_TRUE(a.Free(blocks[i]).ok());
  st = a.Stats(0, Medium::kHost);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->free_blocks, 1u);
  EXPECT_EQ(st->largest_free, kN * kBlock);
  auto all = a.Alloc(kN * kBlock, Placement::Local(), 0);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
}

TEST(Allocator, BestFitPicksTheSmallestHole) {
  Allocator a(MakeLayout(), 64);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 16 * kMiB).ok());
  // Holes of 4 KiB, 1 KiB, 2 KiB separated by live blocks; the rest of the slice is one big hole.
  std::vector<uint64_t> g;
  for (uint64_t size : {4 * kKiB, uint64_t{64}, kKiB, uint64_t{64}, 2 * kKiB, uint64_t{64}}) g.push_back(*a.Alloc(size, Placement::Local(), 0));
  ASSERT_TRUE(a.Free(g[0]).ok());
  ASSERT_TRUE(a.Free(g[2]).ok());
  ASSERT_TRUE(a.Free(g[4]).ok());
  EXPECT_EQ(a.Alloc(1500, Placement::Local(), 0).value_or(0), g[4]);  // the 2 KiB hole
  EXPECT_EQ(a.Alloc(1000, Placement::Local(), 0).value_or(0), g[2]);  // the 1 KiB hole
  EXPECT_EQ(a.Alloc(3000, Placement::Local(), 0).value_or(0), g[0]);  // the 4 KiB hole
}

// ---------------------------------------------------------------------------------------------
// Allocator: placement

TEST(Allocator, PlacementChoosesTheRank) {
  const Layout l = MakeLayout(64 * kMiB, 8);
  Allocator a(l);
  for (uint32_t r = 0; r < 4; ++r) {
    ASSERT_TRUE(a.AddSlice(r, Medium::kHost, 8 * kMiB).ok());
    ASSERT_TRUE(a.AddSlice(r, Medium::kDevice, 8 * kMiB).ok());
  }
  auto local = a.Alloc(100, Placement::Local(), 2);
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(l.Decode(*local)->rank, 2u);
  EXPECT_EQ(l.Decode(*local)->medium, Medium::kHost);
  auto local_dev = a.Alloc(100, Placement::Local(Medium::kDevice), 3);
  ASSERT_TRUE(local_dev.ok());
  EXPECT_EQ(*l.Decode(*local_dev), (Location{Medium::kDevice, 3, 0}));
  auto on = a.Alloc(100, Placement::OnRank(1), 2);
  ASSERT_TRUE(on.ok());
  EXPECT_EQ(*l.Decode(*on), (Location{Medium::kHost, 1, 0}));

  // Spread: the most free bytes. Ranks 1 and 2 have 128 bytes used now; give rank 0 more.
  ASSERT_TRUE(a.Alloc(kMiB, Placement::OnRank(0), 0).ok());
  auto s = a.Alloc(100, Placement::Spread(), 0);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(l.Decode(*s)->rank, 3u);  // the only host slice with nothing used
  // Now rank 1, 2 and 3 each use 128 bytes: ties go to the lowest rank.
  auto t = a.Alloc(100, Placement::Spread(), 0);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(l.Decode(*t)->rank, 1u);
  // Device: rank 3 used 128 bytes, ranks 0..2 none: the lowest rank of the tie.
  auto d = a.Alloc(100, Placement::Spread(Medium::kDevice), 0);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*l.Decode(*d), (Location{Medium::kDevice, 0, 0}));
}

TEST(Allocator, SpreadBalances) {
  const Layout l = MakeLayout(64 * kMiB, 8);
  Allocator a(l);
  for (uint32_t r : {0u, 2u, 5u, 7u}) ASSERT_TRUE(a.AddSlice(r, Medium::kHost, 16 * kMiB).ok());
  std::map<uint32_t, int> count;
  for (int i = 0; i < 400; ++i) {
    auto g = a.Alloc(10 * kKiB, Placement::Spread(), 0);
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    ++count[l.Decode(*g)->rank];
  }
  ASSERT_EQ(count.size(), 4u);
  for (const auto& [rank, n] : count) EXPECT_EQ(n, 100) << "rank " << rank;
  for (uint32_t r : {0u, 2u, 5u, 7u}) EXPECT_EQ(a.Stats(r, Medium::kHost)->used, 100 * 10 * kKiB);
}

TEST(Allocator, SpreadSkipsSlicesWhereTheRequestDoesNotFit) {
  const Layout l = MakeLayout(64 * kMiB, 8);
  Allocator a(l, 64);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 8 * kMiB).ok());
  ASSERT_TRUE(a.AddSlice(1, Medium::kHost, 4 * kMiB).ok());
  // Rank 0: fill with 1 MiB blocks, free every other: 4 MiB free, largest hole 1 MiB.
  std::vector<uint64_t> g;
  for (int i = 0; i < 8; ++i) g.push_back(*a.Alloc(kMiB, Placement::OnRank(0), 0));
  for (int i = 0; i < 8; i += 2) ASSERT_TRUE(a.Free(g[i]).ok());
  // Rank 1: 3 MiB free in one block. Rank 0 has more free bytes but no 2 MiB hole.
  ASSERT_TRUE(a.Alloc(kMiB, Placement::OnRank(1), 0).ok());
  auto s = a.Alloc(2 * kMiB, Placement::Spread(), 0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(l.Decode(*s)->rank, 1u);
  // A 1 MiB request fits both; rank 0 has more free bytes (4 MiB vs 1 MiB).
  auto t = a.Alloc(kMiB, Placement::Spread(), 0);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(l.Decode(*t)->rank, 0u);
}

// ---------------------------------------------------------------------------------------------
// Allocator: removed ranks

TEST(Allocator, RemovedSliceIsPeerDownAndCanRejoin) {
  const Layout l = MakeLayout(64 * kMiB, 4);
  Allocator a(l);
  ASSERT_TRUE(a.AddSlice(0, Medium::kHost, 4 * kMiB).ok());
  ASSERT_TRUE(a.AddSlice(2, Medium::kHost, 4 * kMiB).ok());
  auto g = a.Alloc(1000, Placement::OnRank(2), 0);
  auto h = a.Alloc(5000, Placement::OnRank(2), 0);
  auto keep = a.Alloc(1000, Placement::OnRank(0), 0);
  ASSERT_TRUE(g.ok() && h.ok() && keep.ok());

  a.RemoveSlice(2, Medium::kHost);
  a.RemoveSlice(3, Medium::kHost);    // unknown: no-op
  a.RemoveSlice(2, Medium::kDevice);  // unknown: no-op
  EXPECT_EQ(a.Free(*g).code(), Code::kPeerDown);
  EXPECT_EQ(a.Free(*h).code(), Code::kPeerDown);
  EXPECT_EQ(a.AllocationSize(*g).status().code(), Code::kPeerDown);
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(2), 0).status().code(), Code::kPeerDown);
  EXPECT_EQ(a.Alloc(64, Placement::Local(), 2).status().code(), Code::kPeerDown);
  EXPECT_EQ(a.Stats(2, Medium::kHost).status().code(), Code::kPeerDown);
  // Never-added neighbours are unaffected by the removal mark.
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(3), 0).status().code(), Code::kNotFound);
  EXPECT_EQ(a.Alloc(64, Placement::OnRank(2, Medium::kDevice), 0).status().code(), Code::kNotFound);
  // Spread uses the remaining slices only.
  for (int i = 0; i < 10; ++i) {
    auto s = a.Alloc(64, Placement::Spread(), 0);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(l.Decode(*s)->rank, 0u);
  }
  // Other slices keep working.
  EXPECT_EQ(a.AllocationSize(*keep).value_or(0), 1000u);
  EXPECT_TRUE(a.Free(*keep).ok());

  // A peer rejoins under the reused rank: a fresh, empty slice, no longer PEER_DOWN.
  ASSERT_TRUE(a.AddSlice(2, Medium::kHost, 2 * kMiB).ok());
  auto st = a.Stats(2, Medium::kHost);
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->capacity, 2 * kMiB);
  EXPECT_EQ(st->used, 0u);
  EXPECT_EQ(st->allocations, 0u);
  EXPECT_EQ(st->free_blocks, 1u);
  // Old GVAs now point into the new slice's free space.
  EXPECT_EQ(a.Free(*g).code(), Code::kDoubleFree);
  auto n = a.Alloc(64, Placement::OnRank(2), 0);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, l.SliceBase(Medium::kHost, 2));
  EXPECT_TRUE(a.Free(*n).ok());
  EXPECT_EQ(a.AddSlice(2, Medium::kHost, kMiB).code(), Code::kAlreadyExists);
  // Removed again: PEER_DOWN again.
  a.RemoveSlice(2, Medium::kHost);
  EXPECT_EQ(a.Free(*n).code(), Code::kPeerDown);
}

TEST(Allocator, ReserveErrors) {
  const Layout l = MakeLayout(64 * kMiB, 4);
  Allocator a(l);  // alignment 64
  ASSERT_TRUE(a.AddSlice(1, Medium::kHost, 4 * kMiB).ok());
  const uint64_t base = l.SliceBase(Medium::kHost, 1);
  EXPECT_EQ(a.Reserve(base, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(a.Reserve(kBase - 64, 64).code(), Code::kInvalidAddress) << "below the pool";
  EXPECT_EQ(a.Reserve(l.SliceBase(Medium::kHost, 0), 64).code(), Code::kInvalidAddress) << "rank without a slice";
  EXPECT_EQ(a.Reserve(l.SliceBase(Medium::kDevice, 1), 64).code(), Code::kInvalidAddress) << "medium without one";
  EXPECT_EQ(a.Reserve(base + 32, 64).code(), Code::kInvalidAddress) << "not aligned as Alloc aligns";
  EXPECT_EQ(a.Reserve(base + 4 * kMiB, 64).code(), Code::kInvalidAddress) << "past the slice's end";
  EXPECT_EQ(a.Reserve(base + 4 * kMiB - 64, 65).code(), Code::kInvalidAddress) << "runs past the end";
  EXPECT_EQ(a.Reserve(base, std::numeric_limits<uint64_t>::max()).code(), Code::kInvalidAddress);
  EXPECT_EQ(a.Stats(1, Medium::kHost)->used, 0u) << "a refused reserve takes nothing";
  a.RemoveSlice(1, Medium::kHost);
  EXPECT_EQ(a.Reserve(base, 64).code(), Code::kInvalidAddress) << "a removed slice";
}

TEST(Allocator, ReserveIsAnAllocationAtTheGivenAddress) {
  const Layout l = MakeLayout(64 * kMiB, 4);
  Allocator a(l);
  ASSERT_TRUE(a.AddSlice(1, Medium::kHost, kMiB).ok());
  const uint64_t base = l.SliceBase(Medium::kHost, 1);
  // In the middle of the free slice: the free space on both sides stays free.
  ASSERT_TRUE(a.Reserve(base + 4096, 1000).ok());
  auto st = a.Stats(1, Medium::kHost);
  EXPECT_EQ(st->used, 1024u) << "rounded up to the alignment, as Alloc rounds";
  EXPECT_EQ(st->allocations, 1u);
  EXPECT_EQ(st->free_blocks, 2u);
  EXPECT_EQ(st->largest_free, kMiB - 4096 - 1024);
  EXPECT_EQ(a.AllocationSize(base + 4096).value_or(0), 1000u);
  // Any overlap with it is refused, whatever the side.
  EXPECT_EQ(a.Reserve(base + 4096, 1).code(), Code::kAlreadyExists);
  EXPECT_EQ(a.Reserve(base + 4096 - 64, 65).code(), Code::kAlreadyExists);
  EXPECT_EQ(a.Reserve(base + 4096 + 960, 64).code(), Code::kAlreadyExists) << "the rounded tail is taken too";
  EXPECT_EQ(a.Reserve(base, 8192).code(), Code::kAlreadyExists);
  // Touching it is fine on both sides.
  ASSERT_TRUE(a.Reserve(base + 4096 + 1024, 64).ok());
  ASSERT_TRUE(a.Reserve(base + 4096 - 64, 64).ok());
  EXPECT_EQ(a.Stats(1, Medium::kHost)->used, 1024u + 128u);
  // Free of a reserved block coalesces as any free does: back to one free block.
  EXPECT_EQ(a.Free(base + 4096 + 64).code(), Code::kInvalidAddress) << "inside, not its start";
  ASSERT_TRUE(a.Free(base + 4096).ok());
  EXPECT_EQ(a.Free(base + 4096).code(), Code::kDoubleFree);
  ASSERT_TRUE(a.Free(base + 4096 + 1024).ok());
  ASSERT_TRUE(a.Free(base + 4096 - 64).ok());
  st = a.Stats(1, Medium::kHost);
  EXPECT_EQ(st->used, 0u);
  EXPECT_EQ(st->allocations, 0u);
  EXPECT_EQ(st->free_blocks, 1u);
  EXPECT_EQ(st->largest_free, kMiB);
  // The whole slice, at its end: exactly.
  ASSERT_TRUE(a.Reserve(base + kMiB - 64, 64).ok());
  ASSERT_TRUE(a.Reserve(base, kMiB - 64).ok());
  EXPECT_EQ(a.Stats(1, Medium::kHost)->used, kMiB);
  EXPECT_EQ(a.Alloc(1, Placement::OnRank(1), 0).status().code(), Code::kPoolFull);
}

TEST(Allocator, AllocNeverOverlapsReservedBlocks) {
  const Layout l = MakeLayout(64 * kMiB, 4);
  Allocator a(l);
  ASSERT_TRUE(a.AddSlice(2, Medium::kHost, 64 * kKiB).ok());
  const uint64_t base = l.SliceBase(Medium::kHost, 2);
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // [start, end), rounded
  for (uint64_t off : {0ull, 640ull, 5 * 1024ull, 33 * 1024ull, 64 * 1024ull - 128}) {
    ASSERT_TRUE(a.Reserve(base + off, 100).ok()) << off;
    blocks.emplace_back(base + off, base + off + 128);
  }
  uint64_t allocated = 0;
  for (;;) {  // until full
    auto g = a.Alloc(96, Placement::OnRank(2), 0);
    if (!g.ok()) {
      EXPECT_EQ(g.status().code(), Code::kPoolFull);
      break;
    }
    blocks.emplace_back(*g, *g + 128);
    ++allocated;
  }
  std::sort(blocks.begin(), blocks.end());
  for (size_t i = 1; i < blocks.size(); ++i) EXPECT_LE(blocks[i - 1].second, blocks[i].first) << i;
  EXPECT_EQ(allocated, 64 * kKiB / 128 - 5) << "every other 128-byte block of the slice was handed out";
  EXPECT_EQ(a.Stats(2, Medium::kHost)->used, 64 * kKiB);
}

// ---------------------------------------------------------------------------------------------
// Allocator: threads

class AllocatorThreads : public Seeded {};

TEST_F(AllocatorThreads, ConcurrentAllocFree) {
  constexpr int kThreads = 8;
  constexpr uint32_t kRanks = 4;
  constexpr uint64_t kCapacity = 32 * kMiB;
  const Layout l = MakeLayout(64 * kMiB, kRanks);
  Allocator a(l, 64);
  for (uint32_t r = 0; r < kRanks; ++r) ASSERT_TRUE(a.AddSlice(r, Medium::kHost, kCapacity).ok());

  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> kept(kThreads);  // (gva, size) per thread
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed_ + t);
      auto uniform = [&](uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng); };
      auto& mine = kept[t];
      for (int op = 0; op < 5000; ++op) {
        if (mine.empty() || uniform(0, 99) < 55) {
          const uint64_t size = uniform(1, 256 * kKiB);
          Placement p = uniform(0, 2) == 0   ? Placement::Spread()
                        : uniform(0, 1) == 0 ? Placement::Local()
                                             : Placement::OnRank(static_cast<uint32_t>(uniform(0, kRanks - 1)));
          auto g = a.Alloc(size, p, static_cast<uint32_t>(t % kRanks));
          if (!g.ok()) {
            if (g.status().code() != Code::kPoolFull) ++errors;
            continue;
          }
          if (a.AllocationSize(*g).value_or(0) != size) ++errors;
          mine.emplace_back(*g, size);
        } else {
          const size_t i = uniform(0, mine.size() - 1);
          if (!a.Free(mine[i].first).ok()) ++errors;
          mine[i] = mine.back();
          mine.pop_back();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(errors.load(), 0);

  // Final consistency: every live block is distinct, disjoint, in its slice, and the stats agree.
  std::map<uint32_t, std::map<uint64_t, Block>> by_rank;
  for (const auto& mine : kept) {
    for (const auto& [gva, size] : mine) {
      auto loc = l.Decode(gva);
      ASSERT_TRUE(loc.has_value());
      ASSERT_EQ(a.AllocationSize(gva).value_or(0), size);
      ASSERT_TRUE(by_rank[loc->rank].emplace(gva, Block{size, (size + 63) / 64 * 64}).second) << "handed out twice";
    }
  }
  for (uint32_t r = 0; r < kRanks; ++r) {
    CheckModel(a, by_rank[r], r, kCapacity, 64);
    if (HasFatalFailure()) return;
  }
  // Free everything from several threads at once; every slice coalesces back to one block.
  threads.clear();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (const auto& [gva, size] : kept[t])
        if (!a.Free(gva).ok()) ++errors;
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(errors.load(), 0);
  for (uint32_t r = 0; r < kRanks; ++r) {
    auto st = a.Stats(r, Medium::kHost);
    ASSERT_TRUE(st.ok());
    EXPECT_EQ(st->used, 0u);
    EXPECT_EQ(st->allocations, 0u);
    EXPECT_EQ(st->free_blocks, 1u);
    EXPECT_EQ(st->largest_free, kCapacity);
  }
}

// A device slice's GPU travels with every pin (copies then need no driver query), and each
// attach gets a mapping id never given before, so nothing learned about a detached mapping can
// answer for the next one at the same address.
TEST(SegmentTable, PinsCarryTheSlicesDeviceAndAFreshMappingId) {
  auto layout = Layout::Make(1ull << 40, 4 << 20, 4);
  ASSERT_TRUE(layout.ok());
  SegmentTable table(*layout);
  std::vector<uint8_t> host(4 << 20), dev(4 << 20);
  ASSERT_TRUE(table.Attach({Medium::kHost, 0, 0}, host.data(), host.size(), true, "h", [] {}).ok());
  ASSERT_TRUE(table.Attach({Medium::kDevice, 1, 0}, dev.data(), dev.size(), false, "d", [] {}, 3).ok());
  auto h = table.Resolve(layout->SliceBase(Medium::kHost, 0) + 10, 100);
  auto d = table.Resolve(layout->SliceBase(Medium::kDevice, 1) + 10, 100);
  ASSERT_TRUE(h.ok() && d.ok());
  EXPECT_EQ(h->device(), -1);
  EXPECT_EQ(d->device(), 3);
  EXPECT_EQ(d->ptr(), dev.data() + 10);
  const uint64_t first = d->mapping_id();
  EXPECT_NE(first, 0u);
  EXPECT_NE(first, h->mapping_id());
  SegmentTable::Pin moved = std::move(*d);
  EXPECT_EQ(moved.device(), 3);
  EXPECT_EQ(moved.mapping_id(), first);
  moved = SegmentTable::Pin();  // unpin, so the detach below does not wait

  table.Detach({Medium::kDevice, 1, 0}, false);
  ASSERT_TRUE(table.Attach({Medium::kDevice, 1, 0}, dev.data(), dev.size(), false, "d", [] {}, 0).ok());
  auto again = table.Resolve(layout->SliceBase(Medium::kDevice, 1), 1);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->device(), 0);
  EXPECT_NE(again->mapping_id(), first) << "a new attach at the same address reuses a mapping id";
}

// A peer in the pool that this process cannot reach: copies say so with the reason (not "no
// peer holds it"), its departure turns that into PEER_DOWN, and a rejoin that can be reached
// attaches over it.
TEST(SegmentTable, UnreachableSliceSaysWhyUntilThePeerGoesOrIsAttached) {
  auto layout = Layout::Make(1ull << 40, 4 << 20, 4);
  ASSERT_TRUE(layout.ok());
  SegmentTable table(*layout);
  const Location slot{Medium::kHost, 2, 0};
  const uint64_t gva = layout->SliceBase(Medium::kHost, 2) + 64;
  ASSERT_TRUE(table.MarkUnreachable(slot, "far", "shm: its blob is malformed; tcp: not run here").ok());
  EXPECT_FALSE(table.IsUp(slot));
  auto r = table.Resolve(gva, 16);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_NE(r.status().message().find("far"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("shm: its blob is malformed; tcp: not run here"), std::string::npos);

  table.Detach(slot, /*dead=*/true);
  EXPECT_EQ(table.Resolve(gva, 16).status().code(), Code::kPeerDown);

  ASSERT_TRUE(table.MarkUnreachable(slot, "far", "again").ok());
  std::vector<uint8_t> host(4 << 20);
  ASSERT_TRUE(table.Attach(slot, host.data(), host.size(), false, "far", [] {}).ok());
  auto pin = table.Resolve(gva, 16);
  ASSERT_TRUE(pin.ok()) << pin.status().ToString();
  EXPECT_EQ(pin->ptr(), host.data() + 64);
  pin = SegmentTable::Pin();
  EXPECT_EQ(table.MarkUnreachable(slot, "far", "late").code(), Code::kAlreadyExists);
}


// Runs `detach` on a thread of its own; true if it returned within a generous bound. If not (the
// old Detach spun until the pins drained), `unpin` lets it finish, so the test fails instead of
// hanging.
bool ReturnsWhilePinned(const std::function<void()>& detach, const std::function<void()>& unpin) {
  std::promise<void> returned;
  auto done = returned.get_future();
  std::thread t([&] {
    detach();
    returned.set_value();
  });
  const bool in_time = done.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  if (!in_time) unpin();
  t.join();
  return in_time;
}

// Issue 15: Detach runs on the coordinator client's only thread, so it must not wait for a copy
// (one stuck on a dead peer would stall every control message). The slice's release waits for
// the copies instead: it runs exactly once, when the last pin goes.
TEST(SegmentTable, DetachReturnsWhilePinnedAndTheLastPinReleasesOnce) {
  auto layout = Layout::Make(1ull << 40, 4 << 20, 4);
  ASSERT_TRUE(layout.ok());
  std::vector<uint8_t> host(4 << 20);
  std::atomic<int> releases{0};
  const Location slot{Medium::kHost, 1, 0};
  const uint64_t gva = layout->SliceBase(Medium::kHost, 1) + 64;
  {
    SegmentTable table(*layout);
    ASSERT_TRUE(table.Attach(slot, host.data(), host.size(), false, "b", [&] { ++releases; }).ok());
    auto first = table.Resolve(gva, 16);
    auto second = table.Resolve(gva, 16);
    ASSERT_TRUE(first.ok() && second.ok());

    ASSERT_TRUE(ReturnsWhilePinned([&] { table.Detach(slot, /*dead=*/true); },
                                   [&] { *first = SegmentTable::Pin(), *second = SegmentTable::Pin(); }))
        << "Detach waited for the copies that pin the slice";
    EXPECT_EQ(releases.load(), 0) << "released while copies still use the memory";
    EXPECT_FALSE(table.IsUp(slot));
    EXPECT_TRUE(table.Draining(slot));
    EXPECT_EQ(table.Resolve(gva, 16).status().code(), Code::kPeerDown);
    EXPECT_EQ(first->ptr(), host.data() + 64);  // the pinned copy still has its memory

    *first = SegmentTable::Pin();
    EXPECT_EQ(releases.load(), 0);
    table.Detach(slot, /*dead=*/true);  // a second detach neither releases nor waits
    EXPECT_EQ(releases.load(), 0);
    *second = SegmentTable::Pin();
    EXPECT_EQ(releases.load(), 1);
    EXPECT_FALSE(table.Draining(slot));
    table.Detach(slot, /*dead=*/false);
  }
  EXPECT_EQ(releases.load(), 1) << "the release ran more than once";
}

// A peer rejoining under its rank while a copy still pins its old slice: the new attach is a
// new incarnation; the old pin's release is the old slice's, and the new slice stays up.
TEST(SegmentTable, ReattachWhileAnOldPinIsHeldKeepsTheIncarnationsApart) {
  auto layout = Layout::Make(1ull << 40, 4 << 20, 4);
  ASSERT_TRUE(layout.ok());
  SegmentTable table(*layout);
  std::vector<uint8_t> old_mem(4 << 20), new_mem(4 << 20);
  std::atomic<int> old_released{0}, new_released{0};
  const Location slot{Medium::kHost, 2, 0};
  const uint64_t gva = layout->SliceBase(Medium::kHost, 2) + 8;
  ASSERT_TRUE(table.Attach(slot, old_mem.data(), old_mem.size(), false, "c", [&] { ++old_released; }).ok());
  auto old_pin = table.Resolve(gva, 8);
  ASSERT_TRUE(old_pin.ok());
  const uint64_t old_id = old_pin->mapping_id();
  ASSERT_TRUE(ReturnsWhilePinned([&] { table.Detach(slot, /*dead=*/true); }, [&] { *old_pin = SegmentTable::Pin(); }));

  ASSERT_TRUE(table.Attach(slot, new_mem.data(), new_mem.size(), false, "c", [&] { ++new_released; }).ok());
  EXPECT_TRUE(table.IsUp(slot));
  EXPECT_TRUE(table.Draining(slot)) << "the old incarnation is still pinned";
  auto new_pin = table.Resolve(gva, 8);
  ASSERT_TRUE(new_pin.ok()) << new_pin.status().ToString();
  EXPECT_EQ(new_pin->ptr(), new_mem.data() + 8);
  EXPECT_NE(new_pin->mapping_id(), old_id);
  EXPECT_EQ(old_pin->ptr(), old_mem.data() + 8);

  *old_pin = SegmentTable::Pin();
  EXPECT_EQ(old_released.load(), 1);
  EXPECT_EQ(new_released.load(), 0) << "the old pin released the new incarnation";
  EXPECT_FALSE(table.Draining(slot));
  ASSERT_TRUE(table.Resolve(gva, 8).ok());

  *new_pin = SegmentTable::Pin();
  table.Detach(slot, /*dead=*/false);  // nothing pinned: the release runs before Detach returns
  EXPECT_EQ(new_released.load(), 1);
  EXPECT_EQ(old_released.load(), 1);
}

// A rejoin may map its new slice at the old one's address (unified VA) only once the old
// release has returned, not merely once its last pin went: the unmap may still be running.
TEST(SegmentTable, DrainingLastsUntilTheReleaseHasReturned) {
  auto layout = Layout::Make(1ull << 40, 4 << 20, 4);
  ASSERT_TRUE(layout.ok());
  SegmentTable table(*layout);
  std::vector<uint8_t> mem(4 << 20);
  const Location slot{Medium::kHost, 3, 0};
  std::promise<void> entered, finish;
  auto finish_now = finish.get_future();
  ASSERT_TRUE(table.Attach(slot, mem.data(), mem.size(), false, "d", [&] {
    entered.set_value();
    finish_now.wait();
  }).ok());
  auto pin = table.Resolve(layout->SliceBase(Medium::kHost, 3), 8);
  ASSERT_TRUE(pin.ok());
  table.Detach(slot, /*dead=*/true);
  EXPECT_TRUE(table.Draining(slot));
  std::thread last_copy([&] { *pin = SegmentTable::Pin(); });  // runs the release
  entered.get_future().wait();
  EXPECT_TRUE(table.Draining(slot)) << "the release is still running";
  finish.set_value();
  last_copy.join();
  EXPECT_FALSE(table.Draining(slot));
}

}  // namespace
}  // namespace weft::gva
