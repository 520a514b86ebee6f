// The property every control-message fuzz target checks: decoding arbitrary bytes either fails
// with PROTOCOL or yields a message whose encoding is exactly those bytes (one encoding per
// value, so nothing is silently dropped or reinterpreted).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "wire/control.h"

namespace weft::fuzz {

template <typename T>
int DecodeRoundTrip(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  Result<T> m = wire::Decode<T>(in);
  if (!m.ok()) {
    if (m.status().code() != Code::kProtocol) __builtin_trap();
    return 0;
  }
  std::vector<uint8_t> again = wire::Encode(*m);
  if (again.size() != size || (size != 0 && std::memcmp(again.data(), data, size) != 0)) __builtin_trap();
  Result<T> twice = wire::Decode<T>(again);
  if (!twice.ok() || !(*twice == *m)) __builtin_trap();
  return 0;
}

}  // namespace weft::fuzz

#define WEFT_DECODE_FUZZ_TARGET(Type)                                       \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) { \
    return ::weft::fuzz::DecodeRoundTrip<::weft::wire::Type>(data, size);  \
  }
