#include <gtest/gtest.h>

#include <fmt/format.h>

#include <string>
#include <vector>

#include "api/bm/alloc_service.h"

namespace weft::bm {
namespace {

gva::Layout TestLayout() { return *gva::Layout::Make(0x200000000000ull, 4 << 20, 8); }

TEST(AllocService, RequestsRoundTrip) {
  auto a = DecodeAllocServiceRequest(EncodeAlloc(4096, gva::Placement::OnRank(3)));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->op, AllocOp::kAlloc);
  EXPECT_EQ(a->size, 4096u);
  EXPECT_EQ(a->placement.kind, gva::Placement::Kind::kRank);
  EXPECT_EQ(a->placement.rank, 3u);
  auto f = DecodeAllocServiceRequest(EncodeFree(0x1234));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->op, AllocOp::kFree);
  EXPECT_EQ(f->gva, 0x1234u);
  auto s = DecodeAllocServiceRequest(EncodeAddSlice(2, gva::Medium::kHost, 1 << 20));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->rank, 2u);
  EXPECT_EQ(s->size, 1u << 20);
}

TEST(AllocService, MalformedRequestsAreProtocolErrors) {
  for (const auto& msg : {EncodeAlloc(64, gva::Placement::Spread()), EncodeFree(1), EncodeAddSlice(0, gva::Medium::kHost, 64)}) {
    for (size_t cut = 0; cut < msg.size(); ++cut) {
      auto r = DecodeAllocServiceRequest({msg.data(), cut});
      ASSERT_FALSE(r.ok()) << "cut at " << cut;
      EXPECT_EQ(r.status().code(), Code::kProtocol);
    }
    auto longer = msg;
    longer.push_back(0);
    EXPECT_EQ(DecodeAllocServiceRequest(longer).status().code(), Code::kProtocol);
  }
  auto bad_version = EncodeFree(1);
  bad_version[0] = 99;
  EXPECT_EQ(DecodeAllocServiceRequest(bad_version).status().code(), Code::kProtocol);
  auto bad_op = EncodeFree(1);
  bad_op[1] = 77;
  EXPECT_EQ(DecodeAllocServiceRequest(bad_op).status().code(), Code::kProtocol);
  auto bad_placement = EncodeAlloc(64, gva::Placement::Local());
  bad_placement[10] = 9;  // placement kind follows version, op and the u64 size
  EXPECT_EQ(DecodeAllocServiceRequest(bad_placement).status().code(), Code::kProtocol);
}

TEST(AllocService, ServesTheAllocator) {
  gva::Allocator allocator(TestLayout());
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 4 << 20)).ok());
  // A peer may only add its own slice.
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeAddSlice(2, gva::Medium::kHost, 4 << 20)).status().code(),
            Code::kPermissionDenied);
  auto reply = ServeAllocator(allocator, 1, EncodeAlloc(1000, gva::Placement::Local()));
  ASSERT_TRUE(reply.ok());
  auto gva = DecodeAllocReply(*reply);
  ASSERT_TRUE(gva.ok());
  EXPECT_EQ(TestLayout().Decode(*gva)->rank, 1u);
  EXPECT_TRUE(ServeAllocator(allocator, 1, EncodeFree(*gva)).ok());
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeFree(*gva)).status().code(), Code::kDoubleFree);
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeAlloc(8 << 20, gva::Placement::Local())).status().code(),
            Code::kPoolFull);
  EXPECT_EQ(ServeAllocator(allocator, 1, std::vector<uint8_t>{1}).status().code(), Code::kProtocol);
}

