#include "api/symm/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace weft::symm {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// How an element is loaded into the type it is combined in, and stored back.
template <typename T>
struct Plain {
  using Acc = T;
  static Acc Load(const void* p, uint64_t i) { return static_cast<const T*>(p)[i]; }
  static void Store(void* p, uint64_t i, Acc v) { static_cast<T*>(p)[i] = v; }
};
struct Bf16 {
  using Acc = float;
  static Acc Load(const void* p, uint64_t i) { return Bf16ToFloat(static_cast<const uint16_t*>(p)[i]); }
  static void Store(void* p, uint64_t i, Acc v) { static_cast<uint16_t*>(p)[i] = FloatToBf16(v); }
};
struct F16 {
  using Acc = float;
  static Acc Load(const void* p, uint64_t i) { return F16ToFloat(static_cast<const uint16_t*>(p)[i]); }
  static void Store(void* p, uint64_t i, Acc v) { static_cast<uint16_t*>(p)[i] = FloatToF16(v); }
};

// Integer sums and products wrap (as two's complement), never overflow into undefined behaviour.
template <typename A>
A Combine(ReduceOp op, A a, A b) {
  switch (op) {
    case ReduceOp::kSum:
      if constexpr (std::is_integral_v<A>)
        return static_cast<A>(static_cast<std::make_unsigned_t<A>>(a) + static_cast<std::make_unsigned_t<A>>(b));
      else
        return a + b;
    case ReduceOp::kProd:
      if constexpr (std::is_integral_v<A>)
        return static_cast<A>(static_cast<std::make_unsigned_t<A>>(a) * static_cast<std::make_unsigned_t<A>>(b));
      else
        return a * b;
    case ReduceOp::kMax: return b > a ? b : a;
    case ReduceOp::kMin: return b < a ? b : a;
  }
  return a;
}

// In blocks, so the inner loop over a block runs one op over contiguous elements (vectorised)
// while the inputs are still combined in their given order.
template <typename Traits, ReduceOp kOp>
void ReduceBlocks(void* out, std::span<const void* const> in, uint64_t count) {
  using Acc = typename Traits::Acc;
  constexpr uint64_t kBlock = 512;
  Acc acc[kBlock];
  for (uint64_t base = 0; base < count; base += kBlock) {
    uint64_t n = std::min(kBlock, count - base);
    for (uint64_t k = 0; k < n; ++k) acc[k] = Traits::Load(in[0], base + k);
    for (size_t j = 1; j < in.size(); ++j)
      for (uint64_t k = 0; k < n; ++k) acc[k] = Combine<Acc>(kOp, acc[k], Traits::Load(in[j], base + k));
    for (uint64_t k = 0; k < n; ++k) Traits::Store(out, base + k, acc[k]);
  }
}

template <typename Traits>
void ReduceTyped(ReduceOp op, void* out, std::span<const void* const> in, uint64_t count) {
  switch (op) {
    case ReduceOp::kSum: return ReduceBlocks<Traits, ReduceOp::kSum>(out, in, count);
    case ReduceOp::kMax: return ReduceBlocks<Traits, ReduceOp::kMax>(out, in, count);
    case ReduceOp::kMin: return ReduceBlocks<Traits, ReduceOp::kMin>(out, in, count);
    case ReduceOp::kProd: return ReduceBlocks<Traits, ReduceOp::kProd>(out, in, count);
  }
}

}  // namespace

void ReduceN(DType dtype, ReduceOp op, void* out, std::span<const void* const> inputs, uint64_t count) {
  if (inputs.empty() || count == 0) return;
  switch (dtype) {
    case DType::kF32: return ReduceTyped<Plain<float>>(op, out, inputs, count);
    case DType::kBF16: return ReduceTyped<Bf16>(op, out, inputs, count);
    case DType::kF16: return ReduceTyped<F16>(op, out, inputs, count);
    case DType::kI32: return ReduceTyped<Plain<int32_t>>(op, out, inputs, count);
    case DType::kI64: return ReduceTyped<Plain<int64_t>>(op, out, inputs, count);
    case DType::kU8: return ReduceTyped<Plain<uint8_t>>(op, out, inputs, count);
  }
}

float Bf16ToFloat(uint16_t v) { return FromBits(static_cast<uint32_t>(v) << 16); }

uint16_t FloatToBf16(float f) {
  uint32_t x = Bits(f);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet NaN
  x += 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

float F16ToFloat(uint16_t v) {
  uint32_t sign = static_cast<uint32_t>(v & 0x8000) << 16;
  uint32_t exp = (v >> 10) & 0x1f;
  uint32_t mant = v & 0x3ff;
  if (exp == 0) {  // zero or subnormal: mant × 2^-24, exact in f32
    float m = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -m : m;
  }
  if (exp == 31) return FromBits(sign | 0x7f800000 | (mant << 13));
  return FromBits(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t FloatToF16(float f) {
  uint32_t x = Bits(f);
  uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  uint32_t ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return sign | (ax > 0x7f800000 ? 0x7e00 : 0x7c00);  // NaN, infinity
  if (ax >= 0x477ff000) return sign | 0x7c00;  // 65520 and up round to infinity
  if (ax < 0x38800000) {                       // below 2^-14: an f16 subnormal (or 2^-14 itself)
    // Scaling by 2^24 is exact; nearbyint rounds to nearest even in the default mode.
    float units = std::nearbyint(FromBits(ax) * 16777216.0f);
    return sign | static_cast<uint16_t>(units);
  }
  uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffff) >> 13));
  uint32_t rest = ax & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // a carry into the exponent is right
  return sign | static_cast<uint16_t>(h);
}

}  // namespace weft::symm
