// Fast reproducible random bytes (splitmix64) for filling and checking test and demo buffers,
// and fresh seeds from the OS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>

#include <sys/random.h>

namespace weft {

inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline uint64_t FreshSeed() {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) seed = 0x5eed;
  return seed;
}

// The same (seed, n) always gives the same bytes.
inline void FillRandom(void* dst, size_t n, uint64_t seed) {
  auto* p = static_cast<uint8_t*>(dst);
  uint64_t state = seed;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = SplitMix64(state);
    std::memcpy(p + i, &v, 8);
  }
  if (i < n) {
    uint64_t v = SplitMix64(state);
    std::memcpy(p + i, &v, n - i);
  }
}

// Offset of the first byte that differs from FillRandom(seed), or nullopt when all match.
inline std::optional<size_t> FirstMismatch(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t state = seed;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = SplitMix64(state);
    size_t k = n - i < 8 ? n - i : 8;
    if (std::memcmp(p + i, &v, k) != 0) {
      const auto* e = reinterpret_cast<const uint8_t*>(&v);
      for (size_t j = 0; j < k; ++j)
        if (p[i + j] != e[j]) return i + j;
    }
  }
  return std::nullopt;
}

}  // namespace weft