// A peer rejoining a new leader re-adds the slice the leader restored: the same capacity is a
// no-op that keeps every allocation; another capacity is refused and changes nothing.
TEST(AllocService, ReAddingASliceIsIdempotentOnlyWithTheSameCapacity) {
  gva::Allocator allocator(TestLayout());  // alignment 64
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 4 << 20)).ok());
  auto reply = ServeAllocator(allocator, 1, EncodeAlloc(1000, gva::Placement::Local()));
  ASSERT_TRUE(reply.ok());
  const uint64_t gva = *DecodeAllocReply(*reply);
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 4 << 20)).ok());
  EXPECT_EQ(allocator.Stats(1, gva::Medium::kHost)->allocations, 1u) << "the re-add kept the allocation";
  EXPECT_EQ(allocator.AllocationSize(gva).value_or(0), 1000u);
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 2 << 20)).status().code(),
            Code::kAlreadyExists);
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, (4 << 20) - 64)).status().code(),
            Code::kAlreadyExists);
  EXPECT_EQ(allocator.Stats(1, gva::Medium::kHost)->capacity, 4u << 20);
  EXPECT_EQ(allocator.Stats(1, gva::Medium::kHost)->allocations, 1u);
  // The checks of a first add still hold on a re-add.
  EXPECT_EQ(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 0)).status().code(),
            Code::kInvalidArgument);
  // A slice removed (its peer gone) is added afresh, empty.
  allocator.RemoveSlice(1, gva::Medium::kHost);
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 2 << 20)).ok());
  EXPECT_EQ(allocator.Stats(1, gva::Medium::kHost)->allocations, 0u);
}

TEST(AllocService, TheObserverHearsOfEachSuccessfulChangeOnly) {
  gva::Allocator allocator(TestLayout());
  std::vector<std::string> heard;
  AllocObserver observer;
  observer.on_alloc = [&](uint64_t gva, uint64_t size) { heard.push_back(fmt::format("alloc {:#x} {}", gva, size)); };
  observer.on_free = [&](uint64_t gva) { heard.push_back(fmt::format("free {:#x}", gva)); };
  observer.on_add_slice = [&](uint32_t rank, gva::Medium medium, uint64_t capacity) {
    heard.push_back(fmt::format("slice {} {} {}", rank, static_cast<int>(medium), capacity));
  };
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 4 << 20), &observer).ok());
  auto reply = ServeAllocator(allocator, 1, EncodeAlloc(1000, gva::Placement::Local()), &observer);
  ASSERT_TRUE(reply.ok());
  const uint64_t gva = *DecodeAllocReply(*reply);
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeFree(gva), &observer).ok());
  // Failures say nothing: a double free, no room, another's slice, a malformed request.
  EXPECT_FALSE(ServeAllocator(allocator, 1, EncodeFree(gva), &observer).ok());
  EXPECT_FALSE(ServeAllocator(allocator, 1, EncodeAlloc(8 << 20, gva::Placement::Local()), &observer).ok());
  EXPECT_FALSE(ServeAllocator(allocator, 1, EncodeAddSlice(2, gva::Medium::kHost, 4 << 20), &observer).ok());
  EXPECT_FALSE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 1 << 20), &observer).ok());
  EXPECT_FALSE(ServeAllocator(allocator, 1, std::vector<uint8_t>{1}, &observer).ok());
  ASSERT_TRUE(ServeAllocator(allocator, 1, EncodeAddSlice(1, gva::Medium::kHost, 4 << 20), &observer).ok());
  const std::vector<std::string> expected{fmt::format("slice 1 0 {}", 4 << 20), fmt::format("alloc {:#x} 1000", gva),
                                          fmt::format("free {:#x}", gva), fmt::format("slice 1 0 {}", 4 << 20)};
  EXPECT_EQ(heard, expected);
  // An observer with empty functions, and none at all, are both fine.
  AllocObserver empty;
  EXPECT_TRUE(ServeAllocator(allocator, 1, EncodeAlloc(64, gva::Placement::Local()), &empty).ok());
  EXPECT_TRUE(ServeAllocator(allocator, 1, EncodeAlloc(64, gva::Placement::Local()), nullptr).ok());
}

}  // namespace
}  // namespace weft::bm
