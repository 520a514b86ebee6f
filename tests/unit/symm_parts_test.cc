// The parts of symmetric memory that need no pool: the 16-bit float conversions, the
// element-wise reductions and the heap allocator that every rank runs in step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "api/symm/heap_allocator.h"
#include "api/symm/reduce.h"

namespace weft::symm {
namespace {

TEST(SymmReduce, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3c00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);                  // the largest f16
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);                  // rounds up to infinity
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);     // the smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);     // a tie rounds to even (0)
  EXPECT_EQ(FloatToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie, even stays
  EXPECT_EQ(FloatToF16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie, odd rounds up
  EXPECT_EQ(FloatToF16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(std::nanf("")))));
  for (uint32_t h = 0; h < 0x7c00; ++h) ASSERT_EQ(FloatToF16(F16ToFloat(static_cast<uint16_t>(h))), h) << h;
  EXPECT_EQ(F16ToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F16ToFloat(0xbc00), -1.0f);

  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // tie, even stays
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // tie, odd rounds up
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  for (uint32_t b = 0; b < 0x7f80; ++b) ASSERT_EQ(FloatToBf16(Bf16ToFloat(static_cast<uint16_t>(b))), b) << b;
}

TEST(SymmReduce, CombinesInputsInOrderAndInPlace) {
  float a[3] = {1, 5, -2}, b[3] = {4, 2, -7}, c[3] = {0.5f, 9, 3};
  const void* in[] = {a, b, c};
  float out[3];
  ReduceN(DType::kF32, ReduceOp::kSum, out, in, 3);
  EXPECT_EQ(out[0], 5.5f);
  EXPECT_EQ(out[1], 16.0f);
  EXPECT_EQ(out[2], -6.0f);
  ReduceN(DType::kF32, ReduceOp::kMax, out, in, 3);
  EXPECT_EQ(out[2], 3.0f);
  ReduceN(DType::kF32, ReduceOp::kMin, a, in, 3);  // into the first input
  EXPECT_EQ(a[0], 0.5f);
  EXPECT_EQ(a[1], 2.0f);
  EXPECT_EQ(a[2], -7.0f);

  int32_t big[2] = {INT32_MAX, 7}, one[2] = {1, -3};
  const void* ints[] = {big, one};
  int32_t sum[2];
  ReduceN(DType::kI32, ReduceOp::kSum, sum, ints, 2);
  EXPECT_EQ(sum[0], INT32_MIN);  // wraps, as two's complement
  ReduceN(DType::kI32, ReduceOp::kProd, sum, ints, 2);
  EXPECT_EQ(sum[1], -21);

  // bf16 is summed in f32 and rounded once: 256 + 1 + 1 is 258, where rounding after each add
  // would give 256 (256 + 1 is a tie that rounds to even).
  uint16_t x[1] = {FloatToBf16(256)}, y[1] = {FloatToBf16(1)}, z[1] = {FloatToBf16(1)};
  const void* halves[] = {x, y, z};
  uint16_t h[1];
  ReduceN(DType::kBF16, ReduceOp::kSum, h, halves, 1);
  EXPECT_EQ(Bf16ToFloat(h[0]), 258.0f);

  // Longer than one block of the implementation, with an odd tail.
  std::vector<int64_t> p(1500), q(1500), r(1500);
  for (int i = 0; i < 1500; ++i) p[i] = i, q[i] = 3 * i;
  const void* longs[] = {p.data(), q.data()};
  ReduceN(DType::kI64, ReduceOp::kSum, r.data(), longs, 1500);
  for (int i = 0; i < 1500; ++i) ASSERT_EQ(r[i], 4 * i);
}

TEST(SymmHeap, FirstFitAlignedAndCoalescing) {
  HeapAllocator heap(4096);
  auto a = heap.Allocate(100);
  auto b = heap.Allocate(64);
  auto c = heap.Allocate(1);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, 0u);
  EXPECT_EQ(*b, 128u);  // 100 rounded up to 128
  EXPECT_EQ(*c, 192u);
  EXPECT_EQ(heap.free_bytes(), 4096u - 256);
  ASSERT_TRUE(heap.Release(*b).ok());
  EXPECT_EQ(*heap.Allocate(64), 128u);  // the hole is reused first
  ASSERT_TRUE(heap.Release(128).ok());
  ASSERT_TRUE(heap.Release(*a).ok());
  ASSERT_TRUE(heap.Release(*c).ok());
  EXPECT_EQ(heap.free_bytes(), 4096u);
  EXPECT_EQ(*heap.Allocate(4096), 0u);  // coalesced back into one block
  EXPECT_EQ(heap.Allocate(64).status().code(), Code::kPoolFull);
  EXPECT_EQ(heap.Release(64).code(), Code::kInvalidAddress);
  EXPECT_EQ(heap.Release(0).code(), Code::kOk);
  EXPECT_EQ(heap.Release(0).code(), Code::kInvalidAddress);  // twice
  EXPECT_EQ(heap.Allocate(0).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(heap.Allocate(1 << 20).status().code(), Code::kPoolFull);
}

}  // namespace
}  // namespace weft::symm
