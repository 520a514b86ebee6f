// Inputs and references for the collectives' tests (host: tests/integration/symm_test.cc,
// device: tests/gpu/symm_device_test.cc): every rank computes every rank's input from a seed the
// test shares, and the reference element by element, independently of the library's reducer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include <weft/symm.h>

#include "api/symm/reduce.h"
#include "base/random.h"

namespace weft::symm {

// Element i of rank r's input for a call: small values exactly representable in every dtype.
inline void Fill(DType dtype, void* out, uint64_t count, uint64_t seed, uint32_t rank) {
  uint64_t state = seed * 1000003 + rank;
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t v = SplitMix64(state);
    float f = static_cast<float>(static_cast<int>(v % 17) - 8) / 4.0f + (v % 2 ? 0.5f : 0.0f);
    switch (dtype) {
      case DType::kF32: static_cast<float*>(out)[i] = f; break;
      case DType::kBF16: static_cast<uint16_t*>(out)[i] = FloatToBf16(f); break;
      case DType::kF16: static_cast<uint16_t*>(out)[i] = FloatToF16(f); break;
      case DType::kI32: static_cast<int32_t*>(out)[i] = static_cast<int32_t>(v); break;
      case DType::kI64: static_cast<int64_t*>(out)[i] = static_cast<int64_t>(v); break;
      case DType::kU8: static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(v); break;
    }
  }
}

inline std::vector<uint8_t> Input(DType dtype, uint64_t count, uint64_t seed, uint32_t rank) {
  std::vector<uint8_t> v(count * DTypeSize(dtype) + 1);
  Fill(dtype, v.data(), count, seed, rank);
  return v;
}

template <typename T>
T Apply(ReduceOp op, T a, T b) {
  switch (op) {
    case ReduceOp::kSum: return a + b;
    case ReduceOp::kProd: return a * b;
    case ReduceOp::kMax: return std::max(a, b);
    case ReduceOp::kMin: return std::min(a, b);
  }
  return a;
}

// Element i of the reduction over ranks [0, ranks) in rank order, written into out.
inline void ReferenceElement(DType dtype, ReduceOp op, const std::vector<std::vector<uint8_t>>& in, uint64_t i, void* out) {
  auto f32 = [&](size_t r) { return reinterpret_cast<const float*>(in[r].data())[i]; };
  auto h16 = [&](size_t r) { return reinterpret_cast<const uint16_t*>(in[r].data())[i]; };
  switch (dtype) {
    case DType::kF32: {
      float acc = f32(0);
      for (size_t r = 1; r < in.size(); ++r) acc = Apply(op, acc, f32(r));
      static_cast<float*>(out)[i] = acc;
      return;
    }
    case DType::kBF16: case DType::kF16: {
      auto load = [&](size_t r) { return dtype == DType::kBF16 ? Bf16ToFloat(h16(r)) : F16ToFloat(h16(r)); };
      float acc = load(0);
      for (size_t r = 1; r < in.size(); ++r) acc = Apply(op, acc, load(r));
      static_cast<uint16_t*>(out)[i] = dtype == DType::kBF16 ? FloatToBf16(acc) : FloatToF16(acc);
      return;
    }
    case DType::kI32: {  // in uint32 so sums and products wrap as the library's do
      auto load = [&](size_t r) { return reinterpret_cast<const int32_t*>(in[r].data())[i]; };
      int32_t acc = load(0);
      for (size_t r = 1; r < in.size(); ++r) {
        if (op == ReduceOp::kSum) acc = static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(load(r)));
        else if (op == ReduceOp::kProd) acc = static_cast<int32_t>(static_cast<uint32_t>(acc) * static_cast<uint32_t>(load(r)));
        else acc = Apply(op, acc, load(r));
      }
      static_cast<int32_t*>(out)[i] = acc;
      return;
    }
    case DType::kI64: {
      auto load = [&](size_t r) { return reinterpret_cast<const int64_t*>(in[r].data())[i]; };
      int64_t acc = load(0);
      for (size_t r = 1; r < in.size(); ++r) {
        if (op == ReduceOp::kSum) acc = static_cast<int64_t>(static_cast<uint64_t>(acc) + static_cast<uint64_t>(load(r)));
        else if (op == ReduceOp::kProd) acc = static_cast<int64_t>(static_cast<uint64_t>(acc) * static_cast<uint64_t>(load(r)));
        else acc = Apply(op, acc, load(r));
      }
      static_cast<int64_t*>(out)[i] = acc;
      return;
    }
    case DType::kU8: {
      uint8_t acc = in[0][i];
      for (size_t r = 1; r < in.size(); ++r) acc = static_cast<uint8_t>(Apply<unsigned>(op, acc, in[r][i]));
      static_cast<uint8_t*>(out)[i] = acc;
      return;
    }
  }
}

inline std::vector<uint8_t> Reference(DType dtype, ReduceOp op, const std::vector<std::vector<uint8_t>>& in, uint64_t first,
                               uint64_t count) {
  size_t es = DTypeSize(dtype);
  std::vector<uint8_t> whole(in[0].size());
  for (uint64_t i = first; i < first + count; ++i) ReferenceElement(dtype, op, in, i, whole.data());
  return std::vector<uint8_t>(whole.begin() + first * es, whole.begin() + (first + count) * es);
}

inline bool SameBytes(const void* got, const void* want, uint64_t len, const char* what) {
  if (std::memcmp(got, want, len) == 0) return true;
  fprintf(stderr, "%s: result differs from the reference\n", what);
  return false;
}

}  // namespace weft::symm
